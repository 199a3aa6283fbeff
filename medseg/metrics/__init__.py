"""Segmentation metrics: thin helpers over MONAI ``DiceMetric`` / ``HausdorffDistanceMetric``."""

from medseg.metrics.segmentation import SegmentationMetrics

__all__ = ["SegmentationMetrics"]
