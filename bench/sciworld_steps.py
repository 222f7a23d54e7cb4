"""Environment steps per second: our ScienceWorld adapter's lean step vs the stock `env.step()`.

Replays the gold action paths of a few short tasks (train variations), both ways, on the same JVM
in the same run, and prints steps/s for each and their ratio. Free-text mapping is not exercised
(gold actions are valid as typed), so this measures the step itself.

    python bench/sciworld_steps.py [--tasks find-non-living-thing power-component ...] [--variations 3]
"""

from __future__ import annotations

import argparse
import time

from empo2.envs.sciworld import ScienceWorldEnv, simplification_for


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["find-non-living-thing", "lifespan-longest-lived", "power-component"])
    ap.add_argument("--variations", type=int, default=3)
    args = ap.parse_args()
    env = ScienceWorldEnv(tasks=args.tasks, train_variations=args.variations)
    try:
        jvm = env._jvm()
        paths = []
        for inst in env.instances("train"):
            task, _, var = inst.rpartition("/")
            jvm.load(task, int(var), simplification_for(task, "easy"), generateGoldPath=True)
            paths.append((inst, list(jvm.get_gold_action_sequence())))
        for inst, path in paths[:1]:  # untimed warm-up of both paths (JIT, caches)
            task, _, var = inst.rpartition("/")
            jvm.load(task, int(var), simplification_for(task, "easy"))
            jvm.reset()
            for action in path:
                jvm.step(action)
            env.reset(inst)
            for action in path:
                if env.step(action).done:
                    break
        stock_steps = lean_steps = 0
        stock_s = lean_s = 0.0
        for inst, path in paths:
            task, _, var = inst.rpartition("/")
            jvm.load(task, int(var), simplification_for(task, "easy"))
            jvm.reset()
            t0 = time.perf_counter()
            for action in path:
                jvm.step(action)
            stock_s += time.perf_counter() - t0
            stock_steps += len(path)
            env.reset(inst)
            t0 = time.perf_counter()
            for action in path:
                if env.step(action).done:
                    break
            lean_s += time.perf_counter() - t0
            lean_steps += len(path)
        print(f"tasks: {', '.join(args.tasks)}  episodes: {len(paths)}  steps: {lean_steps}")
        print(f"stock env.step(): {stock_steps / stock_s:6.1f} steps/s   ({1000 * stock_s / stock_steps:.1f} ms/step)")
        print(f"our lean step:    {lean_steps / lean_s:6.1f} steps/s   ({1000 * lean_s / lean_steps:.1f} ms/step)")
        print(f"ratio (ours / stock): {stock_s / stock_steps / (lean_s / lean_steps):.2f}x")
    finally:
        env.close()


if __name__ == "__main__":
    main()
