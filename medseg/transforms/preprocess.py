"""One description of preprocessing, shared by training, validation and inference.

:func:`preprocessing_from_fingerprint` turns ``fingerprint.json`` + ``dataset.json`` (written by
``medseg prepare``) into a small plain dict that travels in checkpoints (``SegmentationTask``
hyper-parameters), so a predictor rebuilds exactly the pipeline the net was trained with::

    {
      "spatial_dims": 2 | 3,            # network dimensionality
      "target_spacing": [x, y, z],      # mm, RAS voxel axes
      "orientation": "RAS",
      "channel_names": ["MRI", ...],    # input channels, in order
      "normalisation": [{"scheme": "ct", "clip": [lo, hi], "mean": m, "std": s}
                        | {"scheme": "zscore"}, ...],   # one per channel
      "labels": {"0": "background", "1": "RV", ...},
      "patch_size": [...],              # len == spatial_dims; 2-D: the axes other than slice_axis
      "slice_axis": 0 | 1 | 2,          # lowest-resolution axis (2-D nets see slices across it)
    }

Pipelines (MONAI dictionary transforms, keys ``"image"`` and ``"label"``):

- :func:`inference_transforms`: ``LoadVolumed`` -> ``Orientationd("RAS")`` -> ``Spacingd``
  (image bilinear, label nearest) -> :class:`NormaliseIntensityd`. Invertible with
  ``monai.transforms.Invertd`` (the spatial steps are recorded on the MetaTensor), which puts a
  prediction back on the input grid.
- :func:`training_transforms`: the same deterministic head (+ ``CropForegroundd`` on non-zero
  voxels and padding to the patch), then foreground-balanced ``RandCropByPosNegLabeld`` patches;
  2-D: patches one voxel thick across ``slice_axis``, squeezed to ``(C, P, Q)``; then optional
  spatial (flip, rotation/scale) and intensity (noise, scale, shift, contrast) augmentation.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    MapTransform,
    Orientationd,
    RandAdjustContrastd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    Spacingd,
    SpatialPadd,
    SqueezeDimd,
)

from medseg.transforms.io import LoadVolumed

__all__ = [
    "NormaliseIntensityd",
    "inference_transforms",
    "preprocessing_from_fingerprint",
    "training_transforms",
]

SCHEMES = ("ct", "zscore")
PATCH_MULTIPLE = 16
MAX_PATCH_2D = 512
ANISOTROPY = 3.0


def preprocessing_from_fingerprint(
    fingerprint: Mapping[str, Any],
    dataset: Mapping[str, Any],
    spatial_dims: int | None = None,
    patch_size: Sequence[int] | None = None,
) -> dict[str, Any]:
    """The preprocessing dict (module docstring) for ``fingerprint.json`` + ``dataset.json``.

    Args:
        fingerprint: parsed ``fingerprint.json``.
        dataset: parsed ``dataset.json`` (``labels``, ``channel_names`` or ``modality``).
        spatial_dims: 2 or 3; ``None`` uses the fingerprint's recommendation.
        patch_size: overrides the fingerprint's patch (``len == spatial_dims``). Without it, a
            2-D patch for a 3-D fingerprint is the in-plane median shape rounded up to 16 (at
            most 512); a 3-D patch for a 2-D fingerprint must be given.

    Raises:
        ValueError: inconsistent or missing fields (the message names the field).
    """
    dims = int(spatial_dims if spatial_dims is not None else fingerprint["spatial_dims"])
    if dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {dims}")
    spacing = [float(s) for s in fingerprint["target_spacing"]]
    if len(spacing) != 3 or not all(s > 0 and math.isfinite(s) for s in spacing):
        raise ValueError(f"fingerprint target_spacing must be 3 positive numbers, got {spacing}")
    slice_axis = fingerprint.get("slice_axis")
    if slice_axis is None:  # coarsest axis, ties go to the last axis
        slice_axis = max(range(3), key=lambda i: (spacing[i], i))
    slice_axis = int(slice_axis)
    channels = list(dataset.get("channel_names") or [])
    if not channels:
        modality = dataset.get("modality", {})
        channels = [modality[k] for k in sorted(modality, key=int)]
    norm = [dict(n) for n in fingerprint["normalisation"]]
    if len(norm) != len(channels):
        raise ValueError(
            f"fingerprint normalisation has {len(norm)} entries for {len(channels)} channels"
        )
    for n in norm:
        if n.get("scheme") not in SCHEMES:
            raise ValueError(f"unknown normalisation scheme {n.get('scheme')!r} (use {SCHEMES})")
        if n["scheme"] == "ct" and not {"clip", "mean", "std"} <= set(n):
            raise ValueError(f"ct normalisation needs clip, mean and std, got {sorted(n)}")
    labels = {str(k): str(v) for k, v in dataset["labels"].items()}
    if sorted(int(k) for k in labels) != list(range(len(labels))) or len(labels) < 2:
        raise ValueError(f"labels must be numbered 0..K-1 (K >= 2), got {sorted(labels)}")
    return {
        "spatial_dims": dims,
        "target_spacing": spacing,
        "orientation": "RAS",
        "channel_names": channels,
        "normalisation": norm,
        "labels": labels,
        "patch_size": _patch_size(fingerprint, dims, slice_axis, patch_size),
        "slice_axis": slice_axis,
    }


def _patch_size(
    fingerprint: Mapping[str, Any], dims: int, slice_axis: int, override: Sequence[int] | None
) -> list[int]:
    if override is not None:
        patch = [int(p) for p in override]
        if len(patch) != dims or min(patch) < 1:
            raise ValueError(f"patch_size must be {dims} positive ints, got {list(override)}")
        return patch
    planned = [int(p) for p in fingerprint.get("patch_size", [])]
    if len(planned) == dims:
        return planned
    if dims == 3:
        raise ValueError("the fingerprint plans a 2-D patch; pass patch_size for 3-D training")
    shape = fingerprint.get("shape_median")
    if shape is not None:
        inplane = [int(s) for i, s in enumerate(shape) if i != slice_axis]
        up = [PATCH_MULTIPLE * math.ceil(s / PATCH_MULTIPLE) for s in inplane]
        return [min(MAX_PATCH_2D, p) for p in up]
    return [p for i, p in enumerate(planned) if i != slice_axis]


class NormaliseIntensityd(MapTransform):
    """Per-channel intensity normalisation from the fingerprint (nnU-Net's two schemes).

    - ``{"scheme": "ct", "clip": [lo, hi], "mean": m, "std": s}``: clip to ``[lo, hi]``, then
      ``(x - m) / s`` with dataset statistics.
    - ``{"scheme": "zscore"}``: per-case z-score over the non-zero voxels of that channel; zero
      voxels (outside the scanned/skull-stripped region) stay 0. A channel with fewer than two
      non-zero voxels uses all voxels.

    ``d[key]``: ``(C, *spatial)`` float tensor -> same shape and type (MetaTensor kept).
    """

    def __init__(
        self, keys: Any, schemes: Sequence[Mapping[str, Any]], allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.schemes = [dict(s) for s in schemes]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.shape[0] != len(self.schemes):
                raise ValueError(
                    f"{key}: {img.shape[0]} channels but {len(self.schemes)} normalisation entries"
                )
            out = img.clone().float()
            for c, scheme in enumerate(self.schemes):
                out[c] = _normalise_channel(torch.as_tensor(img[c]).float(), scheme)
            d[key] = out
        return d


def _normalise_channel(x: torch.Tensor, scheme: Mapping[str, Any]) -> torch.Tensor:
    if scheme["scheme"] == "ct":
        lo, hi = (float(v) for v in scheme["clip"])
        return (x.clamp(lo, hi) - float(scheme["mean"])) / max(float(scheme["std"]), 1e-8)
    mask = x != 0
    if int(mask.sum()) < 2:
        mask = torch.ones_like(x, dtype=torch.bool)
    vals = x[mask]
    mean, std = vals.mean(), vals.std()
    out = torch.zeros_like(x)
    out[mask] = (vals - mean) / std.clamp_min(1e-8)
    return out


def _nonzero(x: torch.Tensor) -> torch.Tensor:
    """``CropForegroundd`` selector: any non-zero voxel (module level so it pickles)."""
    return x != 0


def _head(pre: Mapping[str, Any], keys: list[str]) -> list[Any]:
    """Load -> RAS -> target spacing (labels nearest)."""
    modes = ["nearest" if k == "label" else "bilinear" for k in keys]
    return [
        LoadVolumed(keys, classes=range(len(pre["labels"]))),
        Orientationd(keys, axcodes=pre.get("orientation", "RAS"), labels=None),
        Spacingd(keys, pixdim=pre["target_spacing"], mode=modes),
    ]


def inference_transforms(
    preprocessing: Mapping[str, Any], *, label_key: str | None = None
) -> Compose:
    """Deterministic, invertible pipeline: ``{"image": path[, label_key: path]}`` ->
    ``image`` MetaTensor ``(C, X', Y', Z')`` on the RAS target-spacing grid (``label`` likewise,
    ``(1, X', Y', Z')``, nearest). Invert a prediction with
    ``Invertd(keys="pred", transform=<this Compose>, orig_keys="image")``.
    """
    keys = ["image"] if label_key is None else ["image", label_key]
    return Compose(
        [
            *_head(preprocessing, keys),
            NormaliseIntensityd("image", preprocessing["normalisation"]),
        ]
    )


def training_transforms(
    preprocessing: Mapping[str, Any],
    *,
    augment: bool,
    samples_per_volume: int = 2,
    pos_fraction: float = 1 / 3,
) -> Compose:
    """Training pipeline: ``{"image": path, "label": path}`` -> a list of ``samples_per_volume``
    patch dicts (use MONAI's ``list_data_collate``):

    - 3-D: ``image`` ``(C, *patch_size)``, ``label`` ``(1, *patch_size)``;
    - 2-D: slices across ``slice_axis``: ``image`` ``(C, P, Q)``, ``label`` ``(1, P, Q)``.

    A fraction ``pos_fraction`` of patches is centred on foreground (nnU-Net oversamples a third).
    Everything before the first random transform is deterministic, so ``CacheDataset`` /
    ``PersistentDataset`` cache the resampled, cropped, normalised volume.
    """
    if not 0.0 <= pos_fraction <= 1.0:
        raise ValueError(f"pos_fraction must be in [0, 1], got {pos_fraction}")
    keys = ["image", "label"]
    dims = int(preprocessing["spatial_dims"])
    axis = int(preprocessing["slice_axis"])
    patch = [int(p) for p in preprocessing["patch_size"]]
    if dims == 2:
        crop = patch[:axis] + [1] + patch[axis:]
        pad = patch[:axis] + [-1] + patch[axis:]
    else:
        crop = pad = patch
    steps: list[Any] = [
        *_head(preprocessing, keys),
        CropForegroundd(
            keys,
            source_key="image",
            select_fn=_nonzero,
            allow_smaller=True,
            start_coord_key=None,
            end_coord_key=None,
        ),
        NormaliseIntensityd("image", preprocessing["normalisation"]),
        SpatialPadd(keys, spatial_size=pad),
        RandCropByPosNegLabeld(
            keys,
            label_key="label",
            spatial_size=crop,
            pos=pos_fraction,
            neg=1.0 - pos_fraction,
            num_samples=samples_per_volume,
        ),
    ]
    if dims == 2:
        steps.append(SqueezeDimd(keys, dim=axis + 1))
    if augment:
        steps += _augmentations(dims, preprocessing["target_spacing"], axis)
    steps.append(EnsureTyped(keys, dtype=torch.float32, track_meta=False))
    return Compose(steps)


def _augmentations(dims: int, spacing: Sequence[float], axis: int) -> list[Any]:
    """nnU-Net-like spatial + intensity augmentation for ``dims``-D patches."""
    keys = ["image", "label"]
    if dims == 2:
        rotate: list[float] = [math.pi]
    elif max(spacing) > ANISOTROPY * min(spacing):  # anisotropic: rotate in-plane only
        rotate = [math.pi / 6 if i == axis else 0.0 for i in range(3)]
    else:
        rotate = [math.pi / 6] * 3
    return [
        RandAffined(
            keys,
            prob=0.2,
            rotate_range=rotate,
            scale_range=[0.3] * dims,
            mode=["bilinear", "nearest"],
            padding_mode="zeros",
        ),
        *[RandFlipd(keys, prob=0.5, spatial_axis=i) for i in range(dims)],
        RandGaussianNoised("image", prob=0.1, std=0.1),
        RandScaleIntensityd("image", factors=0.25, prob=0.15),
        RandShiftIntensityd("image", offsets=0.1, prob=0.15),
        RandAdjustContrastd("image", prob=0.15, gamma=(0.7, 1.5), retain_stats=True),
    ]


def describe(preprocessing: Mapping[str, Any]) -> str:
    """One line for logs: ``2-D, 1.5x1.5x10 mm, patch 224x224, 4 classes, 1 channel``."""
    sp = "x".join(f"{s:g}" for s in preprocessing["target_spacing"])
    patch = "x".join(str(p) for p in preprocessing["patch_size"])
    return (
        f"{preprocessing['spatial_dims']}-D, {sp} mm, patch {patch}, "
        f"{len(preprocessing['labels'])} classes, {len(preprocessing['channel_names'])} channel(s)"
    )
