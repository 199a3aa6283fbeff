"""Segmentation losses usable from YAML (MONAI where it has them)."""

from medseg.losses.her_seg import HerSegLoss
from medseg.losses.segmentation import (
    DeepSupervisionLoss,
    default_segmentation_loss,
    nnunet_weights,
)

__all__ = ["DeepSupervisionLoss", "HerSegLoss", "default_segmentation_loss", "nnunet_weights"]
