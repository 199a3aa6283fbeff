"""Put a label map that covers part of a grid onto that grid, without resampling.

A DICOM SEG stores only the slices that hold a segment, and 3D Slicer crops a ``.seg.nrrd`` to
the segments' extent: their own grid is a sub-block of the image's. :func:`place_on_grid` puts
such a block onto the image grid when the block's voxels *are* grid voxels (same spacing, axes
parallel up to a permutation or a flip, offset a whole number of voxels); anything else is
refused (``grid_mismatch``): a label map is never interpolated.
"""

from __future__ import annotations

import numpy as np

from medseg.errors import InputError

#: how far (in voxels) a corner or an axis may be from the grid's and still count as on it
GRID_TOL = 1e-2


def place_on_grid(
    array: np.ndarray,
    affine: np.ndarray,
    shape: tuple[int, int, int],
    grid_affine: np.ndarray,
    where: str,
) -> np.ndarray:
    """``array`` ``(x, y, z)`` on ``affine`` (voxel -> RAS mm) as an array of ``shape`` on
    ``grid_affine``; voxels outside the block are 0. Raises ``grid_mismatch``."""
    to_grid = np.linalg.inv(grid_affine) @ affine  # block voxel -> grid voxel
    linear, offset = to_grid[:3, :3], to_grid[:3, 3]
    perm = np.argmax(np.abs(linear), axis=0)  # grid axis of each block axis
    signs = np.sign(linear[perm, range(3)])
    expected = np.zeros((3, 3))
    expected[perm, range(3)] = signs
    start = np.round(offset)
    if (
        len(set(perm.tolist())) != 3
        or np.max(np.abs(linear - expected)) > GRID_TOL
        or np.max(np.abs(offset - start)) > GRID_TOL
    ):
        raise InputError(
            "grid_mismatch",
            "the label map's voxels are not voxels of the image grid (other spacing, "
            "orientation or a fractional offset); it is never resampled",
            path=where,
        )
    block = array
    for axis in range(3):  # flip block axes that run against their grid axis
        if signs[axis] < 0:
            block = np.flip(block, axis=axis)
    lows = [int(start[perm[a]]) - (array.shape[a] - 1 if signs[a] < 0 else 0) for a in range(3)]
    block = np.transpose(block, np.argsort(perm))  # block axes in grid order
    lows = [lows[int(np.where(perm == g)[0][0])] for g in range(3)]
    out = np.zeros(shape, dtype=array.dtype)
    highs = [lo + n for lo, n in zip(lows, block.shape, strict=True)]
    if min(lows) < 0 or any(h > s for h, s in zip(highs, shape, strict=True)):
        if not block.any():
            return out
        raise InputError(
            "grid_mismatch",
            f"the label map reaches outside the image grid {tuple(shape)}; open it with the "
            "image it was made on",
            path=where,
        )
    out[lows[0] : highs[0], lows[1] : highs[1], lows[2] : highs[2]] = block
    return out
