"""SAM2-SGP (Xing et al., arXiv 2506.19658): SAM2 + LoRA + support-set guided prompting.

Presets: :func:`sam2_sgp_hiera_s` (paper), :func:`sam2_sgp_hiera_t`, :func:`tiny` (CPU tests).
:func:`load_sam2_weights` loads official SAM2 checkpoints strictly.
"""

from .model import SAM2SGP, sam2_sgp_hiera_s, sam2_sgp_hiera_t, tiny
from .support import Features, Support, box_from_logits, select_supports
from .weights import load_sam2_weights

__all__ = [
    "SAM2SGP",
    "Features",
    "Support",
    "box_from_logits",
    "load_sam2_weights",
    "sam2_sgp_hiera_s",
    "sam2_sgp_hiera_t",
    "select_supports",
    "tiny",
]
