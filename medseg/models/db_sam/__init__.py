"""DB-SAM (Qin et al., MICCAI 2024): SAM ViT-B frozen + dual-branch (ViT / conv) adapter.

Presets: :func:`db_sam_vit_b` (paper reading), :func:`db_sam_plus` (released "plus"),
:func:`tiny` (CPU tests). :func:`load_sam_weights` loads ``sam_vit_b_01ec64.pth`` strictly.
"""

from .model import DBSAM, db_sam_plus, db_sam_vit_b, tiny
from .weights import load_db_sam, load_sam_weights

__all__ = [
    "DBSAM",
    "db_sam_plus",
    "db_sam_vit_b",
    "load_db_sam",
    "load_sam_weights",
    "tiny",
]
