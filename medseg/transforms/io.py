"""``LoadVolumed``: MONAI's door to :func:`medseg.io.load_volume` (the only way files are read).

The MONAI pipelines (:mod:`medseg.transforms.preprocess`) start with this transform instead of
``LoadImaged``, so every training and inference read gets the loader contract (refusals with a
one-line reason, NaN policy, label checks, DICOM series) and the same RAS+ geometry as the CLI.
The output is channel-first :class:`monai.data.MetaTensor` carrying the voxel->RAS+ affine, so
``Orientationd``, ``Spacingd`` and ``Invertd`` work on it unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from medseg.io import load_volume

__all__ = ["LoadVolumed", "volume_to_metatensor"]


class LoadVolumed(MapTransform):
    """Replace file paths under ``keys`` by channel-first MetaTensors read with ``load_volume``.

    Images are read with ``volume_index="all"`` (4-D MSD files become channels) as float32;
    labels with ``role="label"`` as float32 holding whole class numbers (float so resampling and
    cropping work; the loader has already refused fractional, negative or unknown values).

    Args:
        keys: dictionary keys holding paths (``str`` or ``os.PathLike``).
        roles: ``"image"`` or ``"label"`` per key (one value applies to all keys). Defaults to
            ``"label"`` for a key named ``"label"`` and ``"image"`` otherwise.
        classes: allowed label values (``role="label"`` only), e.g. ``range(num_classes)``.
        nan_policy: passed to ``load_volume`` (``"error"`` refuses NaN/Inf voxels).
        allow_missing_keys: skip keys that are absent (e.g. unlabelled test cases).

    Output per key: ``MetaTensor`` ``(C, X, Y, Z)`` float32 (labels ``C = 1``) with ``affine``
    ``(4, 4)`` voxel -> RAS+ mm and meta ``filename_or_obj``, ``original_affine``,
    ``spatial_shape``, ``original_channel_dim``, ``space = "RAS"``.

    Raises:
        medseg.errors.InputError: the file breaks the loader contract (message names the file).
    """

    def __init__(
        self,
        keys: KeysCollection,
        roles: str | Iterable[str] | None = None,
        classes: Iterable[int] | None = None,
        nan_policy: str = "error",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if roles is None:
            role_list = ["label" if k == "label" else "image" for k in self.keys]
        elif isinstance(roles, str):
            role_list = [roles] * len(self.keys)
        else:
            role_list = list(roles)
        if len(role_list) != len(self.keys) or set(role_list) - {"image", "label"}:
            raise ValueError(f"roles must be 'image'/'label' per key, got {role_list}")
        self.roles = dict(zip(self.keys, role_list, strict=True))
        self.classes = None if classes is None else [int(c) for c in classes]
        self.nan_policy = nan_policy

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            path = os.fspath(d[key])
            role = self.roles[key]
            vol = load_volume(
                path,
                role=role,
                volume_index="all" if role == "image" else None,
                classes=self.classes if role == "label" else None,
                nan_policy=self.nan_policy,
            )
            d[key] = volume_to_metatensor(vol.array, vol.affine, path)
        return d


def volume_to_metatensor(array: np.ndarray, affine: np.ndarray, path: str = "") -> MetaTensor:
    """``array`` (X, Y, Z) or (C, X, Y, Z) + ``affine`` (4, 4) -> float32 MetaTensor (C, ...)."""
    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"expected (X, Y, Z) or (C, X, Y, Z), got {arr.shape}")
    aff = torch.as_tensor(np.asarray(affine, dtype=np.float64))
    meta = {
        "filename_or_obj": path,
        "original_affine": aff.clone(),
        "spatial_shape": np.asarray(arr.shape[1:]),
        "original_channel_dim": 0,
        "space": "RAS",
    }
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr)), affine=aff, meta=meta)
