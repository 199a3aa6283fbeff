"""``MedsegTask``: what every medseg LightningModule shares, and ``ScoredSegmentationTask``, the
Dice/HD95 bookkeeping of the segmentation tasks.

- the non-finite guards of :mod:`medseg.engine.guards`: a NaN/Inf gradient stops training
  before the optimiser step, and a checkpoint with non-finite weights is never written;
- validation and test wired to two methods each task defines: ``_evaluate(batch, stage)`` per
  batch and ``_log_metrics(stage)`` at the end of the epoch (``stage`` is ``"val"`` or
  ``"test"``; ``_epoch_results(stage)`` computes and resets the stage's metrics).
  Segmentation tasks get both halves of the scoring from :class:`ScoredSegmentationTask`:
  ``_score`` per volume, ``_log_metrics`` per epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule

from medseg.engine.guards import check_finite_gradients, check_finite_weights
from medseg.metrics.segmentation import SegmentationMetrics

__all__ = ["MedsegTask", "ScoredSegmentationTask"]


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

    def _epoch_results(self, stage: str) -> dict[str, Any]:
        """What ``self._metrics[stage]`` accumulated, computed, then reset for the next epoch
        (``{}`` when nothing was scored at that stage)."""
        metrics = getattr(self, "_metrics", {}).get(stage)
        if metrics is None:
            return {}
        result = metrics.compute()
        metrics.reset()
        return result


class ScoredSegmentationTask(MedsegTask):
    """A task scored with :class:`~medseg.metrics.SegmentationMetrics` per stage.

    Subclasses set ``self.hd95`` (bool), ``self.preprocessing`` (dict or None; its ``labels``
    ``{"1": name, ...}`` name the per-class metrics) and ``self._metrics = {}`` in their
    constructor, and call :meth:`_score` from ``_evaluate``. Logged per epoch: ``{stage}/dice``
    (progress bar), ``{stage}/dice_<class name>`` and, with HD95, ``{stage}/hd95``.
    """

    hd95: bool
    preprocessing: dict[str, Any] | None
    _metrics: dict[str, SegmentationMetrics]

    def _score(
        self,
        stage: str,
        pred: torch.Tensor,
        label: torch.Tensor,
        num_classes: int,
        spacing: Sequence[float] | None,
    ) -> None:
        """Add one batch of volumes: ``pred`` logits ``(B, K, ...)`` or class indices
        ``(B, 1, ...)``, ``label`` ``(B, 1, ...)``; ``spacing`` in mm (HD95 in voxels if None)."""
        metrics = self._metrics.get(stage)
        if metrics is None or metrics.num_classes != num_classes:
            metrics = self._metrics[stage] = SegmentationMetrics(num_classes, hd95=self.hd95)
        metrics.update(pred, label, spacing=spacing)

    def _log_metrics(self, stage: str) -> None:
        result = self._epoch_results(stage)
        if not result:
            return
        labels = (self.preprocessing or {}).get("labels") or {}
        dice = result["dice_per_class"]  # (K-1,): background excluded
        names = [labels.get(str(i), f"class{i}") for i in range(1, len(dice) + 1)]
        per_class = zip(names, dice, strict=True)
        values = {f"{stage}/dice_{_slug(n)}": v for n, v in per_class}
        if "hd95" in result:
            values[f"{stage}/hd95"] = result["hd95"]
        self.log(f"{stage}/dice", result["dice"], prog_bar=True, sync_dist=True)
        self.log_dict(values, sync_dist=True)


def _slug(name: str) -> str:
    """A metric-name-safe class name: anything but letters, digits, ``-`` and ``_`` -> ``_``."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name.strip())
