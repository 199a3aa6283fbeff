"""Window cross-attention (WAU): high-resolution queries attend to the matching low-res window.

Definition (the torch reference below is the spec). For ``n = 2`` or ``3`` spatial axes:

- ``q``: ``(B, *S_q, h, d)``, ``k``: ``(B, *S_kv, h, d)``, ``v``: ``(B, *S_kv, h, d_v)``;
  channel-last maps with the channels split into ``h`` heads (what ``Linear(C, h * d)``
  followed by ``view`` gives, without a copy).
- ``q_window`` and ``kv_window`` (``n`` ints each) tile both maps from the origin into the same
  grid of ``G_i = ceil(S_q[i] / q_window[i])`` windows per axis; the window grid of the
  key/value map must be the same, ``ceil(S_kv[i] / kv_window[i]) == G_i``. For WAU, ``S_q =
  2 * S_kv`` and ``q_window = 2 * kv_window`` (an 8 x 8 output window reads a 4 x 4 input
  window); ``q_window == kv_window`` on one map is SAM-style window self-attention.
- Query position ``p`` attends to key position ``p'`` iff they lie in the same window, i.e.
  ``p[i] // q_window[i] == p'[i] // kv_window[i]`` on every axis: per head,
  ``out[p] = softmax_{p'}(scale * q[p] . k[p']) v[p']`` over that window's keys,
  ``scale = d ** -0.5`` unless given.
- Sizes that are not multiples of the window are padded at the end (bottom/right/back);
  padded keys are masked out (never attended to), padded queries are cropped from the output.
- Output: ``(B, *S_q, h, d_v)``.

Paths (``window_attention`` picks one, see :func:`kernels._dispatch.resolve_impl`):

- ``window_attention_reference``: the spec as code, the full ``N_q x N_kv`` window mask and an
  explicit softmax (quadratic memory: tests only);
- ``"torch"`` (``window_attention_torch``): pad, partition into windows and run
  ``F.scaled_dot_product_attention`` on ``(B * prod(G), h, prod(window), d)`` batches, with
  padded keys masked;
- ``"triton"``: tokens gathered in window-major order without padding, then the varlen flash
  kernels of :mod:`kernels._triton_segments` with one segment per window (edge windows have
  fewer queries and keys; nothing padded is computed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._dispatch import resolve_impl
from .region import _rows

__all__ = ["window_attention", "window_attention_reference", "window_attention_torch"]

_OP = "window_attention"


def window_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    q_window: int | Sequence[int],
    kv_window: int | Sequence[int],
    scale: float | None = None,
    impl: str | None = None,
) -> Tensor:
    """Window cross-attention (see the module docstring for the exact definition).

    Args:
        q: ``(B, *S_q, h, d)`` queries, 2 or 3 spatial axes.
        k: ``(B, *S_kv, h, d)`` keys.
        v: ``(B, *S_kv, h, d_v)`` values.
        q_window: query window side per axis (an int applies to every axis).
        kv_window: key/value window side per axis; both window grids must have the same shape.
        scale: softmax temperature; ``d ** -0.5`` by default.
        impl: ``"auto"``, ``"torch"``, ``"triton"``, or ``None`` for ``$MEDSEG_KERNELS``
            (default ``"auto"``: Triton for CUDA tensors, torch otherwise).

    Returns:
        ``(B, *S_q, h, d_v)``, same dtype and device as ``q``.

    Raises:
        ValueError: bad shapes, windows or ``impl`` name.
        kernels.KernelUnavailableError: ``impl="triton"`` cannot run here (the reason is named).
    """
    which = resolve_impl(impl, op=_OP, device=q.device)
    if which == "triton":
        return _window_attention_triton(q, k, v, q_window, kv_window, scale)
    return window_attention_torch(q, k, v, q_window=q_window, kv_window=kv_window, scale=scale)


def window_attention_torch(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    q_window: int | Sequence[int],
    kv_window: int | Sequence[int],
    scale: float | None = None,
) -> Tensor:
    """The torch path: pad, partition into windows, SDPA per window, reverse, crop."""
    q_win, kv_win, grid = _check(q, k, v, q_window, kv_window)
    batch, q_size, kv_size = q.shape[0], q.shape[1:-2], k.shape[1:-2]
    q_pad = tuple(g * w for g, w in zip(grid, q_win, strict=True))
    kv_pad = tuple(g * w for g, w in zip(grid, kv_win, strict=True))
    qw = _partition(_pad(q, q_pad), q_win)
    kw = _partition(_pad(k, kv_pad), kv_win)
    vw = _partition(_pad(v, kv_pad), kv_win)
    mask = None
    if kv_pad != tuple(kv_size):
        # mask padded keys; the grid is ceil-based, so every window keeps at least one real key
        valid = torch.ones(kv_size, dtype=torch.bool, device=k.device)
        valid = _pad(valid[None, ..., None, None], kv_pad)  # padding is False
        mask = _partition(valid, kv_win)  # (prod(grid), 1, L_kv, 1)
        mask = mask.reshape(1, -1, 1, 1, mask.shape[2]).expand(batch, -1, -1, -1, -1)
        mask = mask.reshape(-1, 1, 1, mask.shape[-1])  # (B * prod(grid), 1, 1, L_kv)
    out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=mask, scale=scale)
    out = _unpartition(out, batch, grid, q_win)
    return out[(slice(None), *(slice(0, s) for s in q_size))]


def window_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    q_window: int | Sequence[int],
    kv_window: int | Sequence[int],
    scale: float | None = None,
) -> Tensor:
    """Naive ``softmax(q k^T * scale + mask) v`` with the full ``(N_q, N_kv)`` window mask.

    Test oracle only: no padding, no partition, no SDPA; memory is quadratic in the map size.
    """
    q_win, kv_win, grid = _check(q, k, v, q_window, kv_window)
    batch, q_size, heads = q.shape[0], q.shape[1:-2], q.shape[-2]
    mask = (
        _window_ids(q.shape[1:-2], q_win, grid)[:, None]
        == _window_ids(k.shape[1:-2], kv_win, grid)[None, :]
    )
    qf = q.reshape(batch, -1, heads, q.shape[-1]).transpose(1, 2)
    kf = k.reshape(batch, -1, heads, k.shape[-1]).transpose(1, 2)
    vf = v.reshape(batch, -1, heads, v.shape[-1]).transpose(1, 2)
    scores = (qf @ kf.transpose(-2, -1)) * (q.shape[-1] ** -0.5 if scale is None else scale)
    out = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ vf
    return out.transpose(1, 2).reshape(batch, *q_size, heads, v.shape[-1])


def _window_attention_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_window: int | Sequence[int],
    kv_window: int | Sequence[int],
    scale: float | None,
) -> Tensor:
    """Gather window-major tokens (no padding), run the segment kernels, scatter back."""
    from ._triton_segments import segment_attention  # imports triton: only when asked for

    q_win, kv_win, grid = _check(q, k, v, q_window, kv_window)
    batch, heads = q.shape[0], q.shape[-2]
    q_order, q_cu = _window_segments(q.shape[1:-2], q_win, grid, batch, q.device)
    kv_order, kv_cu = _window_segments(k.shape[1:-2], kv_win, grid, batch, q.device)
    qs, ks, vs = _rows(q, q_order, heads), _rows(k, kv_order, heads), _rows(v, kv_order, heads)
    longest = max(math.prod(q_win), math.prod(kv_win))
    out = segment_attention(qs, ks, vs, q_cu, kv_cu, scale=scale, max_len=longest)
    inverse = torch.empty_like(q_order)
    inverse[q_order] = torch.arange(q_order.numel(), device=q.device)
    return _rows(out, inverse, heads).view(*q.shape[:-1], v.shape[-1])


def _window_segments(
    size: Sequence[int],
    window: Sequence[int],
    grid: Sequence[int],
    batch: int,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Window-major token order of ``batch`` maps of ``size`` and the window offsets.

    Returns:
        ``order``: ``(B * prod(size),)`` int64 flat token indices (``b * prod(size) + n``),
        windows batch-major then raster, tokens raster inside a window, padding left out;
        ``cu``: ``(B * prod(G) + 1,)`` int32 start of every window in ``order``.
    """
    n = math.prod(size)
    index = torch.arange(1, n + 1, device=device).view(1, *size, 1, 1)  # 0 marks padding
    padded = _pad(index, [g * w for g, w in zip(grid, window, strict=True)])
    parts = _partition(padded, window).view(-1, math.prod(window)) - 1  # (prod(G), L)
    valid = parts >= 0
    one = parts[valid]  # window-major order of one map
    order = (one[None, :] + torch.arange(batch, device=device)[:, None] * n).flatten()
    counts = valid.sum(1).repeat(batch)
    cu = torch.zeros(counts.numel() + 1, dtype=torch.int32, device=device)
    cu[1:] = torch.cumsum(counts, 0)
    return order, cu


def _check(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_window: int | Sequence[int],
    kv_window: int | Sequence[int],
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Validate shapes; return ``(q_window, kv_window, grid)`` as tuples of ``n`` ints."""
    n = q.ndim - 3
    if n not in (2, 3):
        raise ValueError(f"{_OP}: q must be (B, *S, h, d) with 2 or 3 spatial axes, got {q.ndim}-D")
    if k.ndim != q.ndim or v.ndim != q.ndim:
        raise ValueError(
            f"{_OP}: q, k, v must have the same rank, got {q.ndim}, {k.ndim}, {v.ndim}"
        )
    if k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"{_OP}: k and v differ before the last axis: {k.shape} vs {v.shape}")
    if q.shape[0] != k.shape[0] or q.shape[-2:] != k.shape[-2:]:
        raise ValueError(
            f"{_OP}: q and k must share batch, heads and head dim: {q.shape} vs {k.shape}"
        )
    q_win, kv_win = _as_tuple(q_window, n, "q_window"), _as_tuple(kv_window, n, "kv_window")
    grid = tuple(math.ceil(s / w) for s, w in zip(q.shape[1:-2], q_win, strict=True))
    kv_grid = tuple(math.ceil(s / w) for s, w in zip(k.shape[1:-2], kv_win, strict=True))
    if grid != kv_grid:
        raise ValueError(
            f"{_OP}: window grids differ: q {tuple(q.shape[1:-2])} / {q_win} -> {grid}, "
            f"kv {tuple(k.shape[1:-2])} / {kv_win} -> {kv_grid}"
        )
    return q_win, kv_win, grid


def _as_tuple(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    out = (value,) * n if isinstance(value, int) else tuple(value)
    if len(out) != n or any(not isinstance(w, int) or w < 1 for w in out):
        raise ValueError(
            f"{_OP}: {name} must be a positive int or {n} positive ints, got {value!r}"
        )
    return out


def _pad(x: Tensor, size: Sequence[int]) -> Tensor:
    """Zero-pad the spatial axes of ``(B, *S, h, d)`` at the end up to ``size``."""
    pads = [0, 0, 0, 0]  # d, h
    for have, want in reversed(list(zip(x.shape[1:-2], size, strict=True))):
        pads += [0, want - have]
    return F.pad(x, pads) if any(pads) else x


def _partition(x: Tensor, window: Sequence[int]) -> Tensor:
    """``(B, *S, h, d) -> (B * prod(G), h, prod(window), d)`` for ``S`` a multiple of ``window``.

    Windows are ordered batch-major, then in raster order over the grid ``G = S // window``.
    """
    batch, size, heads, dim = x.shape[0], x.shape[1:-2], x.shape[-2], x.shape[-1]
    n = len(window)
    split = [batch]
    for s, w in zip(size, window, strict=True):
        split += [s // w, w]
    x = x.view(*split, heads, dim)  # (B, G0, w0, G1, w1[, G2, w2], h, d)
    order = [0, *range(1, 2 * n, 2), 2 * n + 1, *range(2, 2 * n + 1, 2), 2 * n + 2]
    return x.permute(order).reshape(-1, heads, math.prod(window), dim)


def _unpartition(x: Tensor, batch: int, grid: Sequence[int], window: Sequence[int]) -> Tensor:
    """Inverse of :func:`_partition`: ``(B * prod(G), h, prod(window), d) -> (B, *S, h, d)``."""
    n, heads, dim = len(window), x.shape[1], x.shape[-1]
    x = x.reshape(batch, *grid, heads, *window, dim)  # (B, G0, G1[, G2], h, w0, w1[, w2], d)
    order = [0]
    for i in range(n):
        order += [1 + i, n + 2 + i]
    order += [n + 1, 2 * n + 2]
    return x.permute(order).reshape(
        batch, *(g * w for g, w in zip(grid, window, strict=True)), heads, dim
    )


def _window_ids(size: Sequence[int], window: Sequence[int], grid: Sequence[int]) -> Tensor:
    """Raster-order window index of every position of a map of ``size``: ``(prod(size),)``."""
    coords = torch.meshgrid(
        *(torch.arange(s) // w for s, w in zip(size, window, strict=True)), indexing="ij"
    )
    ids = torch.zeros(size, dtype=torch.long)
    for c, g in zip(coords, grid, strict=True):
        ids = ids * g + c
    return ids.flatten()
