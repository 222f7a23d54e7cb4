"""A CSV metrics log that survives resume.

Why: Lightning's CSVLogger deletes an existing `metrics.csv` when a new Trainer opens the same log
directory, so `ckpt_path=last` would erase the history of the iterations before the checkpoint.
This logger keeps those rows and drops only rows of iterations at or after the resumed one (a run
that crashed after its last checkpoint may have logged them; they are about to be redone).
"""

from __future__ import annotations

import csv
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _KeepingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, resume_epoch: int | None) -> None:
        self._resume_epoch = resume_epoch
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if self._resume_epoch is None:  # a fresh run: start a new file, keep the old one aside
            k = 1
            while path.with_name(f"metrics.{k}.csv").exists():
                k += 1
            path.rename(path.with_name(f"metrics.{k}.csv"))
            return
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            keys = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get("epoch", "") == "" or int(r["epoch"]) < self._resume_epoch]
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(path)
        self.metrics_keys = keys


class ResumableCSVLogger(CSVLogger):
    """CSVLogger that keeps earlier rows on resume (`resume_epoch` = the checkpoint's epoch)."""

    def __init__(self, *args, resume_epoch: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._resume_epoch = resume_epoch

    @property
    @rank_zero_experiment  # only rank 0 opens (and on resume rewrites) the file
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = _KeepingWriter(self.log_dir, self._resume_epoch)
        return self._experiment
