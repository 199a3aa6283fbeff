"""HER-Seg's gated linear attention (code: ``LinearAttention`` inside an LGViT block; paper v2:
the attention of the "dual-gated linear attention", DLA) and its 2-D rotary tables.

The O(N) product itself is :func:`kernels.linear_attention` (reached through
:mod:`medseg.models.layers`, the one seam to ``kernels``; the spec is :mod:`kernels.linear`);
this module only builds its inputs: ELU+1 features, the value bottleneck,
the RoPE tables and the LePE branch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from medseg.models.layers import check_impl, linear_attention

__all__ = ["GatedLinearAttention", "rope_tables"]


def rope_tables(
    grid: tuple[int, int], dim: int, *, base: float = 10000.0, device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Cosine and sine tables of the released code's 2-D RoPE over a token grid.

    Channel pair ``(2i, 2i+1)`` of the full ``dim`` is rotated by ``row * theta_i`` for
    ``i < dim / 4`` and by ``col * theta_(i - dim/4)`` for the other half, with
    ``theta_j = base ** (-j / (dim / 4))``: half of the frequencies per axis.

    Args:
        grid: ``(gh, gw)`` token grid; tokens are numbered row-major (``n = row * gw + col``).
        dim: channels (a multiple of 4).

    Returns:
        ``(cos, sin)``, each float32 ``(gh * gw, dim // 2)``.
    """
    if dim % 4:
        raise ValueError(f"2-D RoPE needs a channel count divisible by 4, got {dim}")
    gh, gw = grid
    k_max = dim // 4
    theta = base ** (-torch.arange(k_max, device=device, dtype=torch.float64) / k_max)
    rows = torch.arange(gh, device=device, dtype=torch.float64).repeat_interleave(gw)
    cols = torch.arange(gw, device=device, dtype=torch.float64).repeat(gh)
    angles = torch.cat([rows[:, None] * theta, cols[:, None] * theta], dim=-1)
    return angles.cos().float(), angles.sin().float()


class GatedLinearAttention(nn.Module):
    """Linear attention with ELU+1 kernels, a value bottleneck, RoPE and LePE (MLLA style).

    ``q, k = elu(Linear(x)) + 1`` (one ``dim -> 2 dim`` projection); ``v = Linear(SiLU(Linear(x)))``
    through ``dim // 4`` channels (no value projection of its own); the attention is
    :func:`linear_attention` per head with the RoPE tables (rotated features in the numerator,
    plain ones in the mean-K normaliser, ``eps = 1e-6``); LePE adds a depthwise 3x3 conv of ``v``
    seen as an image. The SiLU output gate and the output projection live in the block.

    Args:
        dim: channels (a multiple of 4 for the RoPE tables).
        num_heads: heads; must divide ``dim`` with an even head dim.
        qkv_bias: bias in the ``dim -> 2 dim`` Q/K projection.
        impl: kernel implementation, see :func:`kernels.linear_attention`.

    Shapes:
        x: ``(B, N, dim)`` with ``N = gh * gw`` row-major tokens; ``rope``: the tables of
        :func:`rope_tables` for ``grid`` (``(N, dim // 2)`` each) -> ``(B, N, dim)``.
    """

    def __init__(
        self, *, dim: int, num_heads: int, qkv_bias: bool = True, impl: str | None = None
    ) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads or (dim // num_heads) % 2 or dim % 4:
            raise ValueError(
                f"dim ({dim}) must be a multiple of 4 and of num_heads ({num_heads}) with an "
                "even head dim"
            )
        check_impl(impl, op="linear_attention")  # a misspelt name fails here, not mid-training
        self.dim, self.num_heads, self.impl = dim, num_heads, impl
        self.qk = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.lepe = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.up_proj = nn.Linear(dim, dim // 4)
        self.down_proj = nn.Linear(dim // 4, dim)

    def forward(self, x: Tensor, grid: tuple[int, int], rope: tuple[Tensor, Tensor]) -> Tensor:
        b, n, c = x.shape
        gh, gw = grid
        if n != gh * gw or c != self.dim:
            raise ValueError(f"expected (B, {gh * gw}, {self.dim}) tokens, got {tuple(x.shape)}")
        q, k = (F.elu(t) + 1.0 for t in self.qk(x).chunk(2, dim=-1))
        v = self.down_proj(F.silu(self.up_proj(x)))
        h = self.num_heads
        cos, sin = (t.view(n, h, -1) for t in rope)
        out = linear_attention(
            q.unflatten(-1, (h, -1)),
            k.unflatten(-1, (h, -1)),
            v.unflatten(-1, (h, -1)),
            rope=(cos, sin),
            eps=1e-6,
            impl=self.impl,
        ).flatten(-2)
        lepe = self.lepe(v.transpose(1, 2).reshape(b, c, gh, gw))
        return out + lepe.flatten(2).transpose(1, 2)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}"
