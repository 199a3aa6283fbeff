"""A CSV logger that survives resumes.

Lightning's ``CSVLogger`` deletes ``metrics.csv`` when its folder is not empty (it warns "will be
deleted"), so resuming a run into the same run folder would lose the history. :class:`RunCSVLogger`
appends instead, keeping the existing header's columns and adding new ones.
"""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

__all__ = ["RunCSVLogger"]


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(header)


class RunCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` is appended to across resumes (never deleted)."""

    @property
    def experiment(self) -> ExperimentWriter:  # type: ignore[override]
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
