"""DISGAN (ICCV 2023 Workshops): 3D MRI x2 super-resolution GAN with a wavelet-informed U-Net
discriminator. FIDELITY.md lists what follows the paper, the released code, and our choices.
"""

from .discriminator import DWTUNetDiscriminator
from .dwt import haar_dwt3d, haar_idwt3d
from .features import ResNet10Features
from .generator import PixelShuffle3d, RRDBGenerator
from .model import DISGAN, disgan, tiny

__all__ = [
    "DISGAN",
    "DWTUNetDiscriminator",
    "PixelShuffle3d",
    "RRDBGenerator",
    "ResNet10Features",
    "disgan",
    "haar_dwt3d",
    "haar_idwt3d",
    "tiny",
]
