"""Where a restored volume lies relative to the displayed image (before/after geometry).

A restoration result is either on the image grid (denoising, synthesis: same shape and affine)
or on another grid over the same physical box with the same axis directions (super-resolution:
``s`` times the voxels and ``1/s`` the spacing along the upsampled axes, see
:func:`medseg.inference.restoration.super_resolved_affine`). Positions move between the two
grids through the affines (voxel -> RAS mm -> voxel), never by scaling indices, so any factor,
per-axis factors and oblique or flipped grids are handled alike.
"""

from __future__ import annotations

import itertools

import numpy as np

from medseg.io.volume import Volume
from medseg.transforms.planes import PlaneView

BOX_TOLERANCE = 0.01  # of the smallest image voxel side: how far the two boxes may differ
DIRECTION_TOLERANCE = 1e-3  # on unit direction vectors


def same_grid(a: Volume, b: Volume) -> bool:
    """True when ``b`` has ``a``'s spatial shape and (up to float noise) its affine."""
    return a.spatial_shape == b.spatial_shape and np.allclose(a.affine, b.affine, atol=1e-6)


def box_corners(volume: Volume) -> np.ndarray:
    """``(8, 3)`` RAS mm corners of the volume's field of view (the outer voxel edges)."""
    edges = [(-0.5, n - 0.5) for n in volume.spatial_shape]
    ijk = np.array(list(itertools.product(*edges)), dtype=np.float64)
    affine = np.asarray(volume.affine, dtype=np.float64)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def check_restored(image: Volume, restored: Volume, name: str) -> None:
    """ValueError (one line) unless ``restored`` is a 3-D volume on ``image``'s grid or on a
    grid covering the same box with the same axis directions."""
    if restored.array.ndim != 3:
        raise ValueError(f"{name} returned a {restored.array.ndim}-D array, not one volume")
    if same_grid(image, restored):
        return
    a, b = (np.asarray(v.affine, dtype=np.float64)[:3, :3] for v in (image, restored))
    dir_a, dir_b = a / np.linalg.norm(a, axis=0), b / np.linalg.norm(b, axis=0)
    tolerance = BOX_TOLERANCE * float(min(image.spacing))
    if not np.allclose(dir_a, dir_b, atol=DIRECTION_TOLERANCE) or not np.allclose(
        box_corners(image), box_corners(restored), atol=tolerance
    ):
        raise ValueError(
            f"{name} returned a {'x'.join(map(str, restored.spatial_shape))} grid that does not "
            "cover the image's field of view with the same orientation"
        )


class GridMap:
    """Voxel coordinates of grid ``src`` -> voxel coordinates of grid ``dst`` (continuous)."""

    def __init__(self, src_affine: np.ndarray, dst_affine: np.ndarray) -> None:
        src = np.asarray(src_affine, dtype=np.float64)
        self.matrix = np.linalg.inv(np.asarray(dst_affine, dtype=np.float64)) @ src

    def __call__(self, ijk: np.ndarray) -> np.ndarray:
        """``(..., 3)`` -> ``(..., 3)``."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.matrix[:3, :3].T + self.matrix[:3, 3]


def nearest_index(position: float, count: int) -> int:
    """Index of the slice whose centre is nearest ``position`` (clamped to ``0 .. count-1``).

    A position half-way between two centres (an even upsampling factor puts every old slice
    centre on the boundary of two new slices) goes to the upper one, whatever the float noise.
    """
    return int(np.clip(np.floor(position + 0.5 + 1e-6), 0, count - 1))


def slice_voxels(view: PlaneView, index: int) -> np.ndarray:
    """``(H, W, 3)`` voxel indices of every pixel of displayed slice ``index`` of ``view``."""
    rows, cols = np.meshgrid(np.arange(view.height), np.arange(view.width), indexing="ij")
    ijk = np.empty((view.height, view.width, 3), dtype=np.float64)
    ijk[..., view.slice_axis] = index
    ijk[..., view.row_axis] = view.height - 1 - rows if view.row_flip else rows
    ijk[..., view.col_axis] = view.width - 1 - cols if view.col_flip else cols
    return ijk


def sample_nearest(array: np.ndarray, ijk: np.ndarray) -> np.ndarray:
    """``array[(X, Y, Z)]`` at the nearest voxels of continuous indices ``(..., 3)`` (clamped)."""
    idx = np.rint(ijk).astype(np.intp)
    hi = np.asarray(array.shape[-3:]) - 1
    idx = np.clip(idx, 0, hi)
    return array[idx[..., 0], idx[..., 1], idx[..., 2]]
