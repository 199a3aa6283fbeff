"""The one seam from models to :mod:`kernels`: projected multi-head window cross-attention, and
the kernels that models call directly (:func:`kernels.linear_attention` for HER-Seg,
:func:`kernels.region_attention` / :func:`kernels.region_plan` for RAT), re-exported here so
that no model package imports ``kernels`` itself."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from kernels import (
    check_impl,
    linear_attention,
    region_attention,
    region_plan,
    window_attention,
)

__all__ = [
    "WindowCrossAttention",
    "check_impl",
    "linear_attention",
    "region_attention",
    "region_plan",
]


class WindowCrossAttention(nn.Module):
    """Multi-head attention from a query map to a key/value map, restricted to aligned windows.

    Projects queries, keys and values, calls :func:`kernels.window_attention` (query window
    ``q_window`` attends to the key/value window at the same grid position) and projects back.
    With ``q_window == kv_window`` on one map it is window self-attention. The implementation
    (``"auto"``, ``"torch"``, ``"triton"``; ``None`` reads ``$MEDSEG_KERNELS``) is validated
    here, so a misspelt name fails at construction, and resolved per call from the device of the
    inputs (the module may move between CPU and GPU): an explicit ``"triton"`` with CPU inputs
    raises :class:`kernels.KernelUnavailableError` at the call.

    Args:
        spatial_dims: 2 or 3.
        q_dim: query map channels.
        kv_dim: key/value map channels.
        dim: attention width (``num_heads * head_dim``).
        num_heads: heads; must divide ``dim``.
        q_window: query window side (int or one per axis).
        kv_window: key/value window side (int or one per axis).
        out_dim: output channels; ``q_dim`` by default.
        qkv_bias: bias in the q/k/v projections.
        impl: kernel implementation, see :func:`kernels.window_attention`.

    Shapes:
        query: ``(B, *S_q, q_dim)``; key: ``(B, *S_kv, kv_dim)``; value: like key (defaults to
        key) -> ``(B, *S_q, out_dim)``. Channel-last; the window grids of ``S_q`` and ``S_kv``
        must match (see :mod:`kernels.window`).
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        q_dim: int,
        kv_dim: int,
        dim: int,
        num_heads: int,
        q_window: int | Sequence[int],
        kv_window: int | Sequence[int],
        out_dim: int | None = None,
        qkv_bias: bool = True,
        impl: str | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must be >= 1 and divide dim ({dim})")
        self.spatial_dims = spatial_dims
        self.num_heads = num_heads
        self.q_window = _as_tuple(q_window, spatial_dims)
        self.kv_window = _as_tuple(kv_window, spatial_dims)
        check_impl(impl, op="window_attention")
        self.impl = impl
        self.q_proj = nn.Linear(q_dim, dim, bias=qkv_bias)
        self.k_proj = nn.Linear(kv_dim, dim, bias=qkv_bias)
        self.v_proj = nn.Linear(kv_dim, dim, bias=qkv_bias)
        self.out_proj = nn.Linear(dim, q_dim if out_dim is None else out_dim)

    def forward(self, query: Tensor, key: Tensor, value: Tensor | None = None) -> Tensor:
        if query.ndim != self.spatial_dims + 2 or key.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"expected channel-last (B, *S, C) maps with {self.spatial_dims} spatial axes, "
                f"got query {tuple(query.shape)}, key {tuple(key.shape)}"
            )
        value = key if value is None else value
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(key))
        v = self._heads(self.v_proj(value))
        out = window_attention(
            q, k, v, q_window=self.q_window, kv_window=self.kv_window, impl=self.impl
        )
        return self.out_proj(out.flatten(-2))

    def _heads(self, x: Tensor) -> Tensor:
        """``(B, *S, h * d) -> (B, *S, h, d)`` (a view)."""
        return x.unflatten(-1, (self.num_heads, -1))


def _as_tuple(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    return (value,) * n if isinstance(value, int) else tuple(value)
