"""GAN losses for DISGAN-style super-resolution: relativistic-average BCE, a frozen-feature L1,
and the instance-noise schedule.

Follows the released DISGAN ``GAN.training_step`` (wqlevi/DISGAN ``mains/ln_DDP_train.py``):
the discriminator emits a logit map ``(B, 1, D, H, W)``; "average" is the mean over the batch
dimension only (per voxel, ``mean(0, keepdim=True)``), and BCE-with-logits is averaged over
every element. The generator term has only the fake half (no symmetric real term), as released.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FeatureLoss",
    "instance_noise_sigma",
    "ragan_discriminator_loss",
    "ragan_generator_loss",
]


def ragan_generator_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """Relativistic-average generator loss ``BCE(D(SR) - mean_B D(HR), 1)``.

    ``d_real`` is treated as a constant (detached), as in the released code; the gradient goes
    through ``d_fake`` only.

    Args:
        d_real: discriminator logits on real (HR) inputs, ``(B, ...)``.
        d_fake: logits on generated (SR) inputs, same shape.

    Returns:
        scalar loss.
    """
    _check(d_real, d_fake)
    relative = d_fake - d_real.detach().mean(0, keepdim=True)
    return F.binary_cross_entropy_with_logits(relative, torch.ones_like(relative))


def ragan_discriminator_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """Relativistic-average discriminator loss
    ``(BCE(D(HR) - mean_B D(SR), 1) + BCE(D(SR) - mean_B D(HR), 0)) / 2``.

    Pass ``d_fake`` computed on a detached SR so the generator receives no gradient.

    Args:
        d_real: logits on real inputs, ``(B, ...)``.
        d_fake: logits on generated inputs, same shape.

    Returns:
        scalar loss (gradient reaches both logit maps).
    """
    _check(d_real, d_fake)
    real = d_real - d_fake.mean(0, keepdim=True)
    fake = d_fake - d_real.mean(0, keepdim=True)
    loss_real = F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
    loss_fake = F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
    return (loss_real + loss_fake) / 2


class FeatureLoss(nn.Module):
    """L1 distance between ``extractor(sr)`` and ``extractor(hr)``.

    The HR features are computed under ``torch.no_grad``; the gradient reaches ``sr`` through
    the extractor (freeze the extractor yourself, or use a frozen one such as DISGAN's
    ``ResNet10Features``). The extractor is a submodule, so it moves with ``.to()``.

    Shapes:
        sr, hr: ``(B, C, D, H, W)`` -> scalar.
    """

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        if sr.shape != hr.shape:
            raise ValueError(f"sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ in shape")
        with torch.no_grad():
            target = self.extractor(hr)
        return F.l1_loss(self.extractor(sr), target)


def instance_noise_sigma(epoch: int, max_epochs: int) -> float:
    """Standard deviation of the instance noise added to both discriminator inputs.

    Linear from 1 at epoch 0 to 0 at the last epoch: ``max(0, 1 - epoch / (max_epochs - 1))``
    (0 when ``max_epochs == 1``). The released code uses ``1 - epoch / max_epochs``, whose
    last epoch still has ``1 / max_epochs``; ours ends on clean inputs.

    Args:
        epoch: 0-based current epoch.
        max_epochs: total number of epochs (>= 1).

    Raises:
        ValueError: ``max_epochs < 1`` or ``epoch < 0``.
    """
    if max_epochs < 1 or epoch < 0:
        raise ValueError(f"need max_epochs >= 1 and epoch >= 0, got {epoch=}, {max_epochs=}")
    if max_epochs == 1:
        return 0.0
    return max(0.0, 1.0 - epoch / (max_epochs - 1))


def _check(d_real: Tensor, d_fake: Tensor) -> None:
    if d_real.shape != d_fake.shape:
        raise ValueError(
            f"d_real {tuple(d_real.shape)} and d_fake {tuple(d_fake.shape)} differ in shape"
        )
