"""U-Net baseline: MONAI's residual UNet with a typed, keyword-only signature and presets."""

from .model import UNet, tiny, unet

__all__ = ["UNet", "tiny", "unet"]
