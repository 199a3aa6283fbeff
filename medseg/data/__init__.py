"""LightningDataModules over prepared datasets (``medseg prepare`` output) and MONAI datasets.

The data modules are imported on first use (PEP 562), so the light readers of the prepared
format (:mod:`medseg.data.prepared_files`, :mod:`medseg.data.acdc`) load without Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medseg.data.chunks import SliceChunkDataModule
    from medseg.data.datamodule import CaseLoadError, SegmentationDataModule
    from medseg.data.prepared import PreparedDataModule
    from medseg.data.restoration import RestorationDataModule

__all__ = [
    "CaseLoadError",
    "PreparedDataModule",
    "RestorationDataModule",
    "SegmentationDataModule",
    "SliceChunkDataModule",
]

_HOMES = {
    "CaseLoadError": "medseg.data.datamodule",
    "PreparedDataModule": "medseg.data.prepared",
    "RestorationDataModule": "medseg.data.restoration",
    "SegmentationDataModule": "medseg.data.datamodule",
    "SliceChunkDataModule": "medseg.data.chunks",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'medseg.data' has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
