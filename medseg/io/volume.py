"""The in-memory volume: voxels plus the geometry that places them in the patient.

Convention (the one every part of medseg relies on):

- ``array`` is indexed ``[i, j, k]`` (spatial) or ``[c, i, j, k]`` (channel first), in the voxel
  order of the file. For NIfTI that is nibabel's order; for NRRD/MHA/DICOM (read through
  SimpleITK, whose numpy view is ``[k, j, i]``) the array is transposed back to ``[i, j, k]``.
- ``affine`` maps a voxel index ``(i, j, k, 1)`` to **RAS+ millimetres** (the NIfTI/nibabel
  convention). ITK's LPS geometry is converted on read and back on write.
- ``qform``/``sform`` and their codes are kept exactly as read from a NIfTI header so that an
  output written on the same grid carries both forms and codes of the input (RELIABILITY.md
  C.2 #17). They are ``None`` / 0 for formats that have no such forms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass
class Volume:
    """Voxels with their geometry.

    Attributes:
        array: ``(X, Y, Z)`` or ``(C, X, Y, Z)`` voxel data.
        affine: ``(4, 4)`` float64, voxel index -> RAS+ mm. For NIfTI this is the form nibabel
            chooses (sform when its code > 0, else qform, else pixdim fallback).
        qform, qform_code, sform, sform_code: the NIfTI forms as stored in the source header
            (``None``/0 when the source has none).
        meta: free-form provenance: source path, format, reader, warnings, DICOM series UID, ...
    """

    array: np.ndarray
    affine: np.ndarray
    qform: np.ndarray | None = None
    qform_code: int = 0
    sform: np.ndarray | None = None
    sform_code: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        if self.array.ndim not in (3, 4):
            raise ValueError(f"array must be (X, Y, Z) or (C, X, Y, Z), got {self.array.shape}")

    # geometry -----------------------------------------------------------------------------
    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(X, Y, Z)`` voxel counts."""
        return tuple(int(s) for s in self.array.shape[-3:])  # type: ignore[return-value]

    @property
    def num_channels(self) -> int:
        return 1 if self.array.ndim == 3 else int(self.array.shape[0])

    @property
    def spacing(self) -> np.ndarray:
        """``(3,)`` voxel size in mm along i, j, k (column norms of the affine)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def direction(self) -> np.ndarray:
        """``(3, 3)`` unit direction cosines (columns = i, j, k axes) in RAS+."""
        return self.affine[:3, :3] / self.spacing[None, :]

    @property
    def origin(self) -> np.ndarray:
        """``(3,)`` RAS+ mm position of voxel (0, 0, 0)."""
        return self.affine[:3, 3].copy()

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Anatomical direction each voxel axis points to, e.g. ``('R', 'A', 'S')``."""
        from nibabel.orientations import aff2axcodes

        return tuple(aff2axcodes(self.affine))  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 mL = 1000 mm^3)."""
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    # derived volumes -----------------------------------------------------------------------
    def with_array(self, array: np.ndarray, **meta: Any) -> Volume:
        """A new Volume on exactly this grid (affine, forms, codes) holding ``array``.

        ``array`` must have this volume's spatial shape; extra ``meta`` entries are merged in.
        """
        if tuple(array.shape[-3:]) != self.spatial_shape:
            raise ValueError(
                f"array spatial shape {tuple(array.shape[-3:])} != volume grid {self.spatial_shape}"
            )
        return replace(
            self,
            array=array,
            affine=self.affine.copy(),
            qform=None if self.qform is None else self.qform.copy(),
            sform=None if self.sform is None else self.sform.copy(),
            meta={**self.meta, **meta},
        )


@dataclass(frozen=True)
class VolumeHeader:
    """What a file's header promises, known before any voxel is read or decompressed.

    :func:`~medseg.io.load.load_volume` passes one to its ``on_header`` callback (after every
    header check, before the voxels), so a caller can refuse work it cannot afford (see
    :mod:`medseg.inference.memory`).

    Attributes:
        path: the file or DICOM folder.
        shape: spatial ``(X, Y, Z)`` of the array that will be returned (2-D files: ``Z = 1``).
        channels: volumes returned as channels (``volume_index="all"``), else 1.
        spacing: voxel size in mm along i, j, k as the header states it.
        itemsize: bytes per voxel as stored in the file.
    """

    path: str
    shape: tuple[int, int, int]
    channels: int = 1
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    itemsize: int = 4

    @property
    def voxels(self) -> int:
        """Voxels of the returned array: ``X * Y * Z * channels``."""
        return math.prod(self.shape) * self.channels

    @classmethod
    def of(cls, volume: Volume) -> VolumeHeader:
        """The header of a volume already in memory (``path`` from its ``meta``)."""
        spacing = tuple(float(s) for s in volume.spacing)
        return cls(
            path=str(volume.meta.get("path", "")),
            shape=volume.spatial_shape,
            channels=volume.num_channels,
            spacing=spacing,  # type: ignore[arg-type]
            itemsize=int(volume.array.dtype.itemsize),
        )
