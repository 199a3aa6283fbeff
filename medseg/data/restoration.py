"""``RestorationDataModule``: (degraded, clean) pairs made on the fly from a prepared MSD/ACDC set.

Per case, once (then cached in RAM with the loaded volume): load -> RAS -> one channel ->
:class:`medseg.transforms.pairs.PairedDegradation` seeded by ``(seed, case)`` (2-D: by
``(seed, case, slice)``, slice by slice across the RAS z axis) -> one invertible intensity map
(:mod:`medseg.transforms.intensity`) fitted on the *degraded* volume and applied to both. The
pairs are therefore identical in every run, worker and epoch, like the released codes' offline
pairs, while no degraded copy of the dataset is ever written to disk.

Per training sample (random, reproducible under the module's seed): a slice (2-D) or a patch
(3-D) with its target crop aligned to the scale factor, a random rot90 (2-D, RAT's recipe) or
flips (3-D), and, when a ``partitioner`` is given (RAT), the region map of the degraded slice
(upsampled to the target grid first, as RAT runs SAM on the upsampled input for SR) cropped with
it. Validation: ``val_samples`` evenly spaced whole slices per case (2-D) or one central patch
of twice the training patch (3-D).

Batches: ``{"input": (B, 1, *s), "target": (B, 1, *S), "regions": (B, *S) int64 (RAT only)}``
with ``S = scale * s``.
"""

from __future__ import annotations

import sys
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict
from functools import cached_property
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose, MapTransform, Orientationd, Randomizable
from torch.utils.data import Dataset

from medseg.data.datamodule import _FailFast
from medseg.data.prepared import PreparedDataModule
from medseg.transforms.intensity import fit_intensity, normalise, restoration_scheme
from medseg.transforms.io import LoadVolumed
from medseg.transforms.pairs import PairedDegradation, parse_degradations
from medseg.transforms.preprocess import preprocessing_from_fingerprint

__all__ = ["RegionPartitioner", "RestorationDataModule"]


class RegionPartitioner(Protocol):
    """What RAT needs from a region partitioner (``medseg.inference.regions``): ``(H, W)``
    float image -> ``(H, W)`` integer region ids."""

    def partition(self, image: np.ndarray) -> np.ndarray: ...


class RestorationDataModule(PreparedDataModule):
    """Degraded/clean pairs from ``PREP`` (``medseg prepare``) for one fold.

    Args:
        prep_dir: folder written by ``medseg prepare`` (relative: under ``$MEDSEG_DATA_ROOT``).
        degradations: what to simulate, in order (``medseg.transforms.pairs.parse_degradations``
            forms: dicts, ``"kind:key=value"`` strings), e.g. ``[{kind: downsample, factor: 2}]``.
        fold: cross-validation fold of ``splits.json``.
        spatial_dims: 2 (slices across the RAS z axis, RAT) or 3 (patches, DISGAN).
        patch_size: training target crop (``len == spatial_dims``; multiples of the scale).
        batch_size: volumes per training batch (each gives ``samples_per_volume`` samples).
        samples_per_volume: crops per loaded volume.
        iterations_per_epoch: fixed number of batches per epoch (cases drawn with replacement).
        num_workers: DataLoader workers.
        cache_rate: fraction of cases whose pair is cached in RAM.
        channel: input channel restored (multi-channel MSD tasks).
        val_samples: whole slices per validation case (2-D).
        augment: rot90 (2-D) / flips (3-D) of training crops.
        partitioner: region partitioner (RAT), e.g. ``class_path:
            medseg.inference.regions.KMeansPartitioner``; None = no ``regions`` in batches.
        seed: seeds the degradations and the sampling.
        root: raw data folder replacing ``dataset.json``'s ``root``.
    """

    def __init__(
        self,
        prep_dir: str,
        degradations: list[Any] | str,
        fold: int = 0,
        spatial_dims: int = 2,
        patch_size: list[int] | None = None,
        batch_size: int = 4,
        samples_per_volume: int = 2,
        iterations_per_epoch: int | None = None,
        num_workers: int = 2,
        cache_rate: float = 1.0,
        channel: int = 0,
        val_samples: int = 2,
        augment: bool = True,
        partitioner: RegionPartitioner | None = None,
        seed: int = 12345,
        root: str | None = None,
    ) -> None:
        super().__init__(prep_dir, fold=fold, root=root)
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if batch_size < 1 or samples_per_volume < 1 or val_samples < 1:
            raise ValueError("batch_size, samples_per_volume and val_samples must be >= 1")
        self.degradations = parse_degradations(degradations)
        self.pairing = PairedDegradation(self.degradations, seed=seed)
        if any(d.shrinks_axis is not None for d in self.degradations):
            raise ValueError(
                "thick_slices changes one axis only; the restoration models upsample all axes "
                "alike: use downsample (isotropic) or kspace instead"
            )
        self.spatial_dims = spatial_dims
        self.patch_size = list(patch_size or ([128, 128] if spatial_dims == 2 else [64] * 3))
        scale = self.pairing.scale
        if len(self.patch_size) != spatial_dims or any(p % scale for p in self.patch_size):
            raise ValueError(
                f"patch_size {self.patch_size} needs {spatial_dims} multiples of scale {scale}"
            )
        self.batch_size = batch_size
        self.samples_per_volume = samples_per_volume
        self.iterations_per_epoch = iterations_per_epoch
        self.num_workers = num_workers
        self.cache_rate = cache_rate
        self.channel = channel
        self.val_samples = val_samples
        self.augment = augment
        self.partitioner = partitioner
        self.seed = seed
        self.datasets: dict[str, Dataset] = {}

    @cached_property
    def restoration(self) -> dict[str, Any]:
        """What the task stores in checkpoints so ``medseg restore`` repeats the data path."""
        pre = preprocessing_from_fingerprint(self.fingerprint, self.dataset, 3, [8, 8, 8])
        names = pre["channel_names"]
        if not 0 <= self.channel < len(names):
            raise ValueError(f"channel {self.channel} not in 0..{len(names) - 1} ({names})")
        part = self.partitioner
        return {
            "spatial_dims": self.spatial_dims,
            "scale": self.pairing.scale,
            "degradations": [asdict(d) for d in self.degradations],
            "intensity": restoration_scheme(pre["normalisation"][self.channel]),
            "channel": self.channel,
            "channel_name": names[self.channel],
            "patch_size": self.patch_size,
            "orientation": "RAS",
            "regions": None
            if part is None
            else {
                "name": str(getattr(part, "name", type(part).__name__)),
                "faithful": bool(getattr(part, "faithful", False)),
            },
        }

    # Lightning hooks ---------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ["train", "val"], "validate": ["val"], "test": ["val"], None: ["train"]}
        for split in wanted.get(stage, ["val"]):
            if split in self.datasets:
                continue
            maps = (
                None
                if self.partitioner is None
                else _RegionMaps(self.partitioner, self.pairing.scale)
            )
            head = [
                LoadVolumed("image"),
                Orientationd("image", axcodes="RAS"),
                _MakePair(self.pairing, self.restoration, self.spatial_dims),
            ]
            if split == "train":
                tail = _SampleCrops(
                    self.spatial_dims,
                    self.patch_size,
                    self.pairing.scale,
                    self.samples_per_volume,
                    self.augment,
                    maps,
                )
            else:
                tail = _ValidationCrops(
                    self.spatial_dims,
                    self.patch_size,
                    self.pairing.scale,
                    self.val_samples,
                    maps,
                )
            tf = Compose([*head, tail])
            tf.set_random_state(seed=self.seed)
            progress = sys.stderr.isatty()
            self.datasets[split] = _FailFast(
                CacheDataset(
                    self.cases("train" if split == "train" else "val"),
                    tf,
                    cache_rate=self.cache_rate,
                    num_workers=max(1, self.num_workers),
                    progress=progress,
                )
            )

    def train_dataloader(self) -> DataLoader:
        return self._train_loader(self.datasets["train"])

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["val"], 1)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


class _MakePair(MapTransform):
    """``image`` MetaTensor ``(C, X, Y, Z)`` -> ``input`` ``(1, *lr)`` and ``target``
    ``(1, *hr)`` plain float32 tensors, both normalised with the map fitted on ``input``."""

    def __init__(self, pairing: PairedDegradation, restoration: Mapping[str, Any], dims: int):
        super().__init__(["image"])
        self.pairing, self.restoration, self.dims = pairing, restoration, dims

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d.pop("image")
        clean = torch.as_tensor(image)[self.restoration["channel"]][None].float()  # (1,X,Y,Z)
        case = str(d.get("case", ""))
        if self.dims == 3:
            degraded, target = self.pairing(clean, key=case)
        else:
            pairs = [self.pairing(clean[..., z], key=f"{case}/{z}") for z in range(clean.shape[-1])]
            degraded = torch.stack([p[0] for p in pairs], dim=-1)
            target = torch.stack([p[1] for p in pairs], dim=-1)
        params = fit_intensity(degraded, self.restoration["intensity"])
        d["input"], d["target"] = normalise(degraded, params), normalise(target, params)
        return d


class _RegionMaps:
    """Region ids ``(H, W)`` int64 of each degraded slice, computed once per ``(case, slice)``
    in each process (the pairs are fixed, so the map is too): on the slice upsampled bilinearly
    to the target grid (RAT runs SAM on the upsampled input for SR). Wrap the partitioner in
    ``medseg.inference.regions.RegionCache`` to keep them on disk across runs."""

    def __init__(self, partitioner: RegionPartitioner, scale: int) -> None:
        self.partitioner, self.scale = partitioner, scale
        self._maps: dict[tuple[str, int], torch.Tensor] = {}

    def __call__(self, case: str, z: int, lr_slice: torch.Tensor) -> torch.Tensor:
        key = (case, z)
        if key not in self._maps:
            up = lr_slice[None]
            if self.scale > 1:
                up = F.interpolate(up, scale_factor=self.scale, mode="bilinear")
            ids = np.asarray(self.partitioner.partition(up[0, 0].numpy().astype(np.float32)))
            self._maps[key] = torch.as_tensor(ids.astype(np.int32))
        return self._maps[key].long()


class _SampleCrops(Randomizable, MapTransform):
    """Random training crops (module docstring); returns a list of ``n`` sample dicts."""

    def __init__(
        self,
        dims: int,
        patch: Sequence[int],
        scale: int,
        n: int,
        augment: bool,
        maps: _RegionMaps | None,
    ) -> None:
        MapTransform.__init__(self, ["input", "target"])
        self.dims, self.patch, self.scale, self.n = dims, list(patch), scale, n
        self.augment, self.maps = augment, maps

    def randomize(self, data: Any = None) -> None:  # draws happen in __call__
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[str, Any]]:
        lr, hr = data["input"], data["target"]
        out = []
        for _ in range(self.n):
            if self.dims == 2:
                z = int(self.R.randint(hr.shape[-1]))
                x, y = lr[..., z], hr[..., z]
                case = str(data.get("case", ""))
                regions = None if self.maps is None else self.maps(case, z, x)
            else:
                x, y, regions = lr, hr, None
            x, y, regions = self._crop(x, y, regions)
            if self.augment:
                x, y, regions = self._augment(x, y, regions)
            sample = {"input": x.contiguous(), "target": y.contiguous()}
            if regions is not None:
                sample["regions"] = regions.contiguous()
            out.append(sample)
        return out

    def _crop(self, x, y, regions):
        s = self.scale
        lr_patch = [p // s for p in self.patch]
        x = _pad_to(x, lr_patch)
        y = _pad_to(y, self.patch)
        starts = [
            int(self.R.randint(n - p + 1)) for n, p in zip(x.shape[1:], lr_patch, strict=False)
        ]
        lr_sl = tuple(slice(a, a + p) for a, p in zip(starts, lr_patch, strict=False))
        hr_sl = tuple(slice(a * s, a * s + p) for a, p in zip(starts, self.patch, strict=False))
        if regions is not None:
            regions = _pad_to(regions[None], self.patch)[0][hr_sl]
        return x[(slice(None), *lr_sl)], y[(slice(None), *hr_sl)], regions

    def _augment(self, x, y, regions):
        if self.dims == 2:
            k = int(self.R.randint(4))
            x, y = torch.rot90(x, k, (1, 2)), torch.rot90(y, k, (1, 2))
            if regions is not None:
                regions = torch.rot90(regions, k, (0, 1))
            return x, y, regions
        axes = [a + 1 for a in range(3) if self.R.rand() < 0.5]
        return (x.flip(axes), y.flip(axes), regions) if axes else (x, y, regions)


class _ValidationCrops(MapTransform):
    """Deterministic validation samples (module docstring); returns a list of dicts."""

    def __init__(self, dims, patch, scale, n, maps: _RegionMaps | None) -> None:
        super().__init__(["input", "target"])
        self.dims, self.patch, self.scale, self.n, self.maps = dims, patch, scale, n, maps

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[str, Any]]:
        lr, hr = data["input"], data["target"]
        if self.dims == 3:
            s = self.scale
            size = [min(2 * p // s, n) for p, n in zip(self.patch, lr.shape[1:], strict=False)]
            starts = [(n - p) // 2 for n, p in zip(lr.shape[1:], size, strict=False)]
            lr_sl = tuple(slice(a, a + p) for a, p in zip(starts, size, strict=False))
            hr_sl = tuple(slice(a * s, (a + p) * s) for a, p in zip(starts, size, strict=False))
            return [{"input": lr[(slice(None), *lr_sl)], "target": hr[(slice(None), *hr_sl)]}]
        depth = hr.shape[-1]
        picks = np.linspace(depth * 0.25, depth * 0.75, self.n).round().astype(int)
        out = []
        for z in sorted(set(int(min(max(p, 0), depth - 1)) for p in picks)):
            sample = {"input": lr[..., z].contiguous(), "target": hr[..., z].contiguous()}
            if self.maps is not None:
                sample["regions"] = self.maps(str(data.get("case", "")), z, lr[..., z])
            out.append(sample)
        return out


def _pad_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad the trailing spatial axes of ``(C, *S)`` up to ``size`` where smaller."""
    pad = []
    for n, p in zip(reversed(x.shape[1:]), reversed(list(size)), strict=False):
        pad += [0, max(p - n, 0)]
    return F.pad(x, pad) if any(pad) else x
