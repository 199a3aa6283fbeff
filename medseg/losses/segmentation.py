"""Dice + cross-entropy with nnU-Net-style deep supervision (a thin layer over MONAI).

``DeepSupervisionLoss(loss)(outputs, label)`` accepts either one logits tensor or the list a
deeply supervised net returns in training mode, ``[full_res, 1/2 res, 1/4 res, ...]``. Each
output is scored against the label resized to its grid by nearest-neighbour (MONAI's
``"nearest-exact"``, so no half-voxel shift), and the terms are weighted like nnU-Net v2:
``w_i = 1 / 2**i``, the lowest resolution gets 0, and the weights are normalised to sum to 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.losses import DeepSupervisionLoss as _MonaiDeepSupervisionLoss
from monai.losses import DiceCELoss
from torch import nn

__all__ = ["DeepSupervisionLoss", "default_segmentation_loss", "nnunet_weights"]


def default_segmentation_loss() -> nn.Module:
    """nnU-Net's loss in MONAI terms: softmax Dice (foreground classes, batch Dice) + CE.

    ``logits`` ``(B, K, *spatial)``, ``label`` ``(B, 1, *spatial)`` class indices -> scalar.
    """
    return DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)


def nnunet_weights(levels: int) -> list[float]:
    """``[1, 1/2, 1/4, ...]`` with the last (lowest resolution) set to 0, normalised to sum 1.

    A single level gets ``[1.0]``.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if levels == 1:
        return [1.0]
    raw = [0.5**i for i in range(levels)]
    raw[-1] = 0.0
    total = sum(raw)
    return [w / total for w in raw]


class DeepSupervisionLoss(_MonaiDeepSupervisionLoss):
    """Weighted sum of ``loss`` over deep-supervision outputs (nnU-Net weights by default).

    Args:
        loss: the per-output loss; default :func:`default_segmentation_loss`.
        weights: explicit per-level weights (full resolution first); default
            :func:`nnunet_weights`.

    ``forward(outputs, label)``: ``outputs`` logits ``(B, K, *spatial)`` or a list of them at
    decreasing resolution; ``label`` ``(B, 1, *spatial)`` -> scalar loss.
    """

    def __init__(
        self, loss: nn.Module | None = None, weights: Sequence[float] | None = None
    ) -> None:
        super().__init__(
            loss if loss is not None else default_segmentation_loss(),  # type: ignore[arg-type]
            weights=None if weights is None else [float(w) for w in weights],
        )

    def get_weights(self, levels: int = 1) -> list[float]:
        if self.weights is not None:
            if len(self.weights) < levels:
                raise ValueError(f"{len(self.weights)} weights for {levels} outputs")
            return list(self.weights[:levels])
        return nnunet_weights(max(1, levels))

    def forward(
        self, input: torch.Tensor | list[torch.Tensor], target: torch.Tensor
    ) -> torch.Tensor:
        return super().forward(input, target)
