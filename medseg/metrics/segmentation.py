"""Per-class Dice and 95th-percentile Hausdorff distance over whole volumes.

Conventions (stated once, used by every task):

- Background (class 0) is excluded. Scores are computed per volume and class, then averaged over
  volumes per class (``dice_per_class``), then over classes (``dice``).
- A class absent from both prediction and reference in a volume is skipped for that volume
  (NaN, ignored in the means) rather than counted as a perfect score.
- HD95 is in millimetres when ``spacing`` is given (voxels otherwise). A class present in the
  reference but missing from the prediction (or the reverse) has no finite distance; it scores
  the volume's diagonal, the worst possible value, instead of ``inf`` (which would poison every
  mean).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric
from monai.networks.utils import one_hot

__all__ = ["SegmentationMetrics"]


class SegmentationMetrics:
    """Accumulate Dice and HD95 over volumes, then :meth:`compute`.

    Args:
        num_classes: K, including background.
        hd95: also compute HD95 (a distance transform per volume and class; costs time).
    """

    def __init__(self, num_classes: int, *, hd95: bool = True) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.hd95 = hd95
        self._dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
        self._hd = HausdorffDistanceMetric(
            include_background=False, percentile=95, reduction="none"
        )
        self._dice_rows: list[torch.Tensor] = []
        self._hd_rows: list[torch.Tensor] = []

    def update(
        self,
        prediction: torch.Tensor,
        label: torch.Tensor,
        spacing: Sequence[float] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Score a batch of volumes.

        Args:
            prediction: logits/probabilities ``(B, K, *spatial)`` (arg-maxed here) or class
                indices ``(B, 1, *spatial)``.
            label: class indices ``(B, 1, *spatial)``.
            spacing: voxel size in mm per spatial axis (HD95 in mm).

        Returns:
            ``{"dice": (B, K-1), "hd95": (B, K-1)}`` for this batch (NaN = class absent).
        """
        if prediction.shape[1] == self.num_classes and self.num_classes > 1:
            prediction = prediction.argmax(dim=1, keepdim=True)
        pred = one_hot(prediction.long(), self.num_classes, dim=1)
        ref = one_hot(label.long(), self.num_classes, dim=1)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(empty|all 0|nan|inf).*")
            warnings.simplefilter("ignore", FutureWarning)  # MONAI-internal deprecations
            dice = self._dice(pred, ref).detach().float().cpu()
            out = {"dice": dice}
            if self.hd95:
                hd = self._hd(pred, ref, spacing=_spacing(spacing)).detach().float().cpu()
                # one side empty: MONAI gives inf or NaN; score the worst case instead
                p_any = pred[:, 1:].flatten(2).any(-1).cpu()
                r_any = ref[:, 1:].flatten(2).any(-1).cpu()
                worst = torch.isinf(hd) | (p_any ^ r_any)
                hd = torch.where(worst, _diagonal(pred.shape[2:], spacing), hd)
                out["hd95"] = hd
        self._dice_rows.append(dice)
        if self.hd95:
            self._hd_rows.append(out["hd95"])
        self._dice.reset()
        self._hd.reset()
        return out

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"dice": (), "dice_per_class": (K-1,), "hd95": (), "hd95_per_class": (K-1,)}``.

        Means ignore NaN; a class never scored is NaN (and left out of ``dice``).
        """
        result = {}
        for name, rows in (("dice", self._dice_rows), ("hd95", self._hd_rows)):
            if not rows:
                continue
            table = torch.cat(rows)
            per_class = torch.nanmean(table, dim=0)
            result[f"{name}_per_class"] = per_class
            result[name] = torch.nanmean(per_class)
        return result

    def reset(self) -> None:
        self._dice_rows.clear()
        self._hd_rows.clear()


def _spacing(spacing: Sequence[float] | None) -> list[float] | None:
    return None if spacing is None else [float(s) for s in spacing]


def _diagonal(shape: Sequence[int], spacing: Sequence[float] | None) -> torch.Tensor:
    sp = [1.0] * len(shape) if spacing is None else [float(s) for s in spacing]
    return torch.tensor(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, sp, strict=True))))
