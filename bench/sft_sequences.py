"""What scoring a demonstration as one sequence saves the warm start, measured in one run.

`empo2.sft` trains on whole demonstrations (one sequence, an answer span per step) instead of one
row per step, whose prompt repeats the whole history. This replays `--demos` demonstrations of a
config's `sft.*` tasks, then runs the warm start's forward + backward over the same demonstrations
both ways (same model, precision and checkpointing as the config; batches of `sft.batch_size`
rows), and prints the tokens each way forwards, the seconds, the ratios and the two answer NLLs
(equal up to float rounding: each span sees exactly its own step's prompt).

    python bench/sft_sequences.py --config conf/protocol/sciworld-find.yaml --demos 6
"""

from __future__ import annotations

import argparse
import math
import time
from contextlib import nullcontext

import torch

from empo2.config import load_config
from empo2.models import build_policy, load_tokenizer
from empo2.sft import answer_nll, batches_of_rows, collect, demo_sequences


def run_pass(policy, sequences, batch_size: int, pad_id: int, autocast) -> tuple[float, float]:
    """(seconds, token-mean answer NLL) of one forward + backward pass over `sequences`."""
    total = tokens = 0.0
    t0 = time.perf_counter()
    for chunk in batches_of_rows(sequences, batch_size):
        with autocast():
            loss = answer_nll(policy, chunk, pad_id)
        loss.backward()
        n = sum(q.answer_tokens for q in chunk)
        total += float(loss.detach()) * n
        tokens += n
    policy.zero_grad(set_to_none=True)
    return time.perf_counter() - t0, total / tokens


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--demos", type=int, default=6, help="demonstrations in all, split over sft.tasks")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    cfg.sft.max_instances = math.ceil(args.demos / len(cfg.sft.tasks or [None]))
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    t0 = time.perf_counter()
    demos = collect(cfg, tokenizer)
    print(f"replayed {len(demos.episodes)} demonstrations ({sum(len(e.steps) for e in demos.episodes)} steps) "
          f"in {time.perf_counter() - t0:.0f} s")
    policy = build_policy(cfg.model, cfg.seed).train()
    bf16 = str(cfg.trainer.get("precision", "32-true")).startswith("bf16")
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else nullcontext
    layouts = {"per_step": demo_sequences(demos.episodes, shared=False),
               "shared": demo_sequences(demos.episodes, shared=True)}
    run_pass(policy, layouts["shared"][:1], cfg.sft.batch_size, tokenizer.pad_token_id, autocast)  # warm-up
    measured = {}
    for name, sequences in layouts.items():
        seconds, nll = run_pass(policy, sequences, cfg.sft.batch_size, tokenizer.pad_token_id, autocast)
        forwarded = sum(len(q.ids) for q in sequences)
        measured[name] = (seconds, forwarded)
        print(f"{name:>8}: {len(sequences):4d} sequences, {forwarded:7d} tokens forwarded, {seconds:7.1f} s, "
              f"answer NLL {nll:.5f}")
    (s_step, t_step), (s_shared, t_shared) = measured["per_step"], measured["shared"]
    print(f"shared / per_step: tokens {t_shared / t_step:.2f}x, time {s_shared / s_step:.2f}x "
          f"(precision {cfg.trainer.get('precision', '32-true')}, checkpointing {cfg.model.gradient_checkpointing})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
