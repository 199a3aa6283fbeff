"""Gated linear attention of HER-Seg (MLLA style): O(N) non-causal attention with a mean-K
normaliser and optional RoPE on the numerator.

Definition (``linear_attention_reference`` below is the spec). Per batch ``b`` and head ``h``:

- ``q``, ``k``: ``(B, N, h, d)`` **non-negative features**: the caller applies the kernel
  feature map (HER-Seg: ``elu(x) + 1``); ``v``: ``(B, N, h, d_v)``;
- ``rope``: ``None`` or ``(cos, sin)``, each broadcastable to ``(N, h, d // 2)``: channel pair
  ``(2i, 2i+1)`` of a token is rotated by the angle whose cosine/sine are ``cos[..., i]``,
  ``sin[..., i]``: ``(x0, x1) -> (x0 cos - x1 sin, x0 sin + x1 cos)``. Without ``rope`` the
  rotation is the identity;
- ``out[n] = rot(q[n]) . (sum_m rot(k[m]) v[m]^T) / N  /  (q[n] . mean_m k[m] + eps)``:
  the numerator uses the rotated features, the normaliser the unrotated ones.
- Output: ``(B, N, h, d_v)``, same dtype as ``q``.

Paths (``linear_attention`` dispatches, see :func:`kernels._dispatch.resolve_impl`):

- ``linear_attention_reference``: the spec above, in float32, autograd through einsums;
- ``"torch"`` (:func:`linear_attention_torch`): two passes over ``N`` in chunks of
  ``chunk_size`` tokens: the first accumulates the ``(d, d_v)`` state ``S = sum rot(k) v^T / N``
  and ``mean k`` per head, the second writes the outputs chunk by chunk. A custom autograd
  function saves only ``q, k, v`` and the small state, and its backward is two chunked passes
  too (``dq`` and the ``dS``/``d mean k`` reductions over ``q``, then ``dk``/``dv`` over
  ``k, v``). Per chunk the forward runs two batched GEMMs and the backward four, each on a
  head-major float32 copy of the chunk. Float32 temporaries are chunk-sized; bf16/fp16
  inputs are accumulated in float32;
- ``"triton"``: the same two passes as Triton kernels, forward and backward
  (:mod:`kernels._triton_linear`).

The RoPE tables are constants for the fast paths: when one of them requires a gradient (and
grad mode is on), the reference runs instead, so their gradient stays exact.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._dispatch import resolve_impl

__all__ = [
    "linear_attention",
    "linear_attention_reference",
    "linear_attention_torch",
    "rotate_pairs",
]

_OP = "linear_attention"
Rope = tuple[Tensor, Tensor]


def linear_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    rope: Rope | None = None,
    eps: float = 1e-6,
    chunk_size: int | None = None,
    impl: str | None = None,
) -> Tensor:
    """HER-Seg's linear attention (see the module docstring for the exact definition).

    Args:
        q: ``(B, N, h, d)`` non-negative query features (after ``elu + 1``).
        k: ``(B, N, h, d)`` non-negative key features.
        v: ``(B, N, h, d_v)`` values.
        rope: ``None`` or ``(cos, sin)``, each broadcastable to ``(N, h, d // 2)``.
        eps: added to the normaliser ``q . mean k``.
        chunk_size: tokens per chunk of the torch path (``None``: chosen from the shapes);
            the Triton path ignores it.
        impl: ``"auto"``, ``"torch"``, ``"triton"``, or ``None`` for ``$MEDSEG_KERNELS``.

    Returns:
        ``(B, N, h, d_v)``, same dtype and device as ``q``.

    Raises:
        ValueError: bad shapes, RoPE tables, ``chunk_size`` or ``impl`` name.
        kernels.KernelUnavailableError: ``impl="triton"`` where Triton cannot run.
    """
    _check(q, k, v, rope)
    name = resolve_impl(impl, op=_OP, device=q.device)
    if rope is not None and torch.is_grad_enabled() and any(t.requires_grad for t in rope):
        return linear_attention_reference(q, k, v, rope=rope, eps=eps)
    if name == "triton":
        from ._triton_linear import linear_attention_triton

        return linear_attention_triton(q, k, v, rope=rope, eps=eps)
    return linear_attention_torch(q, k, v, rope=rope, eps=eps, chunk_size=chunk_size)


def linear_attention_torch(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    rope: Rope | None = None,
    eps: float = 1e-6,
    chunk_size: int | None = None,
) -> Tensor:
    """The chunked torch path: ``(B, N, h, d), (B, N, h, d), (B, N, h, d_v) -> (B, N, h, d_v)``.

    Memory beyond the output is ``O(chunk_size * h * (d + d_v))`` per batch item plus the
    ``(B, h, d, d_v)`` state; the RoPE tables get no gradient (see :func:`linear_attention`).
    """
    _check(q, k, v, rope)
    if chunk_size is None:
        chunk_size = _default_chunk(q, v)
    elif not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"{_OP}: chunk_size must be a positive int, got {chunk_size!r}")
    tables = None
    if rope is not None:  # cast the small tables first, then broadcast (views, no copy)
        tables = _heads_rope(_expand_rope(tuple(t.to(_acc_dtype(q)) for t in rope), q))
    return _ChunkedLinearAttention.apply(q, k, v, tables, eps, chunk_size)


def rotate_pairs(x: Tensor, rope: tuple[Tensor, Tensor] | None) -> Tensor:
    """Rotate channel pairs ``(2i, 2i+1)`` of ``x`` ``(B, N, h, d)`` by ``rope = (cos, sin)``
    (each broadcastable to ``(N, h, d // 2)``); identity when ``rope`` is None."""
    if rope is None:
        return x
    cos, sin = rope
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1)
    return out.flatten(-2)


def linear_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, *, rope: tuple[Tensor, Tensor] | None = None, eps: float = 1e-6
) -> Tensor:
    """The spec (see the module docstring); computed in float32, returned in ``q.dtype``."""
    if q.ndim != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"expected q, k (B, N, h, d) and v (B, N, h, d_v); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[-1] % 2 and rope is not None:
        raise ValueError(f"rope needs an even head dim, got {q.shape[-1]}")
    qf, kf, vf = q.float(), k.float(), v.float()
    n = q.shape[1]
    kv = torch.einsum("bmhd,bmhe->bhde", rotate_pairs(kf, rope), vf) / n
    num = torch.einsum("bnhd,bhde->bnhe", rotate_pairs(qf, rope), kv)
    den = torch.einsum("bnhd,bhd->bnh", qf, kf.mean(dim=1)) + eps
    return (num / den[..., None]).to(q.dtype)


class _ChunkedLinearAttention(torch.autograd.Function):
    """Two chunked passes forward and backward; saves ``q, k, v``, ``S`` and ``kbar``.

    Each chunk is copied to head-major ``(B, h, C, c)`` float32 (in cache, cheap), so every
    product is one batched GEMM on contiguous matrices, and the normaliser is a row-vector
    product ``kbar q^T``. Backward needs no recomputed numerator: with ``g' = g / den`` and
    ``P = g' S^T`` (the numerator's part of ``dq``), ``sum_e num_e g'_e = rot(q) . P``.
    """

    @staticmethod
    def forward(ctx, q, k, v, rope, eps, chunk):
        state, kbar = _reduce_state(k, v, rope, chunk)  # (B, h, d, d_v), (B, h, 1, d)
        out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
        for sl, rc in _chunks(q.shape[1], chunk, rope):
            qc = _heads_first(q[:, sl], state.dtype)  # (B, h, C, d)
            num = rotate_pairs(qc, rc) @ state
            torch.div(num, _normaliser(qc, kbar, eps), out=out[:, sl].transpose(1, 2))
        ctx.save_for_backward(q, k, v, state, kbar, *(() if rope is None else rope))
        ctx.eps, ctx.chunk = eps, chunk
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        q, k, v, state, kbar, *tables = ctx.saved_tensors
        rope = tuple(tables) if tables else None
        n, chunk, acc = q.shape[1], ctx.chunk, state.dtype
        need_q, need_k, need_v = ctx.needs_input_grad[:3]
        d_state = torch.zeros_like(state)  # (B, h, d, d_v)
        d_kbar = torch.zeros_like(kbar)  # (B, h, 1, d)
        dq = torch.empty_like(q) if need_q else None
        for sl, rc in _chunks(n, chunk, rope):
            qc = _heads_first(q[:, sl], acc)  # (B, h, C, d)
            den = _normaliser(qc, kbar, ctx.eps)  # (B, h, C, 1)
            g_num = grad[:, sl].transpose(1, 2) / den  # d loss / d numerator: (B, h, C, d_v)
            qr = rotate_pairs(qc, rc)
            part = g_num @ state.transpose(-1, -2)  # d loss / d rot(q): (B, h, C, d)
            g_den = torch.linalg.vecdot(qr, part).unsqueeze(-1).div_(den)  # minus dL/d den
            if need_q:
                dqc = _unrotate(part, rc).addcmul_(g_den, kbar, value=-1)
                dq[:, sl].transpose(1, 2).copy_(dqc)
            d_state += qr.transpose(-1, -2) @ g_num
            d_kbar -= g_den.transpose(-1, -2) @ qc
        if not (need_k or need_v):
            return dq, None, None, None, None, None
        d_state /= n
        d_kbar /= n
        dk = torch.empty_like(k) if need_k else None
        dv = torch.empty_like(v) if need_v else None
        for sl, rc in _chunks(n, chunk, rope):
            if need_k:
                vc = _heads_first(v[:, sl], acc)
                dkc = _unrotate(vc @ d_state.transpose(-1, -2), rc).add_(d_kbar)
                dk[:, sl].transpose(1, 2).copy_(dkc)
            if need_v:
                kr = rotate_pairs(_heads_first(k[:, sl], acc), rc)
                dv[:, sl].transpose(1, 2).copy_(kr @ d_state)
        return dq, dk, dv, None, None, None


def _reduce_state(k: Tensor, v: Tensor, rope: Rope | None, chunk: int) -> tuple[Tensor, Tensor]:
    """``S = sum_m rot(k[m]) v[m]^T / N`` ``(B, h, d, d_v)`` and ``kbar = mean_m k[m]``
    ``(B, h, 1, d)``, accumulated in float32 (float64 for float64 inputs) over chunks."""
    batch, n, heads, dim = k.shape
    acc = _acc_dtype(k)
    state = k.new_zeros(batch, heads, dim, v.shape[-1], dtype=acc)
    kbar = k.new_zeros(batch, heads, 1, dim, dtype=acc)
    for sl, rc in _chunks(n, chunk, rope):
        kc = _heads_first(k[:, sl], acc)  # (B, h, C, d)
        state += rotate_pairs(kc, rc).transpose(-1, -2) @ _heads_first(v[:, sl], acc)
        kbar += kc.sum(-2, keepdim=True)
    return state.div_(n), kbar.div_(n)


def _normaliser(qc: Tensor, kbar: Tensor, eps: float) -> Tensor:
    """``q . kbar + eps``: ``(B, h, C, d), (B, h, 1, d) -> (B, h, C, 1)`` (a row-vector product:
    the column form ``q @ kbar^T`` is several times slower on CPU)."""
    return (kbar @ qc.transpose(-1, -2)).transpose(-1, -2).add_(eps)


def _heads_first(x: Tensor, acc: torch.dtype) -> Tensor:
    """``(B, C, h, c)`` -> contiguous ``(B, h, C, c)`` in ``acc``."""
    x = x.transpose(1, 2)
    return x.contiguous() if x.dtype == acc else x.to(acc, memory_format=torch.contiguous_format)


def _heads_rope(rope: Rope) -> Rope:
    """``(N, h, d // 2)`` tables -> ``(h, N, d // 2)`` views, matching head-major chunks."""
    return tuple(t.transpose(0, 1) for t in rope)  # type: ignore[return-value]


def _chunks(n: int, chunk: int, rope: Rope | None):
    """Yield ``(slice over N, head-major RoPE tables of that slice ((h, C, d // 2) each) or
    None)``; ``rope`` holds ``(h, N, d // 2)`` tables (:func:`_heads_rope`)."""
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        yield sl, None if rope is None else (rope[0][:, sl], rope[1][:, sl])


def _acc_dtype(x: Tensor) -> torch.dtype:
    """Accumulation dtype: float32, or float64 for float64 inputs (gradcheck)."""
    return torch.promote_types(x.dtype, torch.float32)


def _unrotate(x: Tensor, rope: Rope | None) -> Tensor:
    """The transpose (inverse) of :func:`rotate_pairs`: rotate by minus the angle."""
    return x if rope is None else rotate_pairs(x, (rope[0], -rope[1]))


def _expand_rope(rope: Rope, q: Tensor) -> Rope:
    """Broadcast ``(cos, sin)`` to ``(N, h, d // 2)`` views (no copy)."""
    shape = (q.shape[1], q.shape[2], q.shape[3] // 2)
    try:
        return tuple(torch.broadcast_to(t, shape) for t in rope)  # type: ignore[return-value]
    except RuntimeError as err:
        raise ValueError(
            f"{_OP}: rope tables {tuple(rope[0].shape)}, {tuple(rope[1].shape)} do not "
            f"broadcast to (N, h, d // 2) = {shape}"
        ) from err


def _default_chunk(q: Tensor, v: Tensor) -> int:
    """Tokens per chunk so a float32 chunk of ``q`` or ``v`` is about 1 MiB (at least 64).

    Measured on the 2-core dev CPU (1 MiB L2 per core, 2 threads), forward + backward: at
    N = 65,536, h = 4, d = 32, 1-2 MiB chunks (2k-4k tokens) take 0.85x the time of 4 MiB ones
    (106 vs 123 ms) and are as fast at N = 4,096; on HER-Seg's shapes with RoPE (B = 2,
    N = 4,096, h = 6 / 24, d = 16 / 4) 1 MiB chunks take 0.5-0.6x the time of one 4 MiB chunk,
    because the per-chunk temporaries then stay in L2.
    """
    per_token = q.shape[0] * q.shape[2] * max(q.shape[3], v.shape[3])
    return max(64, (1 << 18) // per_token)


def _check(q: Tensor, k: Tensor, v: Tensor, rope: Rope | None) -> None:
    """Validate shapes, devices and the RoPE tables (the reference's rules plus ``N >= 1``)."""
    if q.ndim != 4 or k.shape != q.shape or v.ndim != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"{_OP}: expected q, k (B, N, h, d) and v (B, N, h, d_v); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if q.shape[1] < 1:
        raise ValueError(f"{_OP}: needs at least one token, got N = 0")
    if not (q.device == k.device == v.device):
        raise ValueError(f"{_OP}: q, k, v on different devices: {q.device}, {k.device}, {v.device}")
    if rope is not None:
        if q.shape[-1] % 2:
            raise ValueError(f"{_OP}: rope needs an even head dim, got {q.shape[-1]}")
        if len(rope) != 2 or any(t.device != q.device for t in rope):
            raise ValueError(f"{_OP}: rope must be (cos, sin) on {q.device}")
        _expand_rope(rope, q)
