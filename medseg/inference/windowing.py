"""MedSAM's intensity step (``pre_CT_MR``) for whole volumes, without whole-volume float copies.

:func:`to_uint8` returns exactly what the straightforward float64 version returns (the one the
official script runs per image: ``astype(float64)``, percentiles of the positive voxels, clip,
min-max, ``astype(uint8)``), bit for bit, but allocates only:

- the uint8 result (1 byte per voxel);
- for percentile windows, one copy of the positive voxels *in the input's own dtype* (at most
  4 bytes per voxel for float32 images), partitioned in place;
- float64 blocks of at most :data:`BLOCK_VOXELS` voxels (32 MiB) for the arithmetic.

That version holds a float64 copy of the volume, the clipped copy and the scaled copy at
once (24 bytes per voxel on top of the input; 3.4 GB for a 2.4 MB ``.nii.gz`` that decompresses
to just under the 2 GiB loader guard).

Percentiles follow NumPy's default ``"linear"`` method step for step (virtual index
``(n - 1) * q``, neighbours found by partial sorting, NumPy's ``_lerp`` in float64), so they
equal ``np.percentile(values.astype(float64), q)`` exactly (tests compare both on real and
random data).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from medseg.errors import InputError

__all__ = ["BLOCK_VOXELS", "PERCENTILES", "percentiles", "to_uint8"]

PERCENTILES = (0.5, 99.5)
BLOCK_VOXELS = 1 << 22  # voxels per float64 working block (32 MiB)


def to_uint8(array: np.ndarray, *, window: tuple[float, float] | None = None) -> np.ndarray:
    """MedSAM's ``pre_CT_MR`` intensity step for a whole volume (any shape) -> uint8 0-255.

    With ``window=(level, width)`` (CT) values are clipped to ``level -/+ width / 2``; otherwise
    (MR and others) to the 0.5 and 99.5 percentiles of the voxels > 0 (all voxels if none is
    positive), and voxels equal to 0 stay 0. The clipped values are then min-max scaled to
    0-255 and truncated to uint8, as MedSAM does. A constant result maps to zeros. The result
    is C-contiguous; memory use is in the module docstring.

    Raises:
        InputError: the array holds NaN or infinite values, or the window width is not > 0.
    """
    data = np.asarray(array)
    if data.dtype == np.bool_:
        data = data.view(np.uint8)
    elif data.dtype.kind not in "fiu":
        data = data.astype(np.float64)
    if data.size == 0:
        return np.zeros(data.shape, dtype=np.uint8)
    if data.dtype.kind == "f" and not all(np.isfinite(data[i]).all() for i in _blocks(data)):
        raise InputError("non_finite", "image holds NaN or infinite values")
    if window is not None:
        level, width = window
        if not width > 0:
            raise InputError("window", f"window width must be > 0, got {width}")
        low, high = level - width / 2, level + width / 2
    else:
        low, high = percentiles(_positive_or_all(data), PERCENTILES)
    # clip is monotone: the min/max of the clipped volume are the clipped min/max
    cmin = np.clip(np.float64(data.min()), low, high)
    cmax = np.clip(np.float64(data.max()), low, high)
    out = np.zeros(data.shape, dtype=np.uint8)
    span = cmax - cmin
    if span <= 0:
        return out
    for index in _blocks(data):
        block = data[index]
        scaled = block.astype(np.float64)
        np.clip(scaled, low, high, out=scaled)
        scaled -= cmin
        scaled /= span
        scaled *= 255.0
        if window is None:
            scaled[block == 0] = 0
        out[index] = scaled.astype(np.uint8)
    return out


def percentiles(values: np.ndarray, q: Sequence[float]) -> tuple[float, ...]:
    """``np.percentile(values.astype(float64), q)`` (method ``"linear"``), bit for bit, for a
    1-D array of real numbers. ``values`` is partially sorted **in place** (pass a copy)."""
    n = values.size
    if values.ndim != 1 or n == 0:
        raise ValueError("percentiles needs a non-empty 1-D array")
    quantiles = np.true_divide(np.asarray(q, dtype=np.float64), 100)
    virtual = (n - 1) * quantiles
    previous = np.floor(virtual)
    following = previous + 1
    above = virtual >= n - 1
    previous[above] = -1
    following[above] = -1
    below = virtual < 0
    previous[below] = 0
    following[below] = 0
    prev_i, next_i = previous.astype(np.intp), following.astype(np.intp)
    values.partition(np.unique(np.concatenate(([0, -1], prev_i, next_i))))
    a = values[prev_i].astype(np.float64)
    b = values[next_i].astype(np.float64)
    gamma = np.asarray(virtual - previous, dtype=np.float64)
    return tuple(float(v) for v in _lerp(a, b, gamma))


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """NumPy's ``_lerp`` (``numpy/lib/_function_base_impl.py``), the same operations in order."""
    diff_b_a = b - a
    result = np.add(a, diff_b_a * t)
    np.subtract(b, diff_b_a * (1 - t), out=result, where=t >= 0.5)
    return result


def _positive_or_all(data: np.ndarray) -> np.ndarray:
    """A 1-D copy (input dtype) of the voxels > 0, or of every voxel when none is positive."""
    count = sum(int(np.count_nonzero(data[i] > 0)) for i in _blocks(data))
    if count == 0:
        return np.array(data, copy=True).reshape(-1)
    positive = np.empty(count, dtype=data.dtype)
    filled = 0
    for index in _blocks(data):
        block = data[index]
        chosen = block[block > 0]
        positive[filled : filled + chosen.size] = chosen
        filled += chosen.size
    return positive


def _blocks(data: np.ndarray) -> Iterator[tuple]:
    """Index tuples covering ``data`` in blocks of at most :data:`BLOCK_VOXELS` voxels (whole
    leading-axis slabs where they fit; a slice too large on its own is split along its next
    axis)."""
    yield from _split(tuple(int(s) for s in data.shape), BLOCK_VOXELS)


def _split(shape: tuple[int, ...], limit: int) -> Iterator[tuple]:
    if not shape:
        yield ()
        return
    inner = math.prod(shape[1:])
    if inner <= limit or len(shape) == 1:
        step = max(1, limit // max(inner, 1))
        for start in range(0, shape[0], step):
            yield (slice(start, min(start + step, shape[0])),)
        return
    for i in range(shape[0]):
        for rest in _split(shape[1:], limit):
            yield (i, *rest)
