"""Triton forward and backward kernels of :func:`kernels.linear_attention` (the spec lives in
:mod:`kernels.linear`).

Per ``(b, h)`` the op is two passes over ``N``, each tiled in blocks of ``BLOCK_N`` tokens:

- forward: ``_reduce_kernel`` sums ``rot(k)^T v`` and ``k`` over the tokens of a range of
  blocks (grid ``(splits, B * h)``, float32 partials summed by torch, so the result does not
  depend on scheduling); ``_out_kernel`` writes ``rot(q) S / (q . kbar + eps)`` per block
  (grid ``(blocks, B * h)``);
- backward: ``_grad_q_kernel`` writes ``dq`` per block and reduces ``dS = rot(q)^T g'`` and
  ``dkbar = -q^T g_den`` (``g' = g / den``, ``g_den = sum(g' * num) / den``) per split;
  ``_grad_kv_kernel`` writes ``dk = rot^T(v dS^T) + dkbar`` and ``dv = rot(k) dS`` per block.

Channel pairs ``(2i, 2i + 1)`` are loaded as two ``(BLOCK_N, BLOCK_H)`` tiles (even and odd
channels), so RoPE is elementwise and ``x S = x_even S[0::2] + x_odd S[1::2]``. Head dims are
zero-padded to at least 16 (what ``tl.dot`` needs); all arithmetic is float32 and products use
``input_precision="ieee"``. The kernels use no autotuning and no device queries, so they also
run under ``TRITON_INTERPRET=1`` (read when this module is imported) on CPU tensors.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["linear_attention_triton"]

Rope = tuple[Tensor, Tensor]


def linear_attention_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    rope: Rope | None = None,
    eps: float = 1e-6,
    block_n: int = 64,
    splits: int | None = None,
) -> Tensor:
    """``(B, N, h, d), (B, N, h, d), (B, N, h, d_v) -> (B, N, h, d_v)``, differentiable in
    ``q, k, v`` (the RoPE tables, broadcastable to ``(N, h, d // 2)``, are constants).

    ``block_n`` tokens per program (a power of two >= 16); ``splits`` programs per ``(b, h)``
    for the reductions (``None``: enough to fill about 512 programs).
    """
    n = q.shape[1]
    blocks = triton.cdiv(n, block_n)
    if splits is None:
        splits = max(1, min(blocks, triton.cdiv(512, q.shape[0] * q.shape[2])))
    splits = min(splits, blocks)
    tables = None
    if rope is not None:
        half = (n, q.shape[2], q.shape[3] // 2)
        tables = tuple(torch.broadcast_to(t.to(torch.float32), half) for t in rope)
    return _LinearAttentionFn.apply(q, k, v, tables, eps, block_n, splits)


class _LinearAttentionFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, rope, eps, block_n, splits):
        geo = _Geometry(q, v, block_n, splits)
        state, kbar = _reduce(geo, k, v, rope)
        out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
        _out_kernel[(geo.blocks, geo.bh)](
            q, *_strides(q), out, *_strides(out), state, kbar, *_rope_args(rope, q),
            geo.n, geo.heads, geo.dim, geo.dim_v, eps, **geo.meta(rope),
        )  # fmt: skip
        ctx.save_for_backward(q, k, v, state, kbar, *(() if rope is None else rope))
        ctx.geo, ctx.eps = geo, eps
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        q, k, v, state, kbar, *tables = ctx.saved_tensors
        rope = tuple(tables) if tables else None
        geo = ctx.geo
        dq = torch.empty_like(q, memory_format=torch.contiguous_format)
        part_s = q.new_empty(geo.bh, geo.splits, geo.dim, geo.dim_v, dtype=torch.float32)
        part_k = q.new_empty(geo.bh, geo.splits, geo.dim, dtype=torch.float32)
        _grad_q_kernel[(geo.splits, geo.bh)](
            q, *_strides(q), grad, *_strides(grad), dq, *_strides(dq), state, kbar,
            part_s, part_k, *_rope_args(rope, q),
            geo.n, geo.heads, geo.dim, geo.dim_v, ctx.eps, geo.per_split, geo.splits,
            **geo.meta(rope),
        )  # fmt: skip
        d_state = part_s.sum(1).div_(geo.n)  # (B * h, d, d_v)
        d_kbar = part_k.sum(1).div_(-geo.n)  # (B * h, d)
        dk = torch.empty_like(k, memory_format=torch.contiguous_format)
        dv = torch.empty_like(v, memory_format=torch.contiguous_format)
        _grad_kv_kernel[(geo.blocks, geo.bh)](
            k, *_strides(k), v, *_strides(v), dk, *_strides(dk), dv, *_strides(dv),
            d_state, d_kbar, *_rope_args(rope, q),
            geo.n, geo.heads, geo.dim, geo.dim_v, **geo.meta(rope),
        )  # fmt: skip
        return dq, dk, dv, None, None, None, None


class _Geometry:
    """Sizes and launch parameters shared by the four kernels."""

    def __init__(self, q: Tensor, v: Tensor, block_n: int, splits: int) -> None:
        batch, self.n, self.heads, self.dim = q.shape
        self.dim_v, self.bh = v.shape[-1], batch * self.heads
        self.block_n, self.blocks = block_n, triton.cdiv(self.n, block_n)
        self.per_split = triton.cdiv(self.blocks, splits)
        self.splits = triton.cdiv(self.blocks, self.per_split)
        self.block_h = max(16, triton.next_power_of_2((self.dim + 1) // 2))
        self.block_v = max(16, triton.next_power_of_2(self.dim_v))

    def meta(self, rope: Rope | None) -> dict:
        return {
            "HAS_ROPE": rope is not None,
            "BLOCK_N": self.block_n,
            "BLOCK_H": self.block_h,
            "BLOCK_V": self.block_v,
        }


def _reduce(geo: _Geometry, k: Tensor, v: Tensor, rope: Rope | None) -> tuple[Tensor, Tensor]:
    """``S`` ``(B * h, d, d_v)`` and ``mean k`` ``(B * h, d)``, float32."""
    part_s = k.new_empty(geo.bh, geo.splits, geo.dim, geo.dim_v, dtype=torch.float32)
    part_k = k.new_empty(geo.bh, geo.splits, geo.dim, dtype=torch.float32)
    _reduce_kernel[(geo.splits, geo.bh)](
        k, *_strides(k), v, *_strides(v), part_s, part_k, *_rope_args(rope, k),
        geo.n, geo.heads, geo.dim, geo.dim_v, geo.per_split, geo.splits, **geo.meta(rope),
    )  # fmt: skip
    return part_s.sum(1).div_(geo.n), part_k.sum(1).div_(geo.n)


def _strides(x: Tensor) -> tuple[int, int, int, int]:
    return tuple(x.stride())  # type: ignore[return-value]


def _rope_args(rope: Rope | None, like: Tensor) -> tuple:
    """``cos, sin`` and their ``(N, h, d // 2)`` strides (dummies without RoPE)."""
    if rope is None:
        return (like, like, 0, 0, 0)
    cos, sin = rope
    if cos.stride() != sin.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    return (cos, sin, *cos.stride())


@triton.jit
def _load_pairs(ptr, b, hh, offs_n, offs_i, sb, sn, sh, sc, N, D):
    """Even and odd channels of a ``(BLOCK_N, BLOCK_H)`` tile, float32, zero outside."""
    base = ptr + b * sb + hh * sh + offs_n[:, None] * sn
    row = offs_n[:, None] < N
    c0 = 2 * offs_i[None, :]
    x0 = tl.load(base + c0 * sc, mask=row & (c0 < D), other=0.0).to(tl.float32)
    x1 = tl.load(base + (c0 + 1) * sc, mask=row & (c0 + 1 < D), other=0.0).to(tl.float32)
    return x0, x1


@triton.jit
def _store_pairs(ptr, x0, x1, b, hh, offs_n, offs_i, sb, sn, sh, sc, N, D):
    base = ptr + b * sb + hh * sh + offs_n[:, None] * sn
    row = offs_n[:, None] < N
    c0 = 2 * offs_i[None, :]
    tl.store(base + c0 * sc, x0.to(ptr.dtype.element_ty), mask=row & (c0 < D))
    tl.store(base + (c0 + 1) * sc, x1.to(ptr.dtype.element_ty), mask=row & (c0 + 1 < D))


@triton.jit
def _load_rope(cos_ptr, sin_ptr, hh, offs_n, offs_i, rn, rh, ri, N, D):
    ptrs = hh * rh + offs_n[:, None] * rn + offs_i[None, :] * ri
    mask = (offs_n[:, None] < N) & (2 * offs_i[None, :] + 1 < D)
    return tl.load(cos_ptr + ptrs, mask=mask, other=1.0), tl.load(
        sin_ptr + ptrs, mask=mask, other=0.0
    )


@triton.jit
def _load_tile(ptr, b, hh, offs_n, offs_e, sb, sn, sh, sc, N, E):
    """A ``(BLOCK_N, BLOCK_V)`` tile of a ``(B, N, h, E)`` tensor, float32, zero outside."""
    ptrs = ptr + b * sb + hh * sh + offs_n[:, None] * sn + offs_e[None, :] * sc
    mask = (offs_n[:, None] < N) & (offs_e[None, :] < E)
    return tl.load(ptrs, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _load_state(ptr, bh, offs_i, offs_e, D, E):
    """Even and odd rows of the ``(d, d_v)`` matrix of program ``bh``: ``(BLOCK_H, BLOCK_V)``."""
    base = ptr + bh * D * E + offs_e[None, :]
    r0 = 2 * offs_i[:, None]
    col = offs_e[None, :] < E
    s0 = tl.load(base + r0 * E, mask=(r0 < D) & col, other=0.0)
    s1 = tl.load(base + (r0 + 1) * E, mask=(r0 + 1 < D) & col, other=0.0)
    return s0, s1


@triton.jit
def _load_vec(ptr, bh, offs_i, D):
    c0 = 2 * offs_i
    return (
        tl.load(ptr + bh * D + c0, mask=c0 < D, other=0.0),
        tl.load(ptr + bh * D + c0 + 1, mask=c0 + 1 < D, other=0.0),
    )


@triton.jit
def _reduce_kernel(
    k_ptr, skb, skn, skh, skc, v_ptr, svb, svn, svh, svc, part_s, part_k,
    cos_ptr, sin_ptr, rn, rh, ri, N, H, D, E, PER_SPLIT, SPLITS,
    HAS_ROPE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    split, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)
    b, hh = bh // H, bh % H
    offs_i, offs_e = tl.arange(0, BLOCK_H), tl.arange(0, BLOCK_V)
    acc0 = tl.zeros((BLOCK_H, BLOCK_V), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_H, BLOCK_V), dtype=tl.float32)
    ks0 = tl.zeros((BLOCK_H,), dtype=tl.float32)
    ks1 = tl.zeros((BLOCK_H,), dtype=tl.float32)
    for j in range(0, PER_SPLIT):
        offs_n = (split * PER_SPLIT + j) * BLOCK_N + tl.arange(0, BLOCK_N)
        k0, k1 = _load_pairs(k_ptr, b, hh, offs_n, offs_i, skb, skn, skh, skc, N, D)
        vv = _load_tile(v_ptr, b, hh, offs_n, offs_e, svb, svn, svh, svc, N, E)
        ks0 += tl.sum(k0, axis=0)
        ks1 += tl.sum(k1, axis=0)
        if HAS_ROPE:
            c, s = _load_rope(cos_ptr, sin_ptr, hh, offs_n, offs_i, rn, rh, ri, N, D)
            k0, k1 = k0 * c - k1 * s, k0 * s + k1 * c
        acc0 += tl.dot(tl.trans(k0), vv, input_precision="ieee")
        acc1 += tl.dot(tl.trans(k1), vv, input_precision="ieee")
    _store_partials(part_s, part_k, bh * SPLITS + split, acc0, acc1, ks0, ks1, offs_i, offs_e, D, E)


@triton.jit
def _out_kernel(
    q_ptr, sqb, sqn, sqh, sqc, o_ptr, sob, son, soh, soc, s_ptr, kbar_ptr,
    cos_ptr, sin_ptr, rn, rh, ri, N, H, D, E, eps,
    HAS_ROPE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    blk, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)
    b, hh = bh // H, bh % H
    offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_i, offs_e = tl.arange(0, BLOCK_H), tl.arange(0, BLOCK_V)
    q0, q1 = _load_pairs(q_ptr, b, hh, offs_n, offs_i, sqb, sqn, sqh, sqc, N, D)
    kb0, kb1 = _load_vec(kbar_ptr, bh, offs_i, D)
    den = tl.sum(q0 * kb0[None, :], axis=1) + tl.sum(q1 * kb1[None, :], axis=1) + eps
    if HAS_ROPE:
        c, s = _load_rope(cos_ptr, sin_ptr, hh, offs_n, offs_i, rn, rh, ri, N, D)
        q0, q1 = q0 * c - q1 * s, q0 * s + q1 * c
    s0, s1 = _load_state(s_ptr, bh, offs_i, offs_e, D, E)
    num = tl.dot(q0, s0, input_precision="ieee") + tl.dot(q1, s1, input_precision="ieee")
    out = num / den[:, None]
    ptrs = o_ptr + b * sob + hh * soh + offs_n[:, None] * son + offs_e[None, :] * soc
    mask = (offs_n[:, None] < N) & (offs_e[None, :] < E)
    tl.store(ptrs, out.to(o_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _grad_q_kernel(
    q_ptr, sqb, sqn, sqh, sqc, g_ptr, sgb, sgn, sgh, sgc, dq_ptr, sdb, sdn, sdh, sdc,
    s_ptr, kbar_ptr, part_s, part_k, cos_ptr, sin_ptr, rn, rh, ri,
    N, H, D, E, eps, PER_SPLIT, SPLITS,
    HAS_ROPE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    split, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)
    b, hh = bh // H, bh % H
    offs_i, offs_e = tl.arange(0, BLOCK_H), tl.arange(0, BLOCK_V)
    s0, s1 = _load_state(s_ptr, bh, offs_i, offs_e, D, E)
    kb0, kb1 = _load_vec(kbar_ptr, bh, offs_i, D)
    acc0 = tl.zeros((BLOCK_H, BLOCK_V), dtype=tl.float32)
    acc1 = tl.zeros((BLOCK_H, BLOCK_V), dtype=tl.float32)
    dk0 = tl.zeros((BLOCK_H,), dtype=tl.float32)
    dk1 = tl.zeros((BLOCK_H,), dtype=tl.float32)
    for j in range(0, PER_SPLIT):
        offs_n = (split * PER_SPLIT + j) * BLOCK_N + tl.arange(0, BLOCK_N)
        q0, q1 = _load_pairs(q_ptr, b, hh, offs_n, offs_i, sqb, sqn, sqh, sqc, N, D)
        g = _load_tile(g_ptr, b, hh, offs_n, offs_e, sgb, sgn, sgh, sgc, N, E)
        den = tl.sum(q0 * kb0[None, :], axis=1) + tl.sum(q1 * kb1[None, :], axis=1) + eps
        r0, r1 = q0, q1
        if HAS_ROPE:
            c, s = _load_rope(cos_ptr, sin_ptr, hh, offs_n, offs_i, rn, rh, ri, N, D)
            r0, r1 = q0 * c - q1 * s, q0 * s + q1 * c
        num = tl.dot(r0, s0, input_precision="ieee") + tl.dot(r1, s1, input_precision="ieee")
        g_num = g / den[:, None]
        g_den = tl.sum(g_num * num, axis=1) / den  # minus dL/d den
        d0 = tl.dot(g_num, tl.trans(s0), input_precision="ieee")  # dL/d rot(q), even channels
        d1 = tl.dot(g_num, tl.trans(s1), input_precision="ieee")
        if HAS_ROPE:
            d0, d1 = d0 * c + d1 * s, d1 * c - d0 * s
        d0 -= g_den[:, None] * kb0[None, :]
        d1 -= g_den[:, None] * kb1[None, :]
        _store_pairs(dq_ptr, d0, d1, b, hh, offs_n, offs_i, sdb, sdn, sdh, sdc, N, D)
        acc0 += tl.dot(tl.trans(r0), g_num, input_precision="ieee")
        acc1 += tl.dot(tl.trans(r1), g_num, input_precision="ieee")
        dk0 += tl.sum(q0 * g_den[:, None], axis=0)
        dk1 += tl.sum(q1 * g_den[:, None], axis=0)
    _store_partials(part_s, part_k, bh * SPLITS + split, acc0, acc1, dk0, dk1, offs_i, offs_e, D, E)


@triton.jit
def _grad_kv_kernel(
    k_ptr, skb, skn, skh, skc, v_ptr, svb, svn, svh, svc,
    dk_ptr, sdkb, sdkn, sdkh, sdkc, dv_ptr, sdvb, sdvn, sdvh, sdvc,
    ds_ptr, dkbar_ptr, cos_ptr, sin_ptr, rn, rh, ri, N, H, D, E,
    HAS_ROPE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_V: tl.constexpr,
):  # fmt: skip
    blk, bh = tl.program_id(0), tl.program_id(1).to(tl.int64)
    b, hh = bh // H, bh % H
    offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_i, offs_e = tl.arange(0, BLOCK_H), tl.arange(0, BLOCK_V)
    k0, k1 = _load_pairs(k_ptr, b, hh, offs_n, offs_i, skb, skn, skh, skc, N, D)
    vv = _load_tile(v_ptr, b, hh, offs_n, offs_e, svb, svn, svh, svc, N, E)
    ds0, ds1 = _load_state(ds_ptr, bh, offs_i, offs_e, D, E)
    db0, db1 = _load_vec(dkbar_ptr, bh, offs_i, D)
    d0 = tl.dot(vv, tl.trans(ds0), input_precision="ieee")  # dL/d rot(k)
    d1 = tl.dot(vv, tl.trans(ds1), input_precision="ieee")
    if HAS_ROPE:
        c, s = _load_rope(cos_ptr, sin_ptr, hh, offs_n, offs_i, rn, rh, ri, N, D)
        k0, k1 = k0 * c - k1 * s, k0 * s + k1 * c
        d0, d1 = d0 * c + d1 * s, d1 * c - d0 * s
    d0 += db0[None, :]
    d1 += db1[None, :]
    _store_pairs(dk_ptr, d0, d1, b, hh, offs_n, offs_i, sdkb, sdkn, sdkh, sdkc, N, D)
    dv = tl.dot(k0, ds0, input_precision="ieee") + tl.dot(k1, ds1, input_precision="ieee")
    ptrs = dv_ptr + b * sdvb + hh * sdvh + offs_n[:, None] * sdvn + offs_e[None, :] * sdvc
    mask = (offs_n[:, None] < N) & (offs_e[None, :] < E)
    tl.store(ptrs, dv.to(dv_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _store_partials(part_s, part_k, row, acc0, acc1, ks0, ks1, offs_i, offs_e, D, E):
    """Row ``row`` of ``(B * h * splits, d, d_v)`` and ``(B * h * splits, d)`` partials."""
    r0 = 2 * offs_i[:, None]
    col = offs_e[None, :] < E
    base = part_s + row * D * E + offs_e[None, :]
    tl.store(base + r0 * E, acc0, mask=(r0 < D) & col)
    tl.store(base + (r0 + 1) * E, acc1, mask=(r0 + 1 < D) & col)
    c0 = 2 * offs_i
    tl.store(part_k + row * D + c0, ks0, mask=c0 < D)
    tl.store(part_k + row * D + c0 + 1, ks1, mask=c0 + 1 < D)
