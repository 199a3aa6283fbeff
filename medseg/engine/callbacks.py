"""Checkpoint hygiene for Lightning runs (RELIABILITY.md §B.6, C.2 #32).

Lightning's "atomic" checkpoint save writes a temporary file with ``tempfile.mkstemp()`` (so in
``$TMPDIR``) and then moves it into place: that is a rename only when ``$TMPDIR`` is on the
checkpoint filesystem, and a killed save leaves the temporary file behind. Top-k files written
just before a kill are also never removed by the next run. :class:`CheckpointHygiene`:

- points ``$TMPDIR`` (and :data:`tempfile.tempdir`) at ``tmpdir`` (default ``<dirpath>/../.tmp``,
  beside the checkpoint folder) for the run, so every save is a same-filesystem rename, and
  restores both afterwards;
- removes ``tmp*`` files in that folder older than the run (orphans of killed saves) at start;
- on resume, deletes ``epoch=*.ckpt`` files that the restored ``ModelCheckpoint`` no longer
  tracks (stale top-k files left by a kill between saving a new best and deleting the old one).
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
        keep = {Path(trainer.ckpt_path).resolve()}
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint):
                paths = [cb.best_model_path, cb.kth_best_model_path, cb.last_model_path]
                keep |= {Path(p).resolve() for p in [*paths, *cb.best_k_models] if p}
        for p in self.dirpath.glob("epoch=*.ckpt"):
            if p.resolve() not in keep:
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
