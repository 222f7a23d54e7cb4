"""WebShop environment cost: store start-up (index built vs loaded from the disk cache) and the
time of each kind of step, measured with a scripted shopper on the bundled synthetic catalog (or
the official files with `--data-dir`).

The shopper plays goals in order: search for the goal's query and attributes, page to its
product, open it, look at Features and come back, select its options, buy. Each step kind is timed
separately; the environment's share of a rollout step is then set beside the generation time of a
step (ENVIRONMENTS.md measured the original's logic with bm25s at ~10 ms a step on 60 products).

    python bench/webshop_steps.py [--episodes 200] [--data-dir synthetic|official|PATH] [--variant 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict

from empo2.envs.webshop import env as webshop_env
from empo2.envs.webshop.env import WebShopEnv


def timed(env: WebShopEnv, times: dict[str, list[float]], kind: str, action: str):
    t0 = time.perf_counter()
    result = env.step(action)
    times[kind].append(time.perf_counter() - t0)
    return result


def play(env: WebShopEnv, i: int, times: dict[str, list[float]]) -> float | None:
    """The scripted shopper on goal i; the purchase reward, or None when the product is not found."""
    env.reset(f"webshop/{i}")
    g = env.goal
    timed(env, times, "search", f"search[{g.query} {' '.join(g.attributes)}]")
    while g.asin.lower() not in env.site.clickables() and "next >" in env.site.clickables():
        timed(env, times, "click (page)", "click[next >]")
    if g.asin.lower() not in env.site.clickables():
        return None  # not among the 50 results
    timed(env, times, "click (item)", f"click[{g.asin.lower()}]")
    timed(env, times, "click (sub-page)", "click[features]")
    timed(env, times, "click (page)", "click[< prev]")
    for value in g.options:
        timed(env, times, "click (option)", f"click[{value}]")
    timed(env, times, "no-op", "click[nothing here]")
    return timed(env, times, "buy (reward)", "click[buy now]").info["score"] / 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--data-dir", default="synthetic")
    ap.add_argument("--variant", default="1000")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as index_dir:
        t0 = time.perf_counter()
        env = WebShopEnv(data_dir=args.data_dir, variant=args.variant, index_dir=index_dir, num_test_goals=0)
        built = time.perf_counter() - t0
        webshop_env._STORES.clear()  # a second process: the catalog again, the index from the cache
        t0 = time.perf_counter()
        env = WebShopEnv(data_dir=args.data_dir, variant=args.variant, index_dir=index_dir, num_test_goals=0)
        cached = time.perf_counter() - t0
        assert env.store.search.loaded_from_cache
    print(f"products {len(env.store.products)}, goals {len(env.store.goals)}")
    print(f"store start-up: index built {built * 1e3:.0f} ms, index from cache {cached * 1e3:.0f} ms "
          f"(spaCy loads on the first purchase)")
    t0 = time.perf_counter()
    play(env, 0, defaultdict(list))  # untimed warm-up; its purchase loads spaCy
    print(f"first episode (loads spaCy): {time.perf_counter() - t0:.2f} s")
    times: dict[str, list[float]] = defaultdict(list)
    rewards = [r for i in range(min(args.episodes, len(env.store.goals))) if (r := play(env, i, times)) is not None]
    t0 = time.perf_counter()
    for i in range(200):
        env.reset(f"webshop/{i % len(env.store.goals)}")
        env._message()
    prompt_ms = (time.perf_counter() - t0) / 200 * 1e3
    every = [t for ts in times.values() for t in ts]
    print(f"\n{len(rewards)} purchases, mean reward {sum(rewards) / max(len(rewards), 1):.3f}\n")
    print("| step kind | steps | mean ms |")
    print("|---|---:|---:|")
    for kind, ts in sorted(times.items()):
        print(f"| {kind} | {len(ts)} | {sum(ts) / len(ts) * 1e3:.3f} |")
    print(f"| all steps | {len(every)} | {sum(every) / len(every) * 1e3:.3f} |")
    print(f"| reset + prompt message | 200 | {prompt_ms:.3f} |")


if __name__ == "__main__":
    main()
