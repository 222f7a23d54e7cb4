"""Update throughput: trained tokens/s, achieved FLOP/s as a fraction of a plain matmul's, padding.

Runs real iterations of a config (default: the quickstart, embedded SmolLM2-135M on KeyRoom)
through `empo2.fit`, takes the update phase's statistics from the module, and in the same process
times a square fp32 matmul to get the machine's attainable FLOP/s. Machines are noisy, so only the
ratio measured in one run is meaningful.

Model FLOPs per update (forward + backward), counted per real (non-pad) token:
  forward  = 2 · N_body · T_all + 2 · V · d · T_resp   (the vocabulary projection runs only on the
             response positions, see empo2.token_batch)
  backward = 2 × forward for full fine-tuning (activation and weight gradients),
             1 × forward with LoRA (activation gradients only; adapter weight gradients are tiny).
Attention score FLOPs are left out (prompts here are a few hundred tokens), so the fraction is
slightly understated.

    python bench/update_throughput.py [--config conf/quickstart.yaml] [--iterations 2] [key=value ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lightning as L
import torch

from empo2.config import load_config
from empo2.fit import fit
from empo2.token_batch import micro_batches, pack


class UpdateStats(L.Callback):
    """Keeps the update statistics and the rows of every iteration."""

    def __init__(self) -> None:
        self.iterations: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        dm = trainer.datamodule
        self.iterations.append({"stats": pl_module._stats.as_dict(), "rows": dm.build_rows(dm.episodes, pl_module.tokenizer)})


def matmul_flops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - t0)


def padding_share(rows, micro: int, budget: int, sort: bool) -> float:
    prompts, responses = [len(r.train_prompt) for r in rows], [len(r.response_ids) for r in rows]
    groups = micro_batches(prompts, responses, micro, budget) if sort \
        else [list(range(i, min(i + micro, len(rows)))) for i in range(0, len(rows), micro)]
    real = padded = 0
    for idx in groups:
        b = pack([rows[i].train_prompt for i in idx], [rows[i].response_ids for i in idx], 0)
        real, padded = real + b.real_tokens, padded + b.padded_tokens
    return 1 - real / padded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="conf/quickstart.yaml")
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [*args.overrides, f"out_dir={tmp}", f"trainer.max_epochs={args.iterations}",
                                        "logging.progress_bar=false", "trainer.enable_model_summary=false"])
        probe = UpdateStats()
        trainer = fit(cfg, extra_callbacks=[probe])
        model = trainer.lightning_module.policy
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        n_total = sum(p.numel() for p in base.parameters())
        emb = base.get_input_embeddings().weight
        vocab, d = emb.shape
        n_body = n_total - vocab * d  # tied embeddings: the vocabulary matrix is counted once
        backward_factor = 1.0 if cfg.model.lora.enabled else 2.0
        peak = matmul_flops()
        tokens = secs = flops = padded = 0.0
        for it in probe.iterations:
            s, rows = it["stats"], it["rows"]
            t_resp = sum(len(r.response_ids) for r in rows) * cfg.optim.ppo_epochs
            forward = 2 * n_body * s["real_tokens"] + 2 * vocab * d * t_resp
            flops += forward * (1 + backward_factor)
            tokens += s["real_tokens"]
            padded += s["padded_tokens"]
            secs += s["update_s"]
        rows = [r for it in probe.iterations for r in it["rows"]]
        achieved = flops / secs
        print(f"config: {args.config}  iterations: {args.iterations}  rows: {len(rows)}  "
              f"{'LoRA' if cfg.model.lora.enabled else 'full fine-tuning'}  dtype: {cfg.model.dtype}  "
              f"threads: {torch.get_num_threads()}")
        print(f"trained tokens/s (real tokens, fwd+bwd): {tokens / secs:.1f}")
        print(f"achieved model FLOP/s: {achieved / 1e9:.1f} G   plain fp32 matmul: {peak / 1e9:.1f} G   "
              f"fraction: {achieved / peak:.3f}")
        micro = cfg.optim.micro_batch_size
        print(f"padding share of the training batches: {1 - tokens / padded:.3f} (length-sorted micro-batches "
              f"within each mini-batch); the same rows in arrival order: {padding_share(rows, micro, cfg.micro_batch_tokens, sort=False):.3f}, "
              f"sorted over the whole iteration: {padding_share(rows, micro, cfg.micro_batch_tokens, sort=True):.3f}")


if __name__ == "__main__":
    main()
