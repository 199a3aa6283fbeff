"""HER-Seg (code: HRMedSeg v1): LGViT linear-attention encoder + prompt-free SAM-style decoder.

FIDELITY.md maps the released code's names (LGViT, ECM decoder, MHRMedSeg) to the v2 paper's
(CE-Encoder, DLA, ME-Decoder, HER-Seg) and lists every choice.
"""

from .attention import GatedLinearAttention, rope_tables
from .decoder import ECMDecoder
from .encoder import LGViT, LGViTBlock, MBConv
from .model import HerSeg, her_seg, tiny

__all__ = [
    "ECMDecoder",
    "GatedLinearAttention",
    "HerSeg",
    "LGViT",
    "LGViTBlock",
    "MBConv",
    "her_seg",
    "rope_tables",
    "tiny",
]
