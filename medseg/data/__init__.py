"""LightningDataModules over prepared datasets (``medseg prepare`` output) and MONAI datasets."""

from medseg.data.datamodule import CaseLoadError, SegmentationDataModule

__all__ = ["CaseLoadError", "SegmentationDataModule"]
