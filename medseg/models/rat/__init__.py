"""RAT (MICCAI 2024): Region Attention Transformer for 2D medical image restoration.

Region partitions (e.g. SAM masks of the degraded input) are made outside the net, see
:mod:`medseg.inference.regions`; FIDELITY.md lists what follows the released code.
"""

from .blocks import BasicLayer, NAFBlock, RegionAttention, WindowAttention
from .model import RAT, rat, tiny

__all__ = ["RAT", "BasicLayer", "NAFBlock", "RegionAttention", "WindowAttention", "rat", "tiny"]
