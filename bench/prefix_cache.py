"""What the HF engine's prefix cache saves over whole rollout phases, measured in one run.

The same policy plays the same rollout phase (B × N episodes from the config, the training
temperature, one seed per phase) with `engine.prefix_cache` on and off, alternating which goes
first, after one short untimed warm-up call each. Reported per phase and in total: generation seconds
on and off and their ratio, the share of prompt tokens taken from the cache, and how many responses
came out identical (the two runs sample from distributions equal up to round-off, so most should).

    .venv/bin/python bench/prefix_cache.py [--config conf/protocol/sciworld-find.yaml] [--phases 1]
        [--init-from runs/protocol-sciworld-find/compare/task/warm_start/policy]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from empo2.config import load_config
from empo2.engines import HFEngine, SamplingParams
from empo2.envs import EnvPool, env_class
from empo2.episode import Episode
from empo2.module import EMPO2Module
from empo2.rollout import run_episodes


def phase(cfg, pool, engine, tokenizer, instances, seed) -> tuple[float, float, list[list[int]]]:
    """One rollout phase: (generation seconds, share of prompt tokens reused, every response's ids)."""
    torch.manual_seed(seed)
    n = cfg.rollout.group_size
    episodes = [Episode(uid=f"{b}-{k}", instance=inst, group=str(b)) for b, inst in enumerate(instances) for k in range(n)]
    r = cfg.rollout
    params = SamplingParams(max_new_tokens=r.max_new_tokens, temperature=r.temperature, stop=list(r.stop))
    engine.metrics()
    stats = run_episodes(pool.take(len(episodes)), episodes, engine, tokenizer, params, r.max_prompt_tokens,
                         max_turns=cfg.env.max_turns, layout=r.prompt_layout)
    reused = engine.metrics()["engine/prompt_tokens_reused"]
    engine.release_memory()
    return stats.generation_s, reused, [s.response_ids for ep in episodes for s in ep.steps]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="conf/protocol/sciworld-find.yaml")
    ap.add_argument("--phases", type=int, default=1)
    ap.add_argument("--init-from", default=None, help="policy folder to start from (model.init_from)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        overrides = [f"out_dir={work}", "memory.enabled=false", "mode.p=0.0"]
        if args.init_from:
            overrides.append(f"model.init_from={args.init_from}")
        cfg = load_config(args.config, overrides)
        module = EMPO2Module(cfg)
        module.configure_model()
        engines = {}
        for on in (True, False):
            cfg.engine.prefix_cache = on
            engines[on] = HFEngine.from_config(cfg, module.policy, module.tokenizer, Path(work))
        print(f"{args.config}: B={cfg.rollout.tasks_per_iteration} N={cfg.rollout.group_size}, "
              f"torch threads {torch.get_num_threads()}, compute {engines[True].compute}")
        with EnvPool(env_class(cfg.env.name, cfg.env.cls), cfg.env.options, cfg.env.pool_size) as pool:
            train = pool.first().instances("train")
            size = cfg.rollout.tasks_per_iteration
            for on in (True, False):  # warm-up: one short call each
                engines[on].generate([[module.tokenizer.eos_token_id] * 8], SamplingParams(max_new_tokens=2))
                engines[on].release_memory()
            total = {True: 0.0, False: 0.0}
            for k in range(args.phases):
                instances = train[(k * size) % len(train):][:size]
                order = (True, False) if k % 2 == 0 else (False, True)
                out = {on: phase(cfg, pool, engines[on], module.tokenizer, instances, seed=k) for on in order}
                same = sum(a == b for a, b in zip(out[True][2], out[False][2]))
                for on in (True, False):
                    total[on] += out[on][0]
                print(f"phase {k}: generation {out[True][0]:.1f} s cached vs {out[False][0]:.1f} s whole "
                      f"({out[True][0] / out[False][0]:.2f}x); prompt tokens reused {out[True][1]:.0%}; "
                      f"identical responses {same}/{min(len(out[True][2]), len(out[False][2]))}", flush=True)
        print(f"total: generation {total[True]:.1f} s cached vs {total[False]:.1f} s whole "
              f"= {total[True] / total[False]:.2f}x")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"({time.perf_counter() - t0:.0f} s)")
