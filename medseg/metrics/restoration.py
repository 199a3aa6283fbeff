"""Restoration metrics: PSNR and SSIM through MONAI, per image, with the data range of the
reference image (``max - min`` of the clean target, as DISGAN's evaluation and BasicSR's float
variant do), averaged over the images seen since the last :meth:`reset`."""

from __future__ import annotations

import math

import torch
from monai.metrics import PSNRMetric, SSIMMetric

__all__ = ["RestorationMetrics", "psnr", "ssim"]

SSIM_WINDOW = 11  # MONAI's default Gaussian kernel; smaller images get no SSIM (nan)


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of one image ``(C, *S)`` against its reference (data range of ``target``)."""
    rng = float(target.max() - target.min()) or 1.0
    value = PSNRMetric(max_val=rng, reduction="mean")(pred[None].float(), target[None].float())
    return float(value.mean())


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """SSIM of one image ``(C, *S)`` (2-D or 3-D) against its reference; nan when a spatial
    side is shorter than the 11-voxel Gaussian window."""
    if min(target.shape[1:]) < SSIM_WINDOW:
        return math.nan
    rng = float(target.max() - target.min()) or 1.0
    metric = SSIMMetric(spatial_dims=target.ndim - 1, data_range=rng, reduction="mean")
    return float(metric(pred[None].float(), target[None].float()).mean())


class RestorationMetrics:
    """Running means of PSNR/SSIM of the restored images and of the degraded inputs (brought to
    the target grid), so every report carries its baseline."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._values: dict[str, list[float]] = {}

    def update(self, pred: torch.Tensor, target: torch.Tensor, baseline: torch.Tensor) -> None:
        """``pred``, ``target``, ``baseline``: ``(B, C, *S)`` batches on the same grid."""
        for p, t, b in zip(pred.detach(), target.detach(), baseline.detach(), strict=True):
            for name, value in (
                ("psnr", psnr(p, t)),
                ("ssim", ssim(p, t)),
                ("psnr_input", psnr(b, t)),
                ("ssim_input", ssim(b, t)),
            ):
                if math.isfinite(value):
                    self._values.setdefault(name, []).append(value)

    def compute(self) -> dict[str, float]:
        """Means per metric, plus ``psnr_gain`` = ``psnr - psnr_input`` (dB)."""
        out = {k: sum(v) / len(v) for k, v in self._values.items() if v}
        if "psnr" in out and "psnr_input" in out:
            out["psnr_gain"] = out["psnr"] - out["psnr_input"]
        return out
