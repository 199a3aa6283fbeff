"""HER-Seg's training loss (released code: ``loss.py: BinaryMaskLoss(weight=0.8)``).

``loss = 0.8 * (1 - Dice) + 0.2 * 0.8 * (1 - exp(-BCE)) ** 2 * BCE`` on sigmoid probabilities,
where Dice is the soft Dice over the whole batch (smooth 1) and BCE the *mean* binary
cross-entropy: the "focal" factor is applied once to the mean, not per pixel.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["HerSegLoss"]


class HerSegLoss(nn.Module):
    """Batch-global soft Dice + focal-weighted mean BCE on per-channel sigmoid probabilities.

    Args:
        weight: Dice share; the focal term gets ``1 - weight`` (0.8 in the code).
        alpha: focal scale (0.8 in the code).
        gamma: focal exponent (2 in the code).
        smooth: Dice smoothing (1 in the code).
        include_background: for ``K > 1`` logits, score the one-hot label's channel 0 too
            (default: an arg-max prediction needs a trained background channel). Ignored for
            ``K = 1``, whose target is ``label > 0``.

    ``forward(logits, label)``: logits ``(B, K, *spatial)`` (one sigmoid mask per channel),
    label ``(B, 1, *spatial)`` class indices -> scalar. For ``K > 1`` the target is
    ``one_hot(label, K)``; Dice is computed per channel over the whole batch and averaged over
    the channels; BCE is the mean over every scored element. Computed in float32 from the
    logits (``binary_cross_entropy_with_logits``: stable, and allowed under autocast).
    """

    def __init__(
        self,
        weight: float = 0.8,
        alpha: float = 0.8,
        gamma: float = 2.0,
        smooth: float = 1.0,
        include_background: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        self.weight, self.alpha, self.gamma, self.smooth = weight, alpha, gamma, smooth
        self.include_background = include_background

    def forward(self, logits: Tensor, label: Tensor) -> Tensor:
        if isinstance(logits, (list, tuple)):
            raise TypeError("HerSegLoss takes one logits tensor (no deep supervision)")
        if label.ndim != logits.ndim or label.shape[1] != 1 or label.shape[2:] != logits.shape[2:]:
            raise ValueError(
                f"expected label (B, 1, *spatial) matching logits {tuple(logits.shape)}, "
                f"got {tuple(label.shape)}"
            )
        k = logits.shape[1]
        logits = logits.float()
        if k == 1:
            target = (label > 0).float()
        else:
            target = F.one_hot(label[:, 0].long(), k).movedim(-1, 1).float()
            if not self.include_background:
                logits, target = logits[:, 1:], target[:, 1:]
        prob = torch.sigmoid(logits)
        dims = [0, *range(2, logits.ndim)]  # everything but the channel: batch-global
        inter = (prob * target).sum(dims)
        dice = (2.0 * inter + self.smooth) / (prob.sum(dims) + target.sum(dims) + self.smooth)
        bce = F.binary_cross_entropy_with_logits(logits, target)
        focal = self.alpha * (1.0 - torch.exp(-bce)) ** self.gamma * bce
        return self.weight * (1.0 - dice.mean()) + (1.0 - self.weight) * focal
