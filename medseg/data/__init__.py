"""LightningDataModules over prepared datasets (``medseg prepare`` output) and MONAI datasets."""

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
