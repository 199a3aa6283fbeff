"""Restoration losses: RAT's Focal Region Loss (region-weighted L1)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FocalRegionLoss"]


class FocalRegionLoss(nn.Module):
    """L1 re-weighted towards the regions that are restored worst (RAT, MICCAI 2024).

    Per pixel ``l1 = |pred - target|``. The weight map is ``l1`` detached, replaced in every
    image by its mean over each region (all channels and pixels of the region), divided by the
    largest weight in the batch and clamped to ``[0, 1]``; the loss is
    ``mean(l1 * (1 + beta * weight))``. The weight carries no gradient, so the gradient is the
    L1 gradient scaled per region. Regions are computed at full resolution (the region map of
    the output, not the bottleneck one). An all-zero error gives weight 0 (no 0/0).

    Args:
        beta: strength of the re-weighting; 1e-3 in the released training script (``loss_beta``).

    Shapes:
        pred, target: ``(B, C, H, W)``; regions: ``(B, H, W)`` integer ids (any values; the same
        id in two images is unrelated) or ``None``, which gives plain L1 (no region
        information, so no re-weighting) -> scalar.
    """

    def __init__(self, beta: float = 1e-3) -> None:
        super().__init__()
        self.beta = float(beta)

    def forward(self, pred: Tensor, target: Tensor, regions: Tensor | None = None) -> Tensor:
        if pred.shape != target.shape or pred.ndim != 4:
            raise ValueError(
                f"pred and target must be (B, C, H, W) of one shape, got {tuple(pred.shape)} "
                f"and {tuple(target.shape)}"
            )
        l1 = (pred - target).abs()
        if regions is None:
            return l1.mean()
        batch, channels, height, width = l1.shape
        if tuple(regions.shape) != (batch, height, width):
            raise ValueError(
                f"regions must be (B, H, W) = {(batch, height, width)}, got {tuple(regions.shape)}"
            )
        if regions.dtype.is_floating_point or regions.dtype == torch.bool:
            raise ValueError(f"regions must hold integer ids, got dtype {regions.dtype}")
        weight = region_mean(l1.detach().sum(1), regions.to(l1.device)) / channels
        top = weight.max()
        weight = (weight / top).clamp(0.0, 1.0) if top > 0 else torch.zeros_like(weight)
        return (l1 * (1.0 + self.beta * weight[:, None])).mean()


def region_mean(values: Tensor, regions: Tensor) -> Tensor:
    """Replace every value by the mean over its region in its image.

    Args:
        values: ``(B, H, W)`` float; regions: ``(B, H, W)`` integer ids.

    Returns:
        ``(B, H, W)``: per image, each pixel holds the mean of ``values`` over its region.
    """
    batch = values.shape[0]
    _, compact = torch.unique(regions, return_inverse=True)  # ids -> 0..U-1 (all images)
    count = int(compact.max()) + 1
    key = compact.reshape(batch, -1) + count * torch.arange(batch, device=values.device)[:, None]
    key = key.flatten()
    sums = torch.zeros(batch * count, dtype=values.dtype, device=values.device)
    sums.index_add_(0, key, values.flatten())
    sizes = torch.bincount(key, minlength=batch * count).to(values.dtype)
    return (sums[key] / sizes[key]).view_as(values)
