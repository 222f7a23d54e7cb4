"""`python -m empo2.sft --config FILE [key=value ...]`: a supervised warm start on demonstrations.

Why a warm start: RL needs rewards to vary within a group, and a small base model that never writes
a valid action earns the same reward every time. Behaviour cloning on demonstrations teaches the
action format and the environment's conventions first. To leave exploration something to do, the
demonstrations should come from *other* instances than evaluation plays, ideally another task or
a smaller world (`sft.tasks`, `sft.options`); the command refuses demonstrations of instances the
evaluation split plays.

How: every demonstration is replayed through the environment by the rollout's own code
(`empo2.demonstrations`), so each row is (the prompt exactly as a rollout renders it, the answer a
model writes for the demonstrated action). The loss is the token-mean negative log-likelihood of
the answer tokens only. A share of the demonstrations (`sft.val_fraction`) is held out; the
held-out NLL is logged before training and after every epoch.

Writes `<run>/policy/`: the merged weights (LoRA folded in) and tokenizer, a plain model folder
that `model.init_from=<run>/policy` starts `fit`, `evaluate`, `adapt` and `compare` from, and
`warm_start.json` saying what it was trained on. Metrics go to `<run>/logs/` like a fit's.

Imports inside functions are deliberate: the environments and the model load only after the
config has been checked.
"""

from __future__ import annotations

import json
import math
import random
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch

from empo2.cli import Command, run_command
from empo2.config import Config, ConfigError, to_yaml
from empo2.demonstrations import Demonstrations, DemoSource, replay
from empo2.models import build_policy, load_tokenizer
from empo2.token_batch import build_batch, response_logprobs

Row = tuple[list[int], list[int]]
"""(prompt ids, answer ids)."""

POLICY_DIR = "policy"
RECORD = "warm_start.json"


def demo_options(cfg: Config) -> list[tuple[str | None, dict[str, Any]]]:
    """(task, environment options) of each demonstrated task: the environment retargeted to the
    task (as adaptation does), then `sft.options` on top."""
    from empo2.envs import env_class

    cls = env_class(cfg.env.name, cfg.env.cls)
    out = []
    for task in cfg.sft.tasks or [None]:
        options = dict(cfg.env.options)
        if task is not None:
            try:
                options = cls.retarget(options, task)
            except ValueError as err:
                raise ConfigError(f"sft.tasks: {err}") from None
        out.append((task, {**options, **cfg.sft.options}))
    return out


def collect(cfg: Config, tokenizer) -> Demonstrations:
    """Replay the configured demonstrations; refuse any instance evaluation plays."""
    from empo2.envs.pool import EnvPool
    from empo2.evaluate import eval_instances

    with EnvPool.from_config(cfg.env, max_size=1) as pool:
        evaluated = set(eval_instances(cfg, pool))
    demos = Demonstrations()
    for task, options in demo_options(cfg):
        with EnvPool.from_config(cfg.env, max_size=1, options=options) as pool:
            env = pool.first()
            instances = env.instances(cfg.sft.split)[: cfg.sft.max_instances]
            if not instances:
                raise ConfigError(f"sft.split: the {cfg.sft.split} split of {task or cfg.env.name} is empty")
            if options == dict(cfg.env.options):
                seen = sorted(evaluated.intersection(instances))
                if seen:
                    raise ConfigError(
                        f"sft: {len(seen)} demonstrated instance(s) are evaluation instances (e.g. {seen[0]}); "
                        f"demonstrate another split (sft.split), task (sft.tasks) or world (sft.options)"
                    )
            episodes, failed = replay(env, instances, tokenizer, cfg.rollout.max_prompt_tokens, list(cfg.rollout.stop),
                                      tag=f"demo-{task or 'task'}", layout=cfg.rollout.prompt_layout)
        demos.episodes += episodes
        demos.failed += failed
        demos.sources.append(DemoSource(options, instances))
    if not demos.episodes:
        raise ValueError(f"sft: no demonstration reached success when replayed ({len(demos.failed)} failed)")
    return demos


def split_rows(demos: Demonstrations, val_fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """Hold out whole demonstrations (never steps of a trained one): (train rows, held-out rows)."""
    episodes = list(demos.episodes)
    random.Random(seed).shuffle(episodes)
    n_val = math.floor(val_fraction * len(episodes))
    return Demonstrations(episodes=episodes[n_val:]).rows(), Demonstrations(episodes=episodes[:n_val]).rows()


def answer_nll(policy: torch.nn.Module, rows: list[Row], pad_id: int) -> torch.Tensor:
    """Token-mean negative log-likelihood of the answer tokens of `rows` (prompt tokens carry no loss)."""
    batch = build_batch("padded", [p for p, _ in rows], [a for _, a in rows], pad_id)
    batch = batch.to(next(policy.parameters()).device)
    logprobs = response_logprobs(policy, batch)
    mask = batch.response_mask.to(logprobs.dtype)
    return -(logprobs * mask).sum() / mask.sum()


class WarmStartModule(L.LightningModule):
    """Behaviour cloning: minimise `answer_nll` over demonstration rows."""

    def __init__(self, cfg: Config, held_out: list[Row]) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = load_tokenizer(cfg.model.name_or_path)
        self.pad_id = self.tokenizer.pad_token_id
        self.held_out = held_out
        self.policy: torch.nn.Module | None = None
        self.val_nll: list[float] = []
        """Held-out NLL before training, then after each epoch."""

    def configure_model(self) -> None:
        if self.policy is None:
            self.policy = build_policy(self.cfg.model, self.cfg.seed).train()  # loaded in eval mode

    def held_out_nll(self) -> float:
        if not self.held_out:
            return float("nan")
        assert self.policy is not None
        was_training = self.policy.training
        self.policy.eval()
        with torch.no_grad():
            total = tokens = 0.0
            for start in range(0, len(self.held_out), self.cfg.sft.batch_size):
                chunk = self.held_out[start:start + self.cfg.sft.batch_size]
                n = sum(len(a) for _, a in chunk)
                total += float(answer_nll(self.policy, chunk, self.pad_id)) * n
                tokens += n
        self.policy.train(was_training)
        return total / tokens

    def on_train_start(self) -> None:
        self.val_nll.append(self.held_out_nll())

    def training_step(self, rows: list[Row], batch_idx: int) -> torch.Tensor:
        assert self.policy is not None
        loss = answer_nll(self.policy, rows, self.pad_id)
        self.log("sft/loss", loss, prog_bar=True, batch_size=len(rows))
        return loss

    def on_train_epoch_end(self) -> None:
        self.val_nll.append(self.held_out_nll())
        if self.held_out:
            self.log("sft/held_out_nll", self.val_nll[-1], prog_bar=True)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        o = self.cfg.optim
        return torch.optim.AdamW(params, lr=self.cfg.sft.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))


def export_policy(policy: torch.nn.Module, tokenizer, out: Path) -> None:
    """Write the policy as a plain model folder (LoRA merged in); atomic, so a crash never leaves half."""
    model = policy.merge_and_unload() if hasattr(policy, "merge_and_unload") else policy
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.config.use_cache = True
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)


def sft(cfg: Config) -> Path:
    """Train on demonstrations; return the `policy/` folder."""
    from empo2.fit import build_loggers

    run_dir = cfg.run_dir
    out = run_dir / POLICY_DIR
    if (out / "config.json").is_file():
        raise ConfigError(f"name: {run_dir} already holds a warm-started policy ({out}); choose another name=...")
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    demos = collect(cfg, tokenizer)
    train_rows, held_out = split_rows(demos, cfg.sft.val_fraction, cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    print(f"sft: {len(demos.episodes)} demonstrations ({len(train_rows)} rows to train, {len(held_out)} held out), "
          f"{len(demos.failed)} failed to replay; sources: "
          + "; ".join(f"{len(s.instances)} instances of {s.options}" for s in demos.sources), flush=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = WarmStartModule(cfg, held_out)
    loader = torch.utils.data.DataLoader(
        train_rows, batch_size=cfg.sft.batch_size, shuffle=True, collate_fn=list,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    trainer = L.Trainer(
        accelerator=cfg.trainer.get("accelerator", "auto"), devices=1, max_epochs=cfg.sft.epochs,
        logger=build_loggers(cfg, run_dir) or False, enable_checkpointing=False, log_every_n_steps=1,
        enable_progress_bar=cfg.logging.progress_bar, default_root_dir=str(run_dir),
        gradient_clip_val=cfg.optim.grad_clip or None, num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=loader)
    assert module.policy is not None
    export_policy(module.policy, module.tokenizer, out)
    record = {
        "model": cfg.model.name_or_path, "init_from": cfg.model.init_from, "seed": cfg.seed,
        "demonstrations": len(demos.episodes), "train_rows": len(train_rows), "held_out_rows": len(held_out),
        "failed_to_replay": demos.failed, "sources": [asdict(s) for s in demos.sources],
        "held_out_nll": module.val_nll, "epochs": cfg.sft.epochs, "lr": cfg.sft.lr,
        "lora": cfg.model.lora.enabled,
    }
    (out / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    print(f"sft: held-out answer NLL {module.val_nll[0]:.3f} -> {module.val_nll[-1]:.3f}; policy written to {out}; "
          f"start from it with model.init_from={out}", flush=True)
    return out


COMMAND = Command("empo2.sft", "Warm-start a policy on demonstrations.", config_help="YAML file(s), as for fit",
                  overrides_help="key=value overrides, e.g. sft.epochs=2 sft.tasks=[find-here]",
                  errors=(ValueError, NotImplementedError))


def main(argv: list[str] | None = None) -> int:
    def run(cfg: Config) -> int:
        sft(cfg)
        return 0

    return run_command(COMMAND, argv, run)

if __name__ == "__main__":
    raise SystemExit(main())
