"""Helper process for test_sharding.py: the real module's update on fixed rows under a strategy.

    python tests/sharded_update.py OUT_FILE STRATEGY DEVICES MODEL_DIR LORA [MICRO_ROWS MICRO_TOKENS [ACCELERATOR]]

Two iterations of two optimizer steps each on rows that depend only on the iteration: every step
takes 8 rows, which one process trains alone or two processes share unevenly (5 and 3 rows, so
their micro-batch counts differ and the lock-step padding runs). Old log-probs come from the
module's own `compute_logprobs` on each rank's rows (sharded forwards of unequal counts too).
Micro-batches default to 2 rows each; MICRO_ROWS / MICRO_TOKENS set the row cap and the token budget
(`optim.max_tokens_per_micro_batch`; rows here have at most 38 tokens). ACCELERATOR defaults to
`gpu` under fsdp (FSDP1 runs on GPUs only) and `cpu` otherwise; the GPU suite passes `gpu` to its
one-process reference so both sides run the same kernels.
Rank 0 saves the gathered full weights to OUT_FILE; Lightning re-launches this same command for
the other ranks.

The optimizer here is plain SGD, whose step is lr × gradient: two runs that sum the same gradient
in another order then differ by lr × (that rounding), which a relative tolerance bounds. AdamW's
first steps move each element by about lr whatever the size of its gradient, so an element whose
gradient is rounding noise moves by a summation-order-dependent amount: a comparison of AdamW
weights holds only by luck.
"""

from __future__ import annotations

import sys

import lightning as L
import torch
from torch.utils.data import DataLoader

from empo2.config import load_config
from empo2.module import EMPO2Module
from empo2.training_rows import Segment, TrainingRow
from empo2.sharding import build_strategy, gathered_weights

ROWS_PER_STEP, STEPS, SHARE = 8, 2, 5  # rank 0 of two takes SHARE of each step's rows
LR = 0.1  # SGD: four steps move weights by ~0.04, small enough that the second iteration's gradients stay a smooth function of the first's


def step_rows(iteration: int, step: int, vocab: int) -> list[TrainingRow]:
    gen = torch.Generator().manual_seed(1000 * iteration + step)
    rows = []
    for _ in range(ROWS_PER_STEP):
        prompt = torch.randint(3, vocab, (int(torch.randint(4, 30, (1,), generator=gen)),), generator=gen).tolist()
        response = torch.randint(3, vocab, (int(torch.randint(2, 9, (1,), generator=gen)),), generator=gen).tolist()
        keep = (torch.rand(len(response), generator=gen) > 0.2).float().tolist()
        rows.append(TrainingRow.on_policy(prompt, response, float(torch.randn(1, generator=gen)), keep))
    return rows


class FixedRows(L.LightningDataModule):
    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        module = trainer.lightning_module
        vocab = len(module.tokenizer)
        batches, rows = [], []
        for step in range(STEPS):
            mine = step_rows(trainer.current_epoch, step, vocab)
            if trainer.world_size == 2:
                mine = mine[:SHARE] if trainer.global_rank == 0 else mine[SHARE:]
            batches.append(list(range(len(rows), len(rows) + len(mine))))
            rows += mine
        logps = module.compute_logprobs([r.train_prompt for r in rows], [r.response_ids for r in rows])
        for row, lp in zip(rows, logps):
            row.old_logprobs = lp
        return DataLoader([Segment([r]) for r in rows], batch_sampler=batches, collate_fn=lambda b: b)


class SGDModule(EMPO2Module):
    """The real module (loss, micro-batches, lock-step, gradient sums) with an update linear in the gradient."""

    def configure_optimizers(self):
        return torch.optim.SGD(self.trainable_parameters(), lr=self.cfg.optim.lr)


def main(out: str, strategy: str, devices: str, model_dir: str, lora: str, rows: str = "2", tokens: str = "1000",
         accelerator: str = "") -> None:
    accelerator = accelerator or ("gpu" if strategy == "fsdp" else "cpu")
    cfg = load_config(None, [
        f"model.name_or_path={model_dir}", f"model.lora.enabled={lora}", "model.lora.r=4",
        f"optim.lr={LR}", f"optim.micro_batch_size={rows}", f"optim.max_tokens_per_micro_batch={tokens}", "optim.grad_clip=0",
        "rollout.max_prompt_tokens=30", "rollout.max_new_tokens=8",
        f"trainer.strategy={strategy}", f"trainer.devices={devices}",
        f"trainer.accelerator={accelerator}",
    ])
    torch.manual_seed(0)
    trainer = L.Trainer(
        accelerator=accelerator, devices=int(devices), strategy=build_strategy(cfg), max_epochs=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        use_distributed_sampler=False, reload_dataloaders_every_n_epochs=1,
    )
    module = SGDModule(cfg)
    trainer.fit(module, datamodule=FixedRows())
    weights = gathered_weights(module.policy, trainable_only=False)  # every rank joins the gather
    if trainer.global_rank == 0:
        torch.save({"weights": {k: v.detach().cpu() for k, v in weights.items()}, "grad_norm_sum": module._stats.grad_norm_sum}, out)


if __name__ == "__main__":
    main(*sys.argv[1:9])
