"""``SliceChunkDataModule``: 3-D training of slice-propagating 2-D nets (SAM2-SGP).

Like :class:`~medseg.data.SegmentationDataModule` in 2-D mode (the same preprocessing, linked to
the 2-D net; validation and test are whole volumes), except that a training sample is a chunk
of ``video_length`` consecutive slices across the slice axis instead of one slice: a 3-D patch
``patch_size`` in-plane x ``video_length`` along ``slice_axis`` (a volume with fewer slices is
zero-padded). Patches are centred on foreground with probability ``pos_fraction``;
augmentation is the 3-D one of :func:`medseg.transforms.preprocess.training_transforms`
(in-plane rotation only for anisotropic spacing; flips may reverse the slice order).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from medseg.data.datamodule import SegmentationDataModule, _fail_fast
from medseg.transforms.preprocess import training_transforms

__all__ = ["SliceChunkDataModule"]


class SliceChunkDataModule(SegmentationDataModule):
    """Training chunks of consecutive slices over a prepared dataset (see the module docstring).

    Args:
        video_length: slices per chunk (SAM2-SGP's ``video_length``; released 3-D: 10).
        prep_dir / fold / patch_size (in-plane) / batch_size / samples_per_volume (chunks per
        volume) / iterations_per_epoch / num_workers / cache_rate / cache_dir / augment /
        pos_fraction / seed / root: as :class:`~medseg.data.SegmentationDataModule` in 2-D mode
        (defaults here: one chunk per volume, 90 % of the chunks centred on foreground).

    Batches: train ``{"image": (B*S, C, *chunk), "label": (B*S, 1, *chunk), "case": [str]}``
    where ``chunk`` is the in-plane patch with ``video_length`` inserted at ``slice_axis``;
    val/test as :class:`~medseg.data.SegmentationDataModule`.
    """

    def __init__(
        self,
        prep_dir: str,
        video_length: int = 8,
        fold: int = 0,
        patch_size: list[int] | None = None,
        batch_size: int = 2,
        samples_per_volume: int = 1,
        iterations_per_epoch: int | None = None,
        num_workers: int = 2,
        cache_rate: float = 1.0,
        cache_dir: str | None = None,
        augment: bool = True,
        pos_fraction: float = 0.9,
        seed: int = 12345,
        root: str | None = None,
    ) -> None:
        if video_length < 1:
            raise ValueError(f"video_length must be >= 1, got {video_length}")
        super().__init__(
            prep_dir,
            fold=fold,
            spatial_dims=2,
            patch_size=patch_size,
            batch_size=batch_size,
            samples_per_volume=samples_per_volume,
            iterations_per_epoch=iterations_per_epoch,
            num_workers=num_workers,
            cache_rate=cache_rate,
            cache_dir=cache_dir,
            augment=augment,
            pos_fraction=pos_fraction,
            seed=seed,
            root=root,
        )
        self.video_length = video_length

    @cached_property
    def chunk_preprocessing(self) -> dict[str, Any]:
        """The 2-D preprocessing with a 3-D training patch (``video_length`` slices thick)."""
        pre = dict(self.preprocessing)
        axis = int(pre["slice_axis"])
        patch = [int(p) for p in pre["patch_size"]]
        pre["spatial_dims"] = 3
        pre["patch_size"] = [*patch[:axis], self.video_length, *patch[axis:]]
        return pre

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", None) and "train" not in self.datasets:
            tf = training_transforms(
                self.chunk_preprocessing,
                augment=self.augment,
                samples_per_volume=self.samples_per_volume,
                pos_fraction=self.pos_fraction,
            )
            tf.set_random_state(seed=self.seed)
            self.datasets["train"] = _fail_fast(lambda: self._cached("train", tf))
        super().setup(stage)

    def _cached(self, split: str, transform: Callable) -> Dataset:
        if split != "train" or not self.cache_dir:
            return super()._cached(split, transform)
        # the cached (padded) training volumes differ from the 2-D ones: their own folder
        cache_dir = self.cache_dir
        self.cache_dir = str(Path(cache_dir) / f"chunks{self.video_length}")
        try:
            return super()._cached(split, transform)
        finally:
            self.cache_dir = cache_dir
