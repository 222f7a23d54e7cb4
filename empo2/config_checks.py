"""The configuration checks that span fields: what `load_config` runs after each field's declared
choice or range (`empo2.config.check_fields`).

Why apart from the schema: these rules read several sections at once (a token budget against the
prompt budget, memory modes against `memory.enabled`), installed packages, the environment's
constructor and Lightning's Trainer signature. Each error names the dotted key and what to do.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from empo2.config_error import ConfigError

if TYPE_CHECKING:
    from empo2.config import Config

COMPARE_METHODS = ("naive", "warm_start", "reflexion", "grpo", "gigpo", "hgpo", "empo2")
# Logger name -> packages that provide it (any one of them).
_LOGGER_PACKAGES: dict[str, tuple[str, ...]] = {"csv": (), "tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}
# Trainer options the trainer sets itself (one epoch = one RL iteration built by the datamodule).
_TRAINER_OWNED = ("reload_dataloaders_every_n_epochs", "use_distributed_sampler", "logger")


def options_with_defaults(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """`env.options` bound to the environment's `__init__`, with the defaults of the options the
    config leaves out filled in: what `check_options` and `check_instance` receive. TypeError when
    they do not bind."""
    sig = inspect.signature(cls.__init__)
    bound = sig.bind(None, **options)
    bound.apply_defaults()
    out: dict[str, Any] = {}
    for name, value in list(bound.arguments.items())[1:]:  # [0] is self
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            out[name] = value
    return out


def _check_env_options(cfg: Config) -> None:
    """`env.options` must bind to the environment's constructor (checked without building it)."""
    from empo2.envs.base import env_class  # deferred: importing the schema loads no environment

    try:
        cls = env_class(cfg.env.name, cfg.env.cls)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    try:
        options = options_with_defaults(cls, cfg.env.options)
    except TypeError as err:
        raise ConfigError(f"env.options: {err} (for {cls.__name__})") from None
    check = getattr(cls, "check_options", None)
    if callable(check):
        try:
            check(**options)
        except (ValueError, OSError) as err:  # OSError: a data file the options name is missing
            msg = str(err)
            raise ConfigError(msg if msg.startswith("env.options") else f"env.options: {msg}") from None
    for key in ("train_instances", "test_instances"):
        for instance in getattr(cfg.env, key) or []:
            try:
                cls.check_instance(str(instance), **options)
            except ValueError as err:
                raise ConfigError(f"env.{key}: {err}") from None


def check_values(cfg: Config) -> None:
    """The checks across fields (and against installed packages, the environment's constructor and
    Lightning's Trainer) that no single field's declaration can express."""
    if cfg.mode.p > 0 and not cfg.memory.enabled:
        raise ConfigError("mode.p: memory modes need memory.enabled=true (or set mode.p=0 for plain GRPO)")
    if cfg.algo.clip_low >= 1:
        raise ConfigError(f"algo.clip_low: must be < 1, got {cfg.algo.clip_low}")
    longest_row = cfg.rollout.max_prompt_tokens + cfg.rollout.max_new_tokens
    budget = cfg.optim.max_tokens_per_micro_batch
    if budget is not None and budget < longest_row:
        raise ConfigError(
            f"optim.max_tokens_per_micro_batch: {budget} cannot hold one row of rollout.max_prompt_tokens + "
            f"rollout.max_new_tokens = {longest_row} tokens; raise it to >= {longest_row} (or lower "
            f"rollout.max_prompt_tokens), or leave it unset"
        )
    if cfg.checkpoint.keep == 0 or cfg.checkpoint.keep < -1:
        raise ConfigError(
            f"checkpoint.keep: {cfg.checkpoint.keep} keeps no checkpoint at all (last.ckpt is a link to the newest "
            f"periodic one); use 1 or more, or -1 to keep all"
        )
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"optim.betas: needs two numbers, got {cfg.optim.betas}")
    if cfg.env.cls is not None and ":" not in cfg.env.cls:
        raise ConfigError(f"env.cls: expected 'package.module:ClassName', got {cfg.env.cls!r}")
    _check_env_options(cfg)
    m = cfg.memory
    longest, named = ((cfg.tip_prompt_tokens, "the longest tip prompt (rollout.max_prompt_tokens + memory.tip_prompt_room)")
                      if m.enabled and m.tip_source == "model" else (cfg.rollout.max_prompt_tokens, "rollout.max_prompt_tokens"))
    if cfg.engine.max_model_len is not None and cfg.engine.max_model_len <= longest:
        raise ConfigError(f"engine.max_model_len: {cfg.engine.max_model_len} leaves no room to generate after {named}={longest}; raise it")
    clash = [v for v in cfg.compare.variants if v in COMPARE_METHODS]
    if clash:
        raise ConfigError(f"compare.variants: {clash} would hide the built-in method of that name; rename the variant")
    for name, overrides in cfg.compare.variants.items():
        bad = [o for o in overrides if "=" not in str(o)]
        if bad:
            raise ConfigError(f"compare.variants.{name}: {bad}: each override is key=value")
    unknown = [m for m in cfg.compare.methods if m not in COMPARE_METHODS and m not in cfg.compare.variants]
    if unknown or not cfg.compare.methods:
        choices = ", ".join([*COMPARE_METHODS, *cfg.compare.variants])
        raise ConfigError(f"compare.methods: {unknown or 'empty'}; choose from {choices} (or name one in compare.variants)")
    if not cfg.compare.seeds:
        raise ConfigError("compare.seeds: give at least one seed")
    if "warm_start" in cfg.compare.methods and not cfg.compare.warm_start:
        raise ConfigError("compare.methods: warm_start scores the `empo2.sft` policy; set compare.warm_start=true")
    if not 0 <= cfg.sft.val_fraction < 1:
        raise ConfigError(f"sft.val_fraction: a share in [0, 1), got {cfg.sft.val_fraction}")
    init = cfg.model.init_from
    if init is not None and not (Path(init).expanduser() / "config.json").is_file():
        raise ConfigError(
            f"model.init_from: {init} is not a model folder (no config.json); point it at the policy/ "
            f"folder that `python -m empo2.sft` writes in its run directory"
        )
    _check_memory_source(cfg.memory.init_from)
    _check_run_place(cfg.name, cfg.out_dir)
    _check_embedded_model("model.name_or_path", cfg.model.name_or_path)
    bad = [name for name in cfg.logging.loggers if name not in _LOGGER_PACKAGES]
    if bad:
        raise ConfigError(f"logging.loggers: unknown logger(s) {bad}; use {', '.join(_LOGGER_PACKAGES)}")
    for name in cfg.logging.loggers:
        needs = _LOGGER_PACKAGES[name]
        if needs and not any(importlib.util.find_spec(pkg) for pkg in needs):
            raise ConfigError(f"logging.loggers: {name} needs the package {needs[0]!r} (pip install {needs[0]})")
    _check_trainer(cfg.trainer)
    _check_strategy(cfg.trainer)
    from empo2.advantage import ADVANTAGES  # deferred, as below: torch loads only when a config is checked
    from empo2.loss import KL_ESTIMATORS, LOSSES

    ADVANTAGES.check("algo.advantage", cfg.algo.advantage)
    LOSSES.check("algo.loss", cfg.algo.loss)
    KL_ESTIMATORS.check("algo.kl_estimator", cfg.algo.kl_estimator)


def _check_run_place(name: str, out_dir: str) -> None:
    """The run directory `<out_dir>/<name>` must be makeable: `name` one folder name a filesystem
    takes, `out_dir` a folder (or not there yet)."""
    if not name or "/" in name or name in (".", ".."):
        raise ConfigError(f"name: {name!r} must be one folder name (no '/'); the run directory is <out_dir>/<name>")
    if len(name.encode()) > 255:
        raise ConfigError(f"name: {len(name.encode())} bytes long; a folder name takes at most 255, shorten it")
    place = Path(out_dir).expanduser()
    for parent in (place, *place.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"out_dir: {parent} is a file, not a folder; point out_dir at a folder (or a new path)")
            break


def _check_embedded_model(key: str, name_or_path: str) -> None:
    from empo2.models import EMBEDDED, EMBEDDED_PREFIX  # deferred with the other packages' checks

    if name_or_path.startswith(EMBEDDED_PREFIX) and name_or_path[len(EMBEDDED_PREFIX):] not in EMBEDDED:
        known = ", ".join(EMBEDDED_PREFIX + n for n in EMBEDDED)
        raise ConfigError(f"{key}: unknown embedded model {name_or_path!r}; known: {known} "
                          f"(or give a Hugging Face folder)")


def _check_memory_source(init_from: str | None) -> None:
    """`memory.init_from` must be a memory folder (it holds the tip table), not a run folder or
    anything else: a wrong folder would be copied whole and training would start with no tips."""
    if init_from is None:
        return
    from empo2.memory import TABLE, memory_dir  # deferred: the schema loads no storage library

    folder = Path(init_from).expanduser()
    if (folder / f"{TABLE}.lance").is_dir():
        return
    if (memory_dir(folder) / f"{TABLE}.lance").is_dir():
        raise ConfigError(f"memory.init_from: {init_from} is a run folder; point it at its memory folder, "
                          f"{memory_dir(folder)}")
    what = "does not exist" if not folder.exists() else "is not a folder" if not folder.is_dir() else \
        f"holds no tip table ({TABLE}.lance)"
    raise ConfigError(f"memory.init_from: {init_from} {what}; point it at another run's memory/ folder")


def _check_trainer(trainer: dict[str, Any]) -> None:
    import lightning

    accepted = set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self"}
    for key in trainer:
        if key in _TRAINER_OWNED:
            raise ConfigError(f"trainer.{key}: set by empo2 itself and cannot be overridden")
        if key not in accepted:
            raise ConfigError(f"trainer.{key}: not an argument of lightning.Trainer")
    epochs = trainer.get("max_epochs")
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"trainer.max_epochs: the number of RL iterations, an int >= 1; got {epochs!r}")


def _check_strategy(trainer: dict[str, Any]) -> None:
    strategy = trainer.get("strategy", "auto")
    if strategy == "fsdp" and trainer.get("accelerator") == "cpu":
        raise ConfigError("trainer.strategy: fsdp (FSDP1) runs on GPUs only; on CPU use fsdp2")
    if strategy in ("fsdp", "fsdp2") and "mixed" in str(trainer.get("precision", "")):
        raise ConfigError(
            f"trainer.precision: {trainer['precision']} does not apply to the policy that {strategy} wraps "
            f"itself; set sharding.mixed_precision=bf16 (or fp16) instead"
        )
