"""Varlen ("segment") flash attention in Triton: forward and backward kernels, one autograd op.

Packed layout: ``q`` is ``(M_q, h, d)``, ``k`` is ``(M_kv, h, d)``, ``v`` is ``(M_kv, h, d_v)``:
the tokens of ``S`` segments stored one after the other. ``cu_q`` and ``cu_kv`` (``(S + 1,)``
int32, starting at 0, non-decreasing) give where each segment starts: the queries
``cu_q[s]:cu_q[s+1]`` attend to the keys/values ``cu_kv[s]:cu_kv[s+1]`` and to nothing else.
Per head, ``out[i] = softmax_j(scale * q[i] . k[j]) v[j]`` over the segment's keys; a query whose
key segment is empty gets zeros. Region attention uses segments = regions (tokens sorted by id),
window attention segments = windows (see :mod:`kernels.region` and :mod:`kernels.window`).

The kernels follow the FlashAttention-2 recipe: an online softmax over key tiles in the forward
pass, which also saves the row log-sum-exp (base 2); the backward recomputes the probabilities
tile by tile, one kernel for ``dk, dv`` (one program per key tile, looping over the segment's
query tiles) and one for ``dq`` (one program per query tile), so no atomics are needed and the
gradients are deterministic. Programs are launched from a table of ``(segment, first row)``
tiles, so uneven segments waste no programs. Accumulation is float32; ``float32`` inputs use
IEEE products (not TF32), half-precision inputs the tensor cores.

The same code runs on CPU tensors under ``TRITON_INTERPRET=1`` (read by Triton when this module
is imported): no autotuning, no device queries, no methods on loop variables.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["segment_attention"]

_LOG2E = 1.4426950408889634


@triton.jit
def _fwd_kernel(
    Q, K, V, OUT, LSE, TILE_SEG, TILE_ROW, CU_Q, CU_KV,
    s_qm, s_qh, s_km, s_kh, s_vm, s_vh, s_om, s_oh, heads, qk_scale,
    D: tl.constexpr, DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    tile, head = tl.program_id(0), tl.program_id(1)
    seg = tl.load(TILE_SEG + tile)
    q_end = tl.load(CU_Q + seg + 1)
    kv_start, kv_end = tl.load(CU_KV + seg), tl.load(CU_KV + seg + 1)
    rows = tl.load(TILE_ROW + tile) + tl.arange(0, BLOCK_M)
    cols_d, cols_dv = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    row_ok = rows < q_end
    q = tl.load(
        Q + rows[:, None] * s_qm + head * s_qh + cols_d[None, :],
        mask=row_ok[:, None] & (cols_d < D)[None, :],
        other=0.0,
    )
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for start in range(kv_start, kv_end, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)
        key_ok = keys < kv_end
        kt = tl.load(
            K + keys[None, :] * s_km + head * s_kh + cols_d[:, None],
            mask=key_ok[None, :] & (cols_d < D)[:, None],
            other=0.0,
        )  # (BLOCK_D, BLOCK_N)
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
        s = tl.where(key_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(
            V + keys[:, None] * s_vm + head * s_vh + cols_dv[None, :],
            mask=key_ok[:, None] & (cols_dv < DV)[None, :],
            other=0.0,
        )
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m_i = m_new
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    acc = acc / l_safe[:, None]
    tl.store(
        OUT + rows[:, None] * s_om + head * s_oh + cols_dv[None, :],
        acc.to(OUT.dtype.element_ty),
        mask=row_ok[:, None] & (cols_dv < DV)[None, :],
    )
    tl.store(LSE + rows * heads + head, m_i + tl.log2(l_safe), mask=row_ok)


@triton.jit
def _bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK_OUT, DV_OUT, TILE_SEG, TILE_ROW, CU_Q, CU_KV,
    s_qm, s_qh, s_km, s_kh, s_vm, s_vh, s_dom, s_doh, heads, qk_scale, scale,
    D: tl.constexpr, DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    tile, head = tl.program_id(0), tl.program_id(1)
    seg = tl.load(TILE_SEG + tile)
    q_start, q_end = tl.load(CU_Q + seg), tl.load(CU_Q + seg + 1)
    kv_end = tl.load(CU_KV + seg + 1)
    keys = tl.load(TILE_ROW + tile) + tl.arange(0, BLOCK_N)
    cols_d, cols_dv = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    key_ok = keys < kv_end
    d_ok, dv_ok = cols_d < D, cols_dv < DV
    k = tl.load(
        K + keys[:, None] * s_km + head * s_kh + cols_d[None, :],
        mask=key_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    v = tl.load(
        V + keys[:, None] * s_vm + head * s_vh + cols_dv[None, :],
        mask=key_ok[:, None] & dv_ok[None, :],
        other=0.0,
    )
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    for start in range(q_start, q_end, BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_ok = rows < q_end
        q = tl.load(
            Q + rows[:, None] * s_qm + head * s_qh + cols_d[None, :],
            mask=row_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        do = tl.load(
            DO + rows[:, None] * s_dom + head * s_doh + cols_dv[None, :],
            mask=row_ok[:, None] & dv_ok[None, :],
            other=0.0,
        )
        lse = tl.load(LSE + rows * heads + head, mask=row_ok, other=0.0)
        delta = tl.load(DELTA + rows * heads + head, mask=row_ok, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        p = tl.exp2(s - lse[:, None])
        p = tl.where(row_ok[:, None] & key_ok[None, :], p, 0.0)  # (BLOCK_M, BLOCK_N)
        dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PRECISION)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PRECISION)
    tl.store(
        DK_OUT + keys[:, None] * s_km + head * s_kh + cols_d[None, :],
        (dk * scale).to(DK_OUT.dtype.element_ty),
        mask=key_ok[:, None] & d_ok[None, :],
    )
    tl.store(
        DV_OUT + keys[:, None] * s_vm + head * s_vh + cols_dv[None, :],
        dv.to(DV_OUT.dtype.element_ty),
        mask=key_ok[:, None] & dv_ok[None, :],
    )


@triton.jit
def _bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ_OUT, TILE_SEG, TILE_ROW, CU_Q, CU_KV,
    s_qm, s_qh, s_km, s_kh, s_vm, s_vh, s_dom, s_doh, heads, qk_scale, scale,
    D: tl.constexpr, DV: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, PRECISION: tl.constexpr,
):  # fmt: skip
    tile, head = tl.program_id(0), tl.program_id(1)
    seg = tl.load(TILE_SEG + tile)
    q_end = tl.load(CU_Q + seg + 1)
    kv_start, kv_end = tl.load(CU_KV + seg), tl.load(CU_KV + seg + 1)
    rows = tl.load(TILE_ROW + tile) + tl.arange(0, BLOCK_M)
    cols_d, cols_dv = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_DV)
    row_ok = rows < q_end
    d_ok, dv_ok = cols_d < D, cols_dv < DV
    q = tl.load(
        Q + rows[:, None] * s_qm + head * s_qh + cols_d[None, :],
        mask=row_ok[:, None] & d_ok[None, :],
        other=0.0,
    )
    do = tl.load(
        DO + rows[:, None] * s_dom + head * s_doh + cols_dv[None, :],
        mask=row_ok[:, None] & dv_ok[None, :],
        other=0.0,
    )
    lse = tl.load(LSE + rows * heads + head, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + rows * heads + head, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(kv_start, kv_end, BLOCK_N):
        keys = start + tl.arange(0, BLOCK_N)
        key_ok = keys < kv_end
        k = tl.load(
            K + keys[:, None] * s_km + head * s_kh + cols_d[None, :],
            mask=key_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        v = tl.load(
            V + keys[:, None] * s_vm + head * s_vh + cols_dv[None, :],
            mask=key_ok[:, None] & dv_ok[None, :],
            other=0.0,
        )
        s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale
        p = tl.exp2(s - lse[:, None])
        p = tl.where(row_ok[:, None] & key_ok[None, :], p, 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PRECISION)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=PRECISION)
    tl.store(
        DQ_OUT + rows[:, None] * s_qm + head * s_qh + cols_d[None, :],
        (dq * scale).to(DQ_OUT.dtype.element_ty),
        mask=row_ok[:, None] & d_ok[None, :],
    )


def segment_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    cu_q: Tensor,
    cu_kv: Tensor,
    *,
    scale: float | None = None,
    max_len: int | None = None,
    block: int | None = None,
) -> Tensor:
    """Attention within segments (see the module docstring); differentiable in q, k, v.

    Args:
        q: ``(M_q, h, d)``; k: ``(M_kv, h, d)``; v: ``(M_kv, h, d_v)``; same dtype and device.
        cu_q, cu_kv: ``(S + 1,)`` integer segment starts on the same device, from 0 to
            ``M_q`` / ``M_kv``.
        scale: softmax temperature, ``d ** -0.5`` by default.
        max_len: the longest query or key segment, if the caller knows it (saves reading the
            offsets back from the GPU); only used to pick the tile size.
        block: tile size for both queries and keys (16, 32 or 64); chosen from the longest
            segment by default. Tests set it to make the kernels loop over several tiles.

    Returns:
        ``(M_q, h, d_v)`` in the dtype of ``q``.
    """
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3 or k.shape[:2] != v.shape[:2]:
        raise ValueError(f"expected (M, h, d) tensors, got {q.shape}, {k.shape}, {v.shape}")
    if q.shape[1:] != k.shape[1:] or cu_q.shape != cu_kv.shape or cu_q.ndim != 1:
        raise ValueError(f"mismatched shapes: q {q.shape}, k {k.shape}, cu {cu_q.shape}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    cu_q, cu_kv = cu_q.to(torch.int32), cu_kv.to(torch.int32)
    return _SegmentAttention.apply(q, k, v, cu_q, cu_kv, scale, max_len, block)


class _SegmentAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_q, cu_kv, scale, max_len, block):  # noqa: ANN001, ANN205
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        cfg = _Config(q, v, cu_q, cu_kv, max_len, block)
        out = torch.empty(*q.shape[:2], v.shape[-1], dtype=q.dtype, device=q.device)
        lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device)
        tiles = _tiles(cu_q, cfg.block)
        if tiles[0].numel():
            _fwd_kernel[(tiles[0].numel(), q.shape[1])](
                q, k, v, out, lse, *tiles, cu_q, cu_kv,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                out.stride(0), out.stride(1), q.shape[1], scale * _LOG2E, **cfg.constants,
            )  # fmt: skip
        ctx.save_for_backward(q, k, v, out, lse, cu_q, cu_kv, *tiles)
        ctx.scale, ctx.cfg = scale, cfg
        return out

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        q, k, v, out, lse, cu_q, cu_kv, *q_tiles = ctx.saved_tensors
        scale, cfg = ctx.scale, ctx.cfg
        do = grad_out.contiguous()
        delta = (do.float() * out.float()).sum(-1)  # (M_q, h)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        heads = q.shape[1]
        common = (
            q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
            do.stride(0), do.stride(1), heads, scale * _LOG2E, scale,
        )  # fmt: skip
        kv_tiles = _tiles(cu_kv, cfg.block)
        if kv_tiles[0].numel():
            _bwd_dkdv_kernel[(kv_tiles[0].numel(), heads)](
                q, k, v, do, lse, delta, dk, dv, *kv_tiles, cu_q, cu_kv, *common, **cfg.constants
            )
        else:
            dk.zero_()
            dv.zero_()
        if q_tiles[0].numel():
            _bwd_dq_kernel[(q_tiles[0].numel(), heads)](
                q, k, v, do, lse, delta, dq, *q_tiles, cu_q, cu_kv, *common, **cfg.constants
            )
        return dq, dk, dv, None, None, None, None, None


class _Config:
    """Compile-time constants of one call: tile sizes, padded head dims, dot precision."""

    def __init__(
        self,
        q: Tensor,
        v: Tensor,
        cu_q: Tensor,
        cu_kv: Tensor,
        max_len: int | None,
        block: int | None,
    ):
        block_d = max(16, triton.next_power_of_2(q.shape[-1]))
        block_dv = max(16, triton.next_power_of_2(v.shape[-1]))
        if block is None:  # 64-row tiles unless a row of the head dims is wider than 256 bytes
            if max_len is None:
                longest = max((cu_q[1:] - cu_q[:-1]).max(), (cu_kv[1:] - cu_kv[:-1]).max())
                max_len = int(longest)
            cap = 64 if max(block_d, block_dv) * q.element_size() <= 256 else 32
            block = min(cap, max(16, triton.next_power_of_2(max(max_len, 1))))
        if block not in (16, 32, 64, 128):
            raise ValueError(f"block must be 16, 32, 64 or 128, got {block}")
        self.block = block
        self.constants = {
            "D": q.shape[-1],
            "DV": v.shape[-1],
            "BLOCK_M": block,
            "BLOCK_N": block,
            "BLOCK_D": block_d,
            "BLOCK_DV": block_dv,
            "PRECISION": "ieee" if q.dtype == torch.float32 else "tf32",
            "enable_fp_fusion": True,  # a launch option (fused multiply-add), not an argument
        }


def _tiles(cu: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """``(segment, first row)`` of every ``block``-row tile of every segment: two ``(T,)`` int32."""
    lengths = (cu[1:] - cu[:-1]).long()
    counts = (lengths + block - 1) // block
    segment = torch.repeat_interleave(torch.arange(lengths.numel(), device=cu.device), counts)
    first_tile = torch.cumsum(counts, 0) - counts
    index = torch.arange(segment.numel(), device=cu.device)
    row = cu[:-1].long()[segment] + (index - first_tile[segment]) * block
    return segment.to(torch.int32), row.to(torch.int32)
