"""Segmentation losses usable from YAML (MONAI where it has them)."""

from medseg.losses.adversarial import (
    FeatureLoss,
    instance_noise_sigma,
    ragan_discriminator_loss,
    ragan_generator_loss,
)
from medseg.losses.her_seg import HerSegLoss
from medseg.losses.restoration import FocalRegionLoss
from medseg.losses.segmentation import (
    DeepSupervisionLoss,
    default_segmentation_loss,
    nnunet_weights,
)

__all__ = [
    "DeepSupervisionLoss",
    "FeatureLoss",
    "FocalRegionLoss",
    "HerSegLoss",
    "default_segmentation_loss",
    "instance_noise_sigma",
    "nnunet_weights",
    "ragan_discriminator_loss",
    "ragan_generator_loss",
]
