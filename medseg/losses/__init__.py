"""Segmentation losses usable from YAML (MONAI where it has them)."""

from medseg.losses.segmentation import (
    DeepSupervisionLoss,
    default_segmentation_loss,
    nnunet_weights,
)

__all__ = ["DeepSupervisionLoss", "default_segmentation_loss", "nnunet_weights"]
