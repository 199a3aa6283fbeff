"""RAT building blocks: NAFNet blocks for the U-shaped body, R-MSA and W-MSA at the bottleneck.

All maps are channel-first ``(B, C, H, W)``. Every residual branch that the released code scales
by a learnable zero-initialised vector (NAFBlock ``beta``/``gamma``, BasicLayer ``lambda_ra``/
``lambda_wa``) is zero at construction, so those branches start as identities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.models.layers.attention import region_attention

__all__ = [
    "MLP",
    "BasicLayer",
    "Block",
    "LayerNorm2d",
    "NAFBlock",
    "RegionAttention",
    "SimpleGate",
    "WindowAttention",
    "attention_scale",
]


def attention_scale(qk_scale: str, num_heads: int, head_dim: int) -> float:
    """Softmax temperature: ``"heads"`` -> ``num_heads ** -0.5`` (released code), ``"head_dim"``
    -> ``head_dim ** -0.5`` (the usual transformer choice)."""
    if qk_scale == "heads":
        return num_heads**-0.5
    if qk_scale == "head_dim":
        return head_dim**-0.5
    raise ValueError(f"qk_scale must be 'heads' or 'head_dim', got {qk_scale!r}")


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of every pixel: ``(B, C, H, W) -> (B, C, H, W)``.

    Biased variance, ``eps`` inside the square root, per-channel affine (NAFNet's LayerNorm2d;
    autograd gives the same gradient as its hand-written backward).
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / (var + self.eps).sqrt()
        return self.weight[:, None, None] * y + self.bias[:, None, None]


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them: ``(B, 2C, ...) -> (B, C, ...)``."""

    def forward(self, x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """NAFNet block (no dropout): gated depthwise-conv branch with simplified channel attention,
    then a gated 1x1 feed-forward branch; each added back scaled by a zero-init vector.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``; the identity at construction.
    """

    def __init__(self, channels: int, dw_expand: int = 2, ffn_expand: int = 2) -> None:
        super().__init__()
        dw, ffn = channels * dw_expand, channels * ffn_expand
        self.norm1 = LayerNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.sg = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.conv3 = nn.Conv2d(dw // 2, channels, 1)
        self.norm2 = LayerNorm2d(channels)
        self.conv4 = nn.Conv2d(channels, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, channels, 1)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        h = self.sg(self.conv2(self.conv1(self.norm1(x))))
        y = x + self.conv3(h * self.sca(h)) * self.beta
        return y + self.conv5(self.sg(self.conv4(self.norm2(y)))) * self.gamma


class MLP(nn.Sequential):
    """1x1 conv -> GELU -> 1x1 conv: ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__(nn.Conv2d(channels, hidden, 1), nn.GELU(), nn.Conv2d(hidden, channels, 1))


class RegionAttention(nn.Module):
    """R-MSA: 1x1 conv q/k/v, multi-head self-attention within regions, 1x1 output conv.

    Calls :func:`region_attention` (tokens grouped per region; never a dense ``N x N`` mask).

    Args:
        channels: ``C``, split into ``num_heads`` heads.
        num_heads: heads; must divide ``C``.
        scale: softmax temperature (see :func:`attention_scale`).
        impl: kernel implementation, see :func:`kernels.region_attention`.

    Shapes:
        x: ``(B, C, H, W)``; plan: a ``RegionPlan`` (or ``(B, H * W)`` ids) for the raster
        order of the ``H x W`` tokens -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, num_heads: int, scale: float, impl: str | None) -> None:
        super().__init__()
        self.num_heads, self.scale, self.impl = num_heads, scale, impl
        self.qkv = nn.Conv2d(channels, channels * 3, 1)
        self.project_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor, plan: object) -> Tensor:
        b, c, h, w = x.shape
        # (B, 3C, H, W) -> three (B, N, heads, d) views in the released channel order
        q, k, v = (t.flatten(2).transpose(1, 2).unflatten(-1, (self.num_heads, -1))
                   for t in self.qkv(x).chunk(3, dim=1))  # fmt: skip
        out = region_attention(q, k, v, plan, scale=self.scale, impl=self.impl)
        return self.project_out(out.flatten(2).transpose(1, 2).reshape(b, c, h, w))


class WindowAttention(nn.Module):
    """W-MSA: non-overlapping ``window x window`` windows, Linear q/k/v and output, no shift and
    no relative position bias (as released).

    Shapes: ``(B, C, H, W) -> (B, C, H, W)`` with ``H`` and ``W`` multiples of ``window``.
    """

    def __init__(self, channels: int, num_heads: int, window: int, scale: float) -> None:
        super().__init__()
        self.num_heads, self.window, self.scale = num_heads, window, scale
        self.qkv = nn.Linear(channels, channels * 3)
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        s, heads = self.window, self.num_heads
        if h % s or w % s:
            raise ValueError(f"window attention needs sizes that are multiples of {s}, got {h, w}")
        # (B, C, H, W) -> (B * nW, s*s, C): windows in raster order, tokens raster inside
        win = x.view(b, c, h // s, s, w // s, s).permute(0, 2, 4, 3, 5, 1).reshape(-1, s * s, c)
        qkv = self.qkv(win).unflatten(-1, (3, heads, c // heads)).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=self.scale)
        out = self.proj_out(out.transpose(1, 2).reshape(-1, s * s, c))
        return out.view(b, h // s, w // s, s, s, c).permute(0, 5, 1, 3, 2, 4).reshape(b, c, h, w)


class BasicLayer(nn.Module):
    """One RAT bottleneck layer: R-MSA, MLP, W-MSA, MLP, each pre-norm with a residual; the two
    attention branches are scaled by per-channel zero-init ``lambda_ra`` / ``lambda_wa``.

    Shapes: x ``(B, C, H, W)``, plan for the ``H x W`` tokens -> ``(B, C, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        scale: float,
        impl: str | None,
    ) -> None:
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.norm_ra = LayerNorm2d(channels)
        self.ra = RegionAttention(channels, num_heads, scale, impl)
        self.lambda_ra = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.norm_ra_mlp = LayerNorm2d(channels)
        self.mlp_ra = MLP(channels, hidden)
        self.norm_wa = LayerNorm2d(channels)
        self.wa = WindowAttention(channels, num_heads, window_size, scale)
        self.lambda_wa = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.norm_wa_mlp = LayerNorm2d(channels)
        self.mlp_wa = MLP(channels, hidden)

    def forward(self, x: Tensor, plan: object) -> Tensor:
        x = x + self.lambda_ra * self.ra(self.norm_ra(x), plan)
        x = x + self.mlp_ra(self.norm_ra_mlp(x))
        x = x + self.lambda_wa * self.wa(self.norm_wa(x))
        return x + self.mlp_wa(self.norm_wa_mlp(x))


class Block(nn.Module):
    """``layers`` BasicLayers, a 3x3 conv, and a residual around them: ``(B, C, H, W)``."""

    def __init__(self, layers: int, channels: int, **layer_kwargs: object) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            BasicLayer(channels, **layer_kwargs)  # type: ignore[arg-type]
            for _ in range(layers)
        )
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, plan: object) -> Tensor:
        shortcut = x
        for layer in self.layers:
            x = layer(x, plan)
        return self.conv(x) + shortcut
