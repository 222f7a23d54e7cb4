"""`python -m empo2.fit --config FILE [key=value ...]`: train a policy.

Why a thin script over `lightning.Trainer`: users bring Lightning habits (strategies, precision,
loggers, `ckpt_path=last`), so everything under `trainer.*` goes straight to the Trainer, and this
file only wires the three empo2 pieces (module, datamodule, callbacks) and the run directory:

    <out_dir>/<name>/config.yaml      the resolved config (an earlier, different one is kept)
    <out_dir>/<name>/checkpoints/     last.ckpt and periodic ones
    <out_dir>/<name>/logs/            CSV (and TensorBoard) metrics, one row per iteration;
                                      learning_curves.png at the end
    <out_dir>/<name>/trajectories/    every training episode, one JSONL file per iteration;
                                      index.html replays them (tips included)
    <out_dir>/<name>/eval/            evaluation tables (CSV, Markdown) and episodes

A fresh run refuses a run directory that already holds checkpoints (pass `ckpt_path=last` to
resume, or choose another `name`), or another run's memory, trajectories or metrics without a
checkpoint (a run that died before its first one), so no run's data is overwritten or silently
built upon. A resume may change only what its checkpoint can follow (`empo2.resume_changes`).

Imports inside functions are deliberate: torch, Lightning, the module and the datamodule load only
after the config has been checked, so a config error or `--print-config` answers at once.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from empo2.checkpoint import checkpoint_epoch, resolve_ckpt, saved_store_versions
from empo2.cli import Command, run_command
from empo2.config import Config, ConfigError, to_dict, to_yaml
from empo2.cpu_load import check_cores
from empo2.cpu_precision import cpu_bf16_caveat
from empo2.models import resolve


def launcher_rank() -> int:
    """Rank of this process as set by a launcher (Lightning's, torchrun, SLURM); 0 when alone."""
    import os

    for var in ("RANK", "SLURM_PROCID"):
        if var in os.environ:
            return int(os.environ[var])
    return int(os.environ.get("NODE_RANK", 0)) * 1000 + int(os.environ.get("LOCAL_RANK", 0))


def prepare_run_dir(cfg: Config) -> Path:
    run_dir = cfg.run_dir
    if launcher_rank() != 0:  # rank 0 owns the run directory's files
        return run_dir
    ckpts = run_dir / "checkpoints"
    if cfg.ckpt_path is None and ckpts.is_dir() and any(ckpts.glob("*.ckpt")):
        raise ConfigError(
            f"ckpt_path: {run_dir} already holds checkpoints; pass ckpt_path=last to resume "
            f"or choose another name=..."
        )
    leftovers = [name for name, path in training_artefacts(run_dir).items()
                 if path.is_file() or (path.is_dir() and any(path.iterdir()))]
    if cfg.ckpt_path is None and leftovers:
        raise ConfigError(
            f"name: {run_dir} holds another run's {', '.join(leftovers)} but no checkpoint (that run stopped "
            f"before its first one), and a fresh run would build on them; remove the folder or choose another name=..."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    text = to_yaml(cfg)
    saved = run_dir / "config.yaml"
    if saved.exists() and saved.read_text() != text:
        k = 1
        while (run_dir / f"config.{k}.yaml").exists():
            k += 1
        saved.rename(run_dir / f"config.{k}.yaml")
    saved.write_text(text)
    return run_dir


def set_aside_unfinished(run_dir: Path) -> Path | None:
    """A run stopped before its first checkpoint: move what it wrote (memory, trajectories,
    metrics) into `<run_dir>/stopped/<k>/`, kept for reading, so the same command starts the run
    again instead of being refused for another run's leftovers. Returns that folder (None when
    there was nothing to move, a checkpoint exists, or this is not the launcher's rank 0)."""
    ckpts = run_dir / "checkpoints"
    if launcher_rank() != 0 or (ckpts.is_dir() and any(ckpts.glob("*.ckpt"))):
        return None
    present = {name: path for name, path in training_artefacts(run_dir).items() if path.exists()}
    if not present:
        return None
    k = 1
    while (run_dir / "stopped" / str(k)).exists():
        k += 1
    target = run_dir / "stopped" / str(k)
    target.mkdir(parents=True)
    for path in present.values():
        path.rename(target / path.name)
    return target


def training_artefacts(run_dir: Path) -> dict[str, Path]:
    """What a training run leaves in its directory besides checkpoints and config.yaml."""
    return {"memory": run_dir / "memory", "trajectories": run_dir / "trajectories",
            "metrics": run_dir / "logs" / "metrics.csv"}


@contextmanager
def run_temp_dir(run_dir: Path):
    """Temporary files of this rank go to `<run_dir>/.tmp/rank<r>`, emptied at every start. Lightning
    writes a checkpoint into a temp file first (fsspec's transaction, `tempfile.mkstemp()`) and moves
    it into place when complete; a run killed mid-write left that partial file in `$TMPDIR`, where
    nobody could tell it from others'. Here the next start of the run removes it."""
    import shutil
    import tempfile

    folder = run_dir / ".tmp" / f"rank{launcher_rank()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    before = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = before


def seed_memory(source: Path, run_dir: Path) -> None:
    """`memory.init_from`: start a fresh run with a copy of another memory folder (rank 0 copies)."""
    import shutil

    from empo2.memory import memory_dir

    if launcher_rank() == 0:
        shutil.copytree(source, memory_dir(run_dir))


def drop_checkpoints_after(folder: Path, resume_epoch: int) -> list[Path]:
    """Periodic checkpoints of iterations at or after the one `last.ckpt` resumes at were written by
    a run that died before updating `last.ckpt`; the resumed run writes them again, and left alone
    they would sit beyond `checkpoint.keep` forever. Only for `ckpt_path=last` (an explicit older
    checkpoint must not delete newer ones)."""
    import re

    dropped = []
    if launcher_rank() != 0 or not folder.is_dir():
        return dropped
    for path in folder.iterdir():
        match = re.fullmatch(r"iter_(\d+)(\.ckpt)?", path.name)
        if match and int(match.group(1)) >= resume_epoch:
            if path.is_dir():
                import shutil

                shutil.rmtree(path)
            else:
                path.unlink()
            dropped.append(path)
    return dropped


def check_stores_present(cfg: Config, ckpt: str) -> None:
    """A checkpoint that restores a memory version needs the run's memory folder: refuse a resume
    without it in one line, before the model loads (LanceDB would fail deep inside setup)."""
    from empo2.memory import memory_dir

    folder = memory_dir(cfg.run_dir)
    versions = saved_store_versions(ckpt)
    if versions and not folder.is_dir():
        raise ConfigError(
            f"ckpt_path: {ckpt} restores the memory at version {max(versions.values())}, but {folder} is missing; "
            f"put the folder back (from a copy of the run), or start a new run with another name=..."
        )


def announce_resume_changes(cfg: Config) -> None:
    """Compare the resumed run's `config.yaml` with this config: refuse what the checkpoint cannot
    follow, say in one line what applies from now on (`empo2.resume_changes`)."""
    from omegaconf import OmegaConf

    from empo2.resume_changes import check_resume_changes, resume_caveat

    saved_path = cfg.run_dir / "config.yaml"
    if not saved_path.is_file():
        return
    try:
        saved = OmegaConf.to_container(OmegaConf.load(saved_path), resolve=True)
    except Exception as err:  # noqa: BLE001 - a damaged config.yaml: say which file
        raise ConfigError(f"{saved_path}: cannot be read ({type(err).__name__}); restore it or remove it to resume "
                          f"without the change check") from None
    applied = check_resume_changes(saved, to_dict(cfg), str(saved_path))  # type: ignore[arg-type]
    if applied and launcher_rank() == 0:
        print(f"resume: applying changed {'; '.join(applied)}", file=sys.stderr)
    caveat = resume_caveat(cfg.trainer.get("strategy"))
    if caveat and launcher_rank() == 0:
        print(caveat, file=sys.stderr)


def build_loggers(cfg: Config, run_dir: Path, resume_epoch: int | None = None) -> list[Any]:
    from lightning.pytorch import loggers

    from empo2.run_logs import ResumableCSVLogger

    out: list[Any] = []
    for name in cfg.logging.loggers:
        if name == "csv":
            out.append(ResumableCSVLogger(run_dir, name="logs", version="", resume_epoch=resume_epoch))
        elif name == "tensorboard":
            out.append(loggers.TensorBoardLogger(run_dir, name="logs", version=""))
        elif name == "wandb":
            out.append(loggers.WandbLogger(project="empo2", name=cfg.name, save_dir=str(run_dir)))
    return out


def build_trainer(
    cfg: Config, run_dir: Path, rollouts: Any, extra_callbacks: list[Any] | None = None, resume_epoch: int | None = None,
    checkpoint: Any = None,
):
    """The Lightning trainer of a run, with the callbacks its config asks for; `rollouts` is the run's
    RolloutDataModule (periodic evaluation reuses its environments and engine). `checkpoint`: the
    run's one checkpoint writer (default: periodic ones and `last.ckpt` per `checkpoint.*`)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from callbacks import IntrinsicReward, PeriodicEvaluation, SharedRunDir, TipMemory, TrajectoryWriter

    callbacks: list[Any] = [SharedRunDir(run_dir, cfg.out_dir), checkpoint or
        ModelCheckpoint(
            dirpath=run_dir / "checkpoints",
            filename="iter_{epoch:05d}",
            monitor="iteration",
            mode="max",
            save_top_k=cfg.checkpoint.keep,
            # last.ckpt is a link to the newest periodic checkpoint, not a second copy: a full-weight
            # checkpoint with its optimizer state is 16 bytes a parameter, written once an iteration.
            save_last="link",
            every_n_epochs=cfg.checkpoint.every_n_iterations,
            save_on_train_epoch_end=True,
            auto_insert_metric_name=False,
            # A resumed copy of a run folder must overwrite its last.ckpt, not write last-v1.ckpt
            # beside it (the next `ckpt_path=last` would load the older file and redo an iteration).
            enable_version_counter=False,
        )
    ]
    if cfg.memory.enabled:
        callbacks.append(TipMemory(cfg, run_dir))
    if cfg.intrinsic.kind != "none":
        callbacks.append(IntrinsicReward(cfg, run_dir))
    if cfg.logging.trajectories:
        callbacks.append(TrajectoryWriter(run_dir))
    if cfg.eval.val_every > 0:
        callbacks.append(PeriodicEvaluation(cfg, run_dir, rollouts))
    callbacks += extra_callbacks or []
    from empo2.sharding import build_strategy

    kwargs = dict(cfg.trainer)
    kwargs["strategy"] = build_strategy(cfg)
    kwargs.setdefault("log_every_n_steps", 1)
    kwargs.setdefault("num_sanity_val_steps", 0)
    kwargs.setdefault("enable_progress_bar", cfg.logging.progress_bar)
    kwargs.setdefault("default_root_dir", str(run_dir))
    return L.Trainer(
        logger=build_loggers(cfg, run_dir, resume_epoch) or False,
        callbacks=callbacks,
        reload_dataloaders_every_n_epochs=1,
        use_distributed_sampler=False,
        **kwargs,
    )


def fit(cfg: Config, extra_callbacks: list[Any] | None = None):
    """Run (or resume) training; return the Trainer."""
    from datamodules import RolloutDataModule
    from empo2.module import EMPO2Module

    ckpt = resolve_ckpt(cfg)
    resume_epoch = checkpoint_epoch(ckpt)  # a missing or unreadable checkpoint fails here, before the run dir is touched
    if ckpt is not None:
        check_stores_present(cfg, ckpt)
        announce_resume_changes(cfg)  # refused changes fail here too, before config.yaml is replaced
    datamodule = RolloutDataModule(cfg)
    try:  # from here the datamodule's environments (and JVMs) are closed however the run ends
        try:  # one environment now: one that rejects its options fails before the run directory is made
            datamodule.pool.first()
        except ValueError as err:
            raise ConfigError(str(err)) from None
        resolve(cfg.model.name_or_path)  # a model that cannot load fails here too, before the run dir is touched
        resolve(cfg.model.weights)
        run_dir = prepare_run_dir(cfg)
        warn_if_cores_busy(cfg)  # after every check of the input (each fails in one line), before the model loads
        caveat = cpu_bf16_caveat(cfg.trainer)
        if caveat and launcher_rank() == 0:
            print(caveat, file=sys.stderr)
        if cfg.ckpt_path is None and cfg.memory.init_from:
            seed_memory(Path(cfg.memory.init_from), run_dir)
        if cfg.ckpt_path == "last" and resume_epoch is not None:
            drop_checkpoints_after(run_dir / "checkpoints", resume_epoch)
        trainer = build_trainer(cfg, run_dir, datamodule, extra_callbacks, resume_epoch=resume_epoch)
        module = EMPO2Module(cfg)
        with run_temp_dir(run_dir):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
    finally:  # Lightning tears the datamodule down only after a successful fit: close the JVMs anyway
        datamodule.teardown("fit")
    if trainer.global_rank == 0:
        write_pictures(run_dir, cfg.name)
    return trainer


def warn_if_cores_busy(cfg: Config) -> None:
    """On a CPU run, one line on stderr when other processes already keep the cores busy (`empo2.cpu_load`)."""
    import os

    import torch

    if launcher_rank() != 0 or str(cfg.trainer.get("accelerator", "auto")) != "cpu":
        return
    warning = check_cores(torch.get_num_threads(), os.cpu_count() or 1)
    if warning:
        print(warning, file=sys.stderr)


def write_pictures(run_dir: Path, title: str) -> None:
    """Learning curves (PNG) beside the metrics and the episode viewer (HTML) beside the trajectories."""
    from empo2.plots import learning_curves
    from empo2.trajectory_viewer import write_viewer

    metrics = run_dir / "logs" / "metrics.csv"
    if metrics.is_file():
        learning_curves(metrics, run_dir / "logs" / "learning_curves.png", title=f"{title}: learning curve")
    write_viewer(run_dir)


COMMAND = Command(
    "empo2.fit", "Train an LLM agent with EMPO².",
    example="--config conf/quickstart.yaml trainer.max_epochs=6 ckpt_path=last",
    config_help="YAML file (every key: docs/CONFIG.md); repeat to layer presets, e.g. --config conf/strategy/fsdp2.yaml",
)


def main(argv: list[str] | None = None) -> int:
    def train(cfg: Config) -> int:
        from empo2.preemption import resume_hint, run_guarded

        command = COMMAND.command_line(argv)
        trainer, code = run_guarded(
            lambda: fit(cfg), lambda stop: resume_hint(cfg.run_dir, command, set_aside_unfinished(cfg.run_dir)))
        if code:
            return code
        metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if not k.startswith("time/")}
        print(f"run directory: {cfg.run_dir}")
        print({k: metrics[k] for k in sorted(metrics) if k.startswith(("rollout/return", "rollout/success", "train/loss"))})
        return 0

    return run_command(COMMAND, argv, train)


if __name__ == "__main__":
    raise SystemExit(main())
