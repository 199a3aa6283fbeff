"""WAU (BIBM 2022, "More than Encoder"): a U-Net with Window Attention Upsample decoder steps.

No public code exists; FIDELITY.md lists what follows the abstract and every choice that is ours.
"""

from .model import WAU, tiny, wau_base
from .upsample import WindowAttentionUpsample

__all__ = ["WAU", "WindowAttentionUpsample", "tiny", "wau_base"]
