"""Metrics: thin helpers over MONAI (Dice/HD95 for segmentation, PSNR/SSIM for restoration)."""

from medseg.metrics.restoration import RestorationMetrics, psnr, ssim
from medseg.metrics.segmentation import SegmentationMetrics

__all__ = ["RestorationMetrics", "SegmentationMetrics", "psnr", "ssim"]
