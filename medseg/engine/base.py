"""``MedsegTask``: what every medseg LightningModule shares.

- the non-finite guards of :mod:`medseg.engine.guards`: a NaN/Inf gradient stops training
  before the optimiser step, and a checkpoint with non-finite weights is never written;
- validation and test wired to two methods each task defines: ``_evaluate(batch, stage)`` per
  batch and ``_log_metrics(stage)`` at the end of the epoch (``stage`` is ``"val"`` or
  ``"test"``).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule

from medseg.engine.guards import check_finite_gradients, check_finite_weights

__all__ = ["MedsegTask"]


class MedsegTask(LightningModule):
    """Base of the medseg tasks (see the module docstring); subclasses implement
    ``_evaluate`` and ``_log_metrics``."""

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        check_finite_gradients(self)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_finite_weights(checkpoint, self.global_step)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        raise NotImplementedError

    def _log_metrics(self, stage: str) -> None:
        raise NotImplementedError
