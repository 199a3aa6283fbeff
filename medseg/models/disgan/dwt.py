"""Single-level orthonormal 3D Haar wavelet transform and its exact inverse.

Written here instead of depending on ``torch-dwt`` (git-only) or PyWavelets. Each spatial axis is
split into pairs ``(a, b)`` of neighbouring voxels and mapped to ``low = (a + b) / sqrt(2)`` and
``high = (a - b) / sqrt(2)``; the 1D filter pair is orthonormal, so the 3D transform preserves
energy and its inverse is its transpose.

Channel layout (sub-band major, matching how DISGAN slices the ``torch-dwt`` output): the output
``(B, 8 * C, D/2, H/2, W/2)`` holds sub-band ``s`` in channels ``[s * C, (s + 1) * C)``, with
``s = 4 * b_D + 2 * b_H + b_W`` and ``b = 1`` for the high-pass along that axis. Sub-band 0 is
LLL (the first ``C`` channels), sub-bands 1..7 are the seven high-frequency bands.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["haar_dwt3d", "haar_idwt3d"]


def haar_dwt3d(x: Tensor) -> Tensor:
    """Forward 3D Haar DWT, one level.

    Args:
        x: ``(B, C, D, H, W)`` float with even ``D, H, W``.

    Returns:
        ``(B, 8 * C, D/2, H/2, W/2)``: LLL in channels ``[0, C)``, then the 7 high bands.

    Raises:
        ValueError: not 5D, or an odd spatial size.
    """
    _check(x, "haar_dwt3d")
    b, c, d, h, w = x.shape
    pairs = x.reshape(b, c, d // 2, 2, h // 2, 2, w // 2, 2)
    m = _haar_matrix(x)
    bands = torch.einsum("bcdihjwk,pi,qj,rk->bpqrcdhw", pairs, m, m, m)
    return bands.reshape(b, 8 * c, d // 2, h // 2, w // 2)


def haar_idwt3d(y: Tensor) -> Tensor:
    """Inverse of :func:`haar_dwt3d` (exact up to floating-point rounding).

    Args:
        y: ``(B, 8 * C, d, h, w)`` in the layout :func:`haar_dwt3d` returns.

    Returns:
        ``(B, C, 2d, 2h, 2w)``.

    Raises:
        ValueError: not 5D, or a channel count that is not a multiple of 8.
    """
    if y.ndim != 5:
        raise ValueError(f"haar_idwt3d expects (B, 8*C, d, h, w), got shape {tuple(y.shape)}")
    b, c8, d, h, w = y.shape
    if c8 % 8:
        raise ValueError(f"haar_idwt3d needs a channel count that is a multiple of 8, got {c8}")
    c = c8 // 8
    bands = y.reshape(b, 2, 2, 2, c, d, h, w)
    m = _haar_matrix(y)
    # the Haar matrix is symmetric and orthogonal: its inverse is itself
    pairs = torch.einsum("bpqrcdhw,pi,qj,rk->bcdihjwk", bands, m, m, m)
    return pairs.reshape(b, c, 2 * d, 2 * h, 2 * w)


def _check(x: Tensor, name: str) -> None:
    if x.ndim != 5:
        raise ValueError(f"{name} expects (B, C, D, H, W), got shape {tuple(x.shape)}")
    if any(s % 2 for s in x.shape[2:]):
        raise ValueError(f"{name} needs even spatial sizes, got {tuple(x.shape[2:])}")


def _haar_matrix(like: Tensor) -> Tensor:
    """``[[1, 1], [1, -1]] / sqrt(2)``: row 0 low-pass, row 1 high-pass."""
    s = 1.0 / math.sqrt(2.0)
    return torch.tensor([[s, s], [s, -s]], dtype=like.dtype, device=like.device)
