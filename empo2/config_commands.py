"""Config sections that one command each reads: `evaluate` (`eval.*`, also fit's periodic
evaluation), `adapt`, `compare`, `sft` and `export`.

Why apart from `empo2.config`: these describe how a command drives runs (which instances, seeds,
methods, demonstrations), not how one training run behaves; `Config` holds one of each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from empo2.config_fields import choice, count_or_none, non_negative, positive


@dataclass
class EvalConfig:
    split: str = choice("test", "train")
    """Instances evaluated: the environment's `test` (or `train`) split, or `env.test_instances`."""
    episodes_per_instance: int = positive(4)
    """Episodes played per instance (EMPO2.md §8: 4 per test variation)."""
    temperature: float = non_negative(0.4)
    """Sampling temperature for evaluation (no memory is used)."""
    max_instances: Optional[int] = count_or_none(None)
    """Evaluate only the first this many instances of the split (all by default)."""
    val_every: int = non_negative(0)
    """During fit, evaluate every this many iterations (0: never); tables go to `<run>/eval/`."""


@dataclass
class AdaptConfig:
    target_task: Optional[str] = None
    """`python -m empo2.adapt`: the task to adapt to (the environment retargets `env.options`;
    ScienceWorld: a task name); unset: the task(s) the config trains on."""
    iterations: int = positive(10)
    """Adaptation iterations; iteration 0 plays without memory, later ones retrieve tips."""
    split: str = choice("train", "test")
    """Which instances of the target task are played: `train` or `test`."""
    temperature: Optional[float] = None
    """Sampling temperature while adapting; unset: `rollout.temperature`."""


@dataclass
class CompareConfig:
    methods: list[str] = field(default_factory=lambda: ["naive", "reflexion", "grpo", "empo2"])
    """`python -m empo2.compare`: methods to run (naive, warm_start, reflexion, grpo, gigpo, hgpo,
    empo2)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Seeds; every method runs once per seed and task."""
    tasks: Optional[list[str]] = None
    """Tasks (the environment retargets `env.options`, as for adaptation); unset: the config's own."""
    warm_start: bool = False
    """Run `empo2.sft` (the `sft.*` settings, seed of the first seed) once per task first, and start
    every method from its weights; the method `warm_start` scores that policy without training."""
    variants: dict[str, list[str]] = field(default_factory=dict)
    """Named EMPO² ablations, each a list of `key=value` overrides applied to the config for that
    method alone (e.g. `{empo2-split: [intrinsic.combine=advantage, intrinsic.coef=0.1]}`); list a
    variant's name in `methods` to run it. A continued comparison may add variants, not change them."""
    reflexion_iterations: Optional[int] = count_or_none(None)
    """Iterations of a reflexion cell's adaptation loop (the last is its score); unset: as many whole
    passes over the test instances as a training cell plays episodes, rollouts and final evaluation
    together (`empo2.compare.equal_budget_iterations`), so no method sees more episodes than another."""


@dataclass
class SFTConfig:
    tasks: Optional[list[str]] = None
    """`python -m empo2.sft`: the tasks whose demonstrations it trains on (the environment retargets
    `env.options` to each, as for adaptation); unset: the config's own task."""
    options: dict[str, Any] = field(default_factory=dict)
    """`env.options` entries replaced for the demonstrations only (e.g. a smaller KeyRoom house), so
    a warm start can teach the action format on instances evaluation never plays."""
    split: str = choice("train", "test")
    """Which split of the demonstration environment's instances is demonstrated."""
    max_instances: Optional[int] = count_or_none(None)
    """Demonstrate at most this many instances per task (the first ones of the split)."""
    val_fraction: float = 0.2
    """Share of the demonstrations held out to measure the log-likelihood of unseen ones."""
    epochs: int = positive(3)
    """Passes over the demonstration rows."""
    lr: float = positive(1e-4)
    """AdamW learning rate (weight decay and betas as `optim.*`)."""
    batch_size: int = positive(8)
    """Rows (one prompt + the demonstrated answer) per optimizer step."""


@dataclass
class ExportConfig:
    out: Optional[str] = None
    """`python -m empo2.export`: the folder to write (`out=DIR` for short); it must not exist yet."""
    merge: bool = True
    """LoRA runs: fold the adapters into the base weights (one self-contained model folder); false
    writes the adapters alone as a PEFT folder naming the base model they need (`merge=false`)."""
