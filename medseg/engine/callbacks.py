"""Checkpoint hygiene for Lightning runs (RELIABILITY.md §B.6, C.2 #32).

Lightning's "atomic" checkpoint save writes a temporary file with ``tempfile.mkstemp()`` (so in
``$TMPDIR``) and then moves it into place: that is a rename only when ``$TMPDIR`` is on the
checkpoint filesystem, and a killed save leaves the temporary file behind. Top-k files written
just before a kill are also never removed by the next run. :class:`CheckpointHygiene`:

- points ``$TMPDIR`` (and :data:`tempfile.tempdir`) at ``tmpdir`` (default ``<dirpath>/../.tmp``,
  beside the checkpoint folder) for the run, so every save is a same-filesystem rename, and
  restores both afterwards;
- removes ``tmp*`` files in that folder older than the run (orphans of killed saves) at start;
- on resume, reconciles the top-k files with the restored ``ModelCheckpoint`` state. Lightning
  saves a new best, deletes the old one, then writes ``last.ckpt``; a kill in between leaves a
  state that names files which are gone or misses files which exist. Untracked ``epoch=*.ckpt``
  files are deleted while every tracked file exists (extras from a kill before the old best was
  deleted); when a tracked file is gone, the untracked ones are the newer bests and are adopted
  into the state (score read from the file name) instead, so a kill never loses the best model.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["CheckpointHygiene"]


class CheckpointHygiene(Callback):
    """Keep checkpoint saves atomic and the checkpoint folder free of stale files.

    Args:
        dirpath: the ``ModelCheckpoint`` folder.
        tmpdir: temporary folder on the same filesystem (default ``<dirpath>/../.tmp``).
        started: the run's start time (``time.time()``); files older than this are orphans.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike[str],
        tmpdir: str | os.PathLike[str] | None = None,
        started: float | None = None,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.tmpdir = Path(tmpdir) if tmpdir is not None else self.dirpath.parent / ".tmp"
        self.started = time.time() if started is None else started
        self._saved: tuple[str | None, str | None] | None = None
        self.removed: list[Path] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        if trainer.is_global_zero:
            for p in self.tmpdir.glob("tmp*"):
                if p.is_file() and p.stat().st_mtime < self.started:
                    p.unlink(missing_ok=True)
                    self.removed.append(p)
        if self._saved is None:
            self._saved = (os.environ.get("TMPDIR"), tempfile.tempdir)
        os.environ["TMPDIR"] = str(self.tmpdir)
        tempfile.tempdir = str(self.tmpdir)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or trainer.ckpt_path is None:
            return
        callbacks = [cb for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
        keep = {Path(trainer.ckpt_path).resolve()}
        for cb in callbacks:
            paths = [cb.best_model_path, cb.kth_best_model_path, cb.last_model_path]
            keep |= {Path(p).resolve() for p in [*paths, *cb.best_k_models] if p}
        untracked = [
            p for p in sorted(self.dirpath.glob("epoch=*.ckpt")) if p.resolve() not in keep
        ]
        lost = [cb for cb in callbacks if any(not Path(p).exists() for p in cb.best_k_models)]
        if lost:  # a kill after the old best was deleted: the untracked files are the new bests
            for cb in lost:
                _adopt(cb, untracked)
            return
        for p in untracked:
            p.unlink(missing_ok=True)
            self.removed.append(p)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._saved is None:
            return
        env, tmp = self._saved
        if env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = env
        tempfile.tempdir = tmp
        self._saved = None


def _adopt(cb: ModelCheckpoint, files: list[Path]) -> None:
    """Drop ``cb``'s top-k entries whose files are gone, add ``files`` whose name carries the
    monitored score (``...-dice=0.8123.ckpt``), and recompute its best / k-th entries."""
    import re

    import torch

    models = {p: v for p, v in cb.best_k_models.items() if Path(p).exists()}
    if cb.monitor:
        key = re.escape(cb.monitor.split("/")[-1])
        for f in files:
            m = re.search(rf"{key}=([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\.ckpt$", f.name)
            if m:
                models[str(f)] = torch.tensor(float(m.group(1)))
    ordered = sorted(models.items(), key=lambda kv: float(kv[1]), reverse=cb.mode == "max")
    cb.best_k_models = dict(ordered)
    if ordered:
        cb.best_model_path, cb.best_model_score = ordered[0]
        cb.kth_best_model_path, cb.kth_value = ordered[-1]
    else:
        cb.best_model_path, cb.best_model_score, cb.kth_best_model_path = "", None, ""
