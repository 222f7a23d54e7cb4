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

Why whole demonstrations per forward: step t+1's prompt extends step t's prompt and answer, so a
demonstration whose prompts chain is one sequence with an answer span per step (as the trainer
scores an episode, `empo2.training_rows`), and each span's log-probs are its own step's. Scored
row by row, every step would forward the whole history again: on ScienceWorld, with prompts of ~1k
tokens, that was most of the cost. `optim.sequences: per_step` keeps one sequence per step. Batches
are whole demonstrations, cut as the trainer cuts mini-batches (`empo2.training_rows.mini_batches`):
about `sft.batch_size` rows each, at most ⌈rows / `sft.batch_size`⌉ optimizer steps per epoch; a
demonstration is never split, so with demonstrations about as long as a batch there are fewer
steps of more rows (ScienceWorld's warm start: 84 steps of ~10 rows instead of 109 of 8).

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch

from empo2.cli import Command, run_command
from empo2.config import Config, ConfigError, to_yaml
from empo2.demonstrations import Demonstrations, DemoSource, replay
from empo2.episode import Episode
from empo2.export import write_model_folder
from empo2.models import build_policy, load_tokenizer
from empo2.module import resolve_token_layout
from empo2.token_batch import build_span_batch, response_logprobs
from empo2.training_rows import chain_groups, mini_batches

POLICY_DIR = "policy"
RECORD = "warm_start.json"


@dataclass
class DemoSequence:
    """Consecutive steps of one demonstration whose prompts chain, scored as one sequence."""

    ids: list[int]
    """The last step's prompt + answer: every earlier step's prompt and answer is a prefix of it."""
    spans: list[tuple[int, int]]
    """(start, length) of each step's answer in `ids`: the tokens the loss covers."""

    @property
    def rows(self) -> int:
        return len(self.spans)

    @property
    def answer_tokens(self) -> int:
        return sum(n for _, n in self.spans)


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


def demo_sequences(episodes: list[Episode], shared: bool) -> list[DemoSequence]:
    """Each demonstration's steps as sequences: one per run of chaining prompts when `shared`
    (usually the whole demonstration), else one per step."""
    out = []
    for ep in episodes:
        prompts = [st.prompt_ids for st in ep.steps]
        answers = [st.response_ids for st in ep.steps]
        for group in chain_groups(prompts, answers) if shared else [[i] for i in range(len(prompts))]:
            last = group[-1]
            out.append(DemoSequence(list(prompts[last]) + list(answers[last]),
                                    [(len(prompts[i]), len(answers[i])) for i in group]))
    return out


def split_demonstrations(demos: Demonstrations, val_fraction: float, seed: int) -> tuple[list[Episode], list[Episode]]:
    """Hold out whole demonstrations (never steps of a trained one): (trained, held out)."""
    episodes = list(demos.episodes)
    random.Random(seed).shuffle(episodes)
    n_val = math.floor(val_fraction * len(episodes))
    return episodes[n_val:], episodes[:n_val]


def answer_nll(policy: torch.nn.Module, sequences: list[DemoSequence], pad_id: int, layout: str = "padded") -> torch.Tensor:
    """Token-mean negative log-likelihood of the answer tokens of `sequences` (prompt tokens carry
    no loss): −Σ log π(answer token | its prefix) / #answer tokens."""
    batch = build_span_batch(layout, [q.ids for q in sequences], [q.spans for q in sequences], pad_id)
    batch = batch.to(next(policy.parameters()).device)
    logprobs = response_logprobs(policy, batch)
    mask = batch.response_mask.to(logprobs.dtype)
    return -(logprobs * mask).sum() / mask.sum()


def batches_of_rows(sequences: list[DemoSequence], batch_size: int) -> list[list[DemoSequence]]:
    """Consecutive sequences in chunks that close once they hold `batch_size` rows or more."""
    out: list[list[DemoSequence]] = []
    rows = batch_size  # a full chunk: the first sequence opens one
    for q in sequences:
        if rows >= batch_size:
            out.append([])
            rows = 0
        out[-1].append(q)
        rows += q.rows
    return out


class SequenceBatches(torch.utils.data.Sampler):
    """Batches of whole sequences holding about `batch_size` rows each, reshuffled every epoch from
    one seeded generator. Its length is the most batches an epoch can hold, ⌈rows / batch_size⌉; a
    cut that no sequence starts in is skipped, so an epoch may hold fewer."""

    def __init__(self, sequences: list[DemoSequence], batch_size: int, seed: int) -> None:
        self.row_counts = [q.rows for q in sequences]
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self):
        batches = mini_batches(self.row_counts, sum(self.row_counts), self.batch_size, 1, self.generator)
        return iter([b for b in batches if b])

    def __len__(self) -> int:
        return -(-sum(self.row_counts) // self.batch_size)


class WarmStartModule(L.LightningModule):
    """Behaviour cloning: minimise `answer_nll` over demonstration sequences."""

    def __init__(self, cfg: Config, held_out: list[DemoSequence]) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = load_tokenizer(cfg.model.name_or_path)
        self.pad_id = self.tokenizer.pad_token_id
        self.held_out = held_out
        self.policy: torch.nn.Module | None = None
        self.token_layout = "padded"
        """`optim.token_layout`, resolved when the model is built (as the trainer's)."""
        self.val_nll: list[float] = []
        """Held-out NLL before training, then after each epoch."""

    def configure_model(self) -> None:
        if self.policy is None:
            self.policy = build_policy(self.cfg.model, self.cfg.seed).train()  # loaded in eval mode
            self.token_layout = resolve_token_layout(self.cfg.optim.token_layout, self.policy)

    def held_out_nll(self) -> float:
        if not self.held_out:
            return float("nan")
        assert self.policy is not None
        was_training = self.policy.training
        self.policy.eval()
        with torch.no_grad():
            total = tokens = 0.0
            for chunk in batches_of_rows(self.held_out, self.cfg.sft.batch_size):
                n = sum(q.answer_tokens for q in chunk)
                total += float(answer_nll(self.policy, chunk, self.pad_id, self.token_layout)) * n
                tokens += n
        self.policy.train(was_training)
        return total / tokens

    def on_train_start(self) -> None:
        self.val_nll.append(self.held_out_nll())

    def training_step(self, sequences: list[DemoSequence], batch_idx: int) -> torch.Tensor:
        assert self.policy is not None
        loss = answer_nll(self.policy, sequences, self.pad_id, self.token_layout)
        self.log("sft/loss", loss, prog_bar=True, batch_size=sum(q.rows for q in sequences))
        return loss

    def on_train_epoch_end(self) -> None:
        self.val_nll.append(self.held_out_nll())
        if self.held_out:
            self.log("sft/held_out_nll", self.val_nll[-1], prog_bar=True)

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        o = self.cfg.optim
        return torch.optim.AdamW(params, lr=self.cfg.sft.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))


def sft(cfg: Config) -> Path:
    """Train on demonstrations; return the `policy/` folder."""
    from empo2.fit import build_loggers

    run_dir = cfg.run_dir
    out = run_dir / POLICY_DIR
    if (out / "config.json").is_file():
        raise ConfigError(f"name: {run_dir} already holds a warm-started policy ({out}); choose another name=...")
    tokenizer = load_tokenizer(cfg.model.name_or_path)
    demos = collect(cfg, tokenizer)
    trained, held_out_demos = split_demonstrations(demos, cfg.sft.val_fraction, cfg.seed)
    shared = cfg.optim.sequences == "shared"
    train_seqs, held_out = demo_sequences(trained, shared), demo_sequences(held_out_demos, shared)
    train_rows, held_out_rows = sum(q.rows for q in train_seqs), sum(q.rows for q in held_out)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    print(f"sft: {len(demos.episodes)} demonstrations ({train_rows} rows to train in {len(train_seqs)} sequences, "
          f"{held_out_rows} held out), "
          f"{len(demos.failed)} failed to replay; sources: "
          + "; ".join(f"{len(s.instances)} instances of {s.options}" for s in demos.sources), flush=True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = WarmStartModule(cfg, held_out)
    loader = torch.utils.data.DataLoader(
        train_seqs, batch_sampler=SequenceBatches(train_seqs, cfg.sft.batch_size, cfg.seed), collate_fn=list)
    trainer = L.Trainer(
        accelerator=cfg.trainer.get("accelerator", "auto"), devices=1, max_epochs=cfg.sft.epochs,
        logger=build_loggers(cfg, run_dir) or False, enable_checkpointing=False, log_every_n_steps=1,
        enable_progress_bar=cfg.logging.progress_bar, default_root_dir=str(run_dir),
        gradient_clip_val=cfg.optim.grad_clip or None, num_sanity_val_steps=0,
    )
    trainer.fit(module, train_dataloaders=loader)
    assert module.policy is not None
    shutil.rmtree(out, ignore_errors=True)  # a folder without config.json: an earlier, unfinished write
    write_model_folder(module.policy, module.tokenizer, out)
    record = {
        "model": cfg.model.name_or_path, "init_from": cfg.model.init_from, "seed": cfg.seed,
        "demonstrations": len(demos.episodes), "train_rows": train_rows, "held_out_rows": held_out_rows,
        "train_sequences": len(train_seqs),
        "failed_to_replay": demos.failed, "sources": [asdict(s) for s in demos.sources],
        "held_out_nll": module.val_nll, "epochs": cfg.sft.epochs, "lr": cfg.sft.lr,
        "lora": cfg.model.lora.enabled,
    }
    (out / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    print(f"sft: held-out answer NLL {module.val_nll[0]:.3f} -> {module.val_nll[-1]:.3f}; policy written to {out}; "
          f"start from it with model.init_from={out}", flush=True)
    return out


COMMAND = Command("empo2.sft", "Warm-start a policy on demonstrations.",
                  example="--config conf/protocol/keyroom.yaml name=warm", config_help="YAML file(s), as for fit",
                  overrides_help="key=value overrides, e.g. sft.epochs=2 sft.tasks=[find-here]",
                  errors=(ValueError, NotImplementedError))


def main(argv: list[str] | None = None) -> int:
    def run(cfg: Config) -> int:
        sft(cfg)
        return 0

    return run_command(COMMAND, argv, run)

if __name__ == "__main__":
    raise SystemExit(main())
