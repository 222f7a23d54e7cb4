"""One forward per episode vs one per step: model tokens, old-log-prob time and update time.

Episodes come from ScienceWorld's gold action paths replayed through the rollout's own code (no
generation needed; each step's prompt is exactly what a rollout would have sent), in two shapes:
- `cpu`: conf/sciworld_cpu.yaml (one task, a group of 4 episodes, 5-turn cap, 768-token budget);
- `paper`: the paper's prompt shape (two worked examples, 4,500-token budget, per-task turn caps) on
  one train variation of each of five paper tasks.
Both layouts run in the same process on the same rows: `optim.sequences=per_step` (one sequence per
step, the authors' layout) and `shared` (one sequence per chain of steps). For each it prints the
model tokens of the old-log-prob pass and of one optimizer step over all rows, the seconds of each,
and the update's achieved model FLOP/s against a plain fp32 matmul in the same process.

    python bench/shared_sequences.py [--shape cpu paper] [--time-tasks 2]

`--time-tasks K` times the paper shape on its first K tasks only (the per-step update of all five
takes long on 2 CPU cores); token counts always cover all five.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lightning as L
import torch
from torch.utils.data import DataLoader

from empo2.config import load_config
from empo2.demonstrations import ReplayEngine
from empo2.engines import SamplingParams
from empo2.envs import env_class
from empo2.episode import Episode
from empo2.module import EMPO2Module
from empo2.rollout import run_episodes
from empo2.training_rows import TrainingRow, segments

PAPER_TASKS = ["find-plant", "power-component", "lifespan-longest-lived", "test-conductivity", "chemistry-mix"]

SHAPES = {
    "cpu": ("conf/sciworld_cpu.yaml", []),
    "paper": ("conf/sciworld_cpu.yaml", [
        f"env.options.tasks=[{','.join(PAPER_TASKS)}]", "env.options.examples=2", "env.max_turns=null",
        "rollout.max_prompt_tokens=4500", "rollout.max_new_tokens=32", "model.gradient_checkpointing=true",
    ]),
}


def gold_episodes(cfg, per_task: int) -> list[Episode]:
    """The first `per_task` train variations of each task, played along their gold paths (cut at the
    turn cap), rendered as a rollout renders them."""
    from empo2.models import load_tokenizer

    tokenizer = load_tokenizer(cfg.model.name_or_path)
    env = env_class(cfg.env.name, cfg.env.cls)(**cfg.env.options)
    r = cfg.rollout
    params = SamplingParams(max_new_tokens=r.max_new_tokens, temperature=0.0, stop=list(r.stop))
    episodes = []
    try:
        by_task: dict[str, list[str]] = {}
        for inst in env.instances("train"):
            by_task.setdefault(env.task_of(inst), []).append(inst)
        for task, instances in by_task.items():
            for inst, actions in zip(instances[:per_task], env.demonstrations(instances[:per_task])):
                ep = Episode(uid=f"{task}-{len(episodes)}", instance=inst, group=task)
                run_episodes([env], [ep], ReplayEngine(tokenizer, [env.answer_for(a) for a in actions]), tokenizer,
                             params, r.max_prompt_tokens, max_turns=cfg.env.max_turns, layout=r.prompt_layout)
                episodes.append(ep)
    finally:
        env.close()
    return episodes


def rows_of(episodes: list[Episode]) -> list[TrainingRow]:
    gen = torch.Generator().manual_seed(0)
    rows = []
    for ep in episodes:
        adv = float(torch.randn(1, generator=gen))
        rows += [TrainingRow.on_policy(s.prompt_ids, s.response_ids, adv, episode=ep.uid) for s in ep.steps if s.response_ids]
    return rows


class OneStep(L.LightningDataModule):
    """Serves the rows' segments as one mini-batch (old log-probs already filled)."""

    def __init__(self, segs) -> None:
        super().__init__()
        self.segs = segs

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.segs, batch_sampler=[list(range(len(self.segs)))], collate_fn=lambda b: b)


def matmul_flops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def measure(cfg, rows: list[TrainingRow], sequences: str, out_dir: str) -> dict[str, float]:
    cfg.optim.sequences = sequences
    cfg.optim.mini_batch_size = max(len(rows), 1)
    module = EMPO2Module(cfg)
    module.configure_model()
    segs = segments([TrainingRow(**vars(r)) for r in rows], shared=sequences == "shared")
    flat = [r for s in segs for r in s.rows]
    t0 = time.perf_counter()
    logps = module.compute_logprobs([r.train_prompt for r in flat], [r.response_ids for r in flat])
    old_s = time.perf_counter() - t0
    for r, lp in zip(flat, logps):
        r.old_logprobs = lp
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=out_dir,
                        num_sanity_val_steps=0)
    trainer.fit(module, datamodule=OneStep(segs))
    s = module._stats
    base = module.policy.get_base_model() if hasattr(module.policy, "get_base_model") else module.policy
    vocab, d = base.get_input_embeddings().weight.shape
    n_body = sum(p.numel() for p in base.parameters()) - vocab * d
    response_tokens = sum(len(r.response_ids) for r in flat)
    forward = 2 * n_body * s.real_tokens + 2 * vocab * d * response_tokens
    flops = forward * (1 + (1.0 if cfg.model.lora.enabled else 2.0))
    return {"sequences": len(segs), "tokens": sum(len(seg.sequence) for seg in segs), "old_s": old_s,
            "update_s": s.update_s, "update_tokens": s.real_tokens, "flops": flops / max(s.update_s, 1e-9)}


def report(shape: str, rows: list[TrainingRow], results: dict[str, dict[str, float]], peak: float) -> None:
    a, b = results["per_step"], results["shared"]
    response = sum(len(r.response_ids) for r in rows)
    print(f"\n[{shape}] rows: {len(rows)}  response tokens: {response}")
    for name, m in results.items():
        print(f"  {name:9s} sequences {m['sequences']:4.0f}  model tokens {m['tokens']:8.0f} "
              f"({m['tokens'] / max(response, 1):6.1f} per action token)  old log-probs {m['old_s']:7.1f} s  "
              f"update {m['update_s']:7.1f} s  update FLOP/s {m['flops'] / 1e9:6.1f} G = {m['flops'] / peak:.3f} of matmul")
    print(f"  ratios per_step / shared: tokens {a['tokens'] / b['tokens']:.1f}x  old log-probs {a['old_s'] / b['old_s']:.1f}x  "
          f"update {a['update_s'] / b['update_s']:.1f}x  old + update {(a['old_s'] + a['update_s']) / (b['old_s'] + b['update_s']):.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", nargs="+", default=["cpu", "paper"], choices=list(SHAPES))
    ap.add_argument("--time-tasks", type=int, default=2)
    ap.add_argument("--tokens-only", action="store_true", help="count model tokens, time nothing")
    ap.add_argument("overrides", nargs="*", help="config overrides applied to every shape")
    args = ap.parse_args()
    torch.manual_seed(0)
    peak = matmul_flops()
    print(f"plain fp32 matmul: {peak / 1e9:.1f} GFLOP/s   threads: {torch.get_num_threads()}")
    for shape in args.shape:
        path, overrides = SHAPES[shape]
        with tempfile.TemporaryDirectory() as tmp:
            cfg = load_config(path, [*overrides, *args.overrides, f"out_dir={tmp}"])
            per_task = cfg.rollout.group_size if shape == "cpu" else 1
            episodes = gold_episodes(cfg, per_task)
            rows = rows_of(episodes)
            per_step = sum(len(r.train_prompt) + len(r.response_ids) for r in rows)
            shared = sum(len(s.sequence) for s in segments(rows, shared=True))
            print(f"\n[{shape}] {len(episodes)} episodes, {len(rows)} steps: per-step model tokens {per_step}, "
                  f"shared {shared} ({per_step / shared:.1f}x)")
            for ep in episodes:
                ep_rows = [r for r in rows if r.episode == ep.uid]
                a = sum(len(r.train_prompt) + len(r.response_ids) for r in ep_rows)
                b = sum(len(s.sequence) for s in segments(ep_rows, shared=True))
                print(f"  {ep.instance:34s} steps {len(ep.steps):3d}  per-step {a:7d}  shared {b:6d}  ({a / max(b, 1):.1f}x)")
            if args.tokens_only:
                continue
            if shape == "paper":
                keep = {ep.uid for ep in episodes[:args.time_tasks]}
                rows = [r for r in rows if r.episode in keep]
                print(f"  timing on the first {args.time_tasks} task(s): {len(rows)} steps")
            results = {name: measure(cfg, rows, name, tmp) for name in ("per_step", "shared")}
            report(shape, rows, results, peak)


if __name__ == "__main__":
    main()
