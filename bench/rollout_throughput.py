"""Rollout throughput of the HF and vLLM engines over whole rollout phases, measured in one run.

For each config (default: the quickstart on KeyRoom and the ScienceWorld CPU config), with LoRA
adapters and with full weights, and for each engine, the same policy plays `--phases` rollout phases
of B × N episodes at the training temperature, after one untimed warm-up phase. Reported per engine:
  generated tokens/s   = generated tokens / generation time
  rollout tokens/s     = generated tokens / wall time of the phase
  not generation       = 1 − generation time / wall time (environment steps, prompt rendering)
and the vLLM/HF ratio of each rate. Needs the vLLM environment (`make test-vllm` builds it):

    .venv-vllm/bin/python bench/rollout_throughput.py [--configs conf/quickstart.yaml ...] [--phases 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from empo2.config import load_config
from empo2.engines import HFEngine, SamplingParams, VLLMEngine
from empo2.envs import EnvPool, env_class
from empo2.episode import Episode
from empo2.module import EMPO2Module
from empo2.rollout import run_episodes


def phase(cfg, pool, engine, tokenizer, instances, seed) -> tuple[int, float, float]:
    """One rollout phase: (generated tokens, generation seconds, wall seconds)."""
    torch.manual_seed(seed)
    n = cfg.rollout.group_size
    episodes = [Episode(uid=f"{b}-{k}", instance=inst, group=str(b)) for b, inst in enumerate(instances) for k in range(n)]
    r = cfg.rollout
    params = SamplingParams(max_new_tokens=r.max_new_tokens, temperature=r.temperature, stop=list(r.stop))
    t0 = time.perf_counter()
    stats = run_episodes(pool.take(len(episodes)), episodes, engine, tokenizer, params, r.max_prompt_tokens,
                         max_turns=cfg.env.max_turns, layout=r.prompt_layout)
    return stats.generated_tokens, stats.generation_s, time.perf_counter() - t0


def bench_config(path: str, phases: int, work: Path, lora: bool) -> list[str]:
    cfg = load_config(path, [f"out_dir={work}", "memory.enabled=false", "mode.p=0.0", f"model.lora.enabled={lora}"])
    module = EMPO2Module(cfg)
    module.configure_model()
    engines = {  # built in turn: vLLM changes process-wide thread settings when it starts
        "hf": lambda: HFEngine(module.policy, module.tokenizer, max_batch_size=cfg.engine.max_batch_size),
        "vllm": lambda: VLLMEngine.from_config(cfg, module.policy, module.tokenizer, work / "engine"),
    }
    rates: dict[str, tuple[float, float, float]] = {}
    with EnvPool(env_class(cfg.env.name, cfg.env.cls), cfg.env.options, cfg.env.pool_size) as pool:
        train = pool.first().instances("train")
        for name, build in engines.items():
            engine = build()
            engine.sync_weights()
            print(f"{name}: torch threads {torch.get_num_threads()}", file=sys.stderr)
            phase(cfg, pool, engine, module.tokenizer, train[: cfg.rollout.tasks_per_iteration], seed=999)  # warm-up
            tokens = gen_s = wall = 0.0
            for k in range(phases):
                picks = [train[(k * 7 + b) % len(train)] for b in range(cfg.rollout.tasks_per_iteration)]
                t, g, w = phase(cfg, pool, engine, module.tokenizer, picks, seed=k)
                tokens, gen_s, wall = tokens + t, gen_s + g, wall + w
            rates[name] = (tokens / gen_s, tokens / wall, 1 - gen_s / wall)
            engine.close()
    hf, vl = rates["hf"], rates["vllm"]
    weights = "LoRA" if lora else "full"
    rows = [f"| {Path(path).name} | {weights} | {name} | {g:.1f} | {w:.1f} | {o:.3f} |" for name, (g, w, o) in rates.items()]
    rows.append(f"| {Path(path).name} | {weights} | **vllm / hf** | **{vl[0] / hf[0]:.2f}×** | **{vl[1] / hf[1]:.2f}×** | |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["conf/quickstart.yaml", "conf/sciworld_cpu.yaml"])
    ap.add_argument("--phases", type=int, default=2)
    args = ap.parse_args()
    print("| config | trained weights | engine | generated tokens/s | rollout tokens/s | not generation |")
    print("|---|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for k, path in enumerate(args.configs):
            for lora in (True, False):
                for row in bench_config(path, args.phases, Path(tmp) / f"{k}-{lora}", lora):
                    print(row, flush=True)


if __name__ == "__main__":
    main()
