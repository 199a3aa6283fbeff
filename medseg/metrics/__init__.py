"""Metrics: thin helpers over MONAI (Dice/HD95 for segmentation, PSNR/SSIM for restoration) and
the numpy :func:`dice` of two masks.

Names load on first use (PEP 562): ``from medseg.metrics import dice`` imports numpy only;
the MONAI-based metrics import torch and MONAI when first asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medseg.metrics.overlap import dice
    from medseg.metrics.restoration import RestorationMetrics, psnr, ssim
    from medseg.metrics.segmentation import SegmentationMetrics

__all__ = ["RestorationMetrics", "SegmentationMetrics", "dice", "psnr", "ssim"]

_HOMES = {
    "RestorationMetrics": "medseg.metrics.restoration",
    "SegmentationMetrics": "medseg.metrics.segmentation",
    "dice": "medseg.metrics.overlap",
    "psnr": "medseg.metrics.restoration",
    "ssim": "medseg.metrics.restoration",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'medseg.metrics' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
