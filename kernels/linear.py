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
  ``k, v``). Float32 temporaries are chunk-sized; bf16/fp16 inputs are accumulated in float32;
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
        tables = _expand_rope(tuple(t.to(_acc_dtype(q)) for t in rope), q)
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
    """Two chunked passes forward and backward; saves ``q, k, v`` and the ``(d, d_v)`` state."""

    @staticmethod
    def forward(ctx, q, k, v, rope, eps, chunk):
        state, kbar = _reduce_state(k, v, rope, chunk)
        acc = state.dtype
        out = torch.empty(*q.shape[:-1], v.shape[-1], dtype=q.dtype, device=q.device)
        both_mat = torch.cat((state, kbar[..., None]), -1) if rope is None else None
        for sl, rc in _chunks(q.shape[1], chunk, rope):
            qc = q[:, sl].to(acc)
            if rc is None:  # one GEMM gives numerator and normaliser
                both = torch.einsum("bnhd,bhde->bnhe", qc, both_mat)
                num, den = both[..., :-1], both[..., -1:]
            else:
                num = torch.einsum("bnhd,bhde->bnhe", rotate_pairs(qc, rc), state)
                den = torch.einsum("bnhd,bhd->bnh", qc, kbar)[..., None]
            torch.div(num, den + eps, out=out[:, sl])
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
        d_kbar = torch.zeros_like(kbar)  # (B, h, d)
        dq = torch.empty_like(q) if need_q else None
        for sl, rc in _chunks(n, chunk, rope):
            qc, gc = q[:, sl].to(acc), grad[:, sl].to(acc)
            qr = rotate_pairs(qc, rc)
            den = torch.einsum("bnhd,bhd->bnh", qc, kbar)[..., None] + ctx.eps  # (B, C, h, 1)
            g_num = gc / den  # d loss / d numerator
            num = torch.einsum("bnhd,bhde->bnhe", qr, state)
            g_den = num.mul_(g_num).sum(-1).div_(den[..., 0])  # minus dL/d den: (B, C, h)
            if need_q:
                dqc = _unrotate(torch.einsum("bnhe,bhde->bnhd", g_num, state), rc)
                dq[:, sl] = dqc.addcmul_(g_den[..., None], kbar[:, None], value=-1)
            d_state += torch.einsum("bnhd,bnhe->bhde", qr, g_num)
            d_kbar -= torch.einsum("bnh,bnhd->bhd", g_den, qc)
        if not (need_k or need_v):
            return dq, None, None, None, None, None
        d_state /= n
        d_kbar /= n
        dk = torch.empty_like(k) if need_k else None
        dv = torch.empty_like(v) if need_v else None
        for sl, rc in _chunks(n, chunk, rope):
            kc, vc = k[:, sl].to(acc), v[:, sl].to(acc)
            if need_k:
                dkc = _unrotate(torch.einsum("bnhe,bhde->bnhd", vc, d_state), rc)
                dk[:, sl] = dkc.add_(d_kbar[:, None])
            if need_v:
                dv[:, sl] = torch.einsum("bnhd,bhde->bnhe", rotate_pairs(kc, rc), d_state)
        return dq, dk, dv, None, None, None


def _reduce_state(k: Tensor, v: Tensor, rope: Rope | None, chunk: int) -> tuple[Tensor, Tensor]:
    """``S = sum_m rot(k[m]) v[m]^T / N`` ``(B, h, d, d_v)`` and ``mean_m k[m]`` ``(B, h, d)``,
    accumulated in float32 (float64 for float64 inputs) over chunks of ``N``."""
    batch, n, heads, dim = k.shape
    acc = _acc_dtype(k)
    state = k.new_zeros(batch, heads, dim, v.shape[-1], dtype=acc)
    for sl, rc in _chunks(n, chunk, rope):
        kr = rotate_pairs(k[:, sl].to(acc), rc)
        state += torch.einsum("bnhd,bnhe->bhde", kr, v[:, sl].to(acc))
    return state.div_(n), k.sum(1, dtype=acc).div_(n)


def _chunks(n: int, chunk: int, rope: Rope | None):
    """Yield ``(slice over N, RoPE tables of that slice ((C, h, d // 2) each) or None)``."""
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        yield sl, None if rope is None else (rope[0][sl], rope[1][sl])


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
    """Tokens per chunk so a float32 chunk of ``q`` or ``v`` is about 4 MiB (at least 64).

    A trade-off measured on 2 cores at N = 65,536, h * d = 128: with one thread, 2k-4k-token
    chunks are as fast as the unchunked reference forward and 2.4x faster forward+backward,
    16k-token chunks 1.5x slower backward (temporaries fall out of cache) and use more memory;
    with two threads on a loaded machine every op waits for both threads, so fewer, larger
    chunks win (4k-token chunks were up to 3x slower than one 16k chunk at N = 16,384).
    """
    per_token = q.shape[0] * q.shape[2] * max(q.shape[3], v.shape[3])
    return max(64, (1 << 20) // per_token)


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
