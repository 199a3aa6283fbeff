"""LGViT, HER-Seg's image encoder (code: ``SAM/LGViT.py``; paper v2: "CE-Encoder").

A non-hierarchical encoder: one patch embedding, then a constant token grid through a
convolutional stage (MBConv blocks) and attention stages of LGViT blocks (gated linear
attention, v2's "DLA" blocks). Attribute names follow the released code, so its encoder
weights map key for key (its persistent ``attn.rope.rotations`` buffers are recomputed here
per grid and are not part of the state dict).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from .attention import GatedLinearAttention, rope_tables

__all__ = ["LGViT", "LGViTBlock", "MBConv"]


class LGViT(nn.Module):
    """Patch embedding + ``depths[0]`` MBConv blocks + LGViT blocks on one token grid.

    Args:
        in_channels: image channels.
        patch_size: side of the (non-overlapping) patch embedding conv.
        embed_dim: token width, constant through the encoder (a multiple of 4).
        depths: blocks per stage; stage 0 is convolutional (MBConv), the others attention.
        num_heads: heads per stage (``len == len(depths)``); entry 0 is unused, stage 0 being
            convolutional (the released code's list has the same shape).
        mlp_ratio: FFN hidden width over ``embed_dim``; also the MBConv expansion.
        qkv_bias: bias in the Q/K projection.
        drop_path_rate: stochastic depth, linear from 0 over all ``sum(depths)`` blocks; the
            MBConv blocks take none (as in the code), the attention blocks their share.
        rope_base: RoPE frequency base.
        attn_impl: kernel implementation, see :func:`kernels.linear_attention`.

    Shapes:
        x: ``(B, in_channels, H, W)``, ``H`` and ``W`` multiples of ``patch_size`` ->
        ``(B, embed_dim, H / patch_size, W / patch_size)``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        patch_size: int = 16,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        drop_path_rate: float = 0.1,
        rope_base: float = 10000.0,
        attn_impl: str | None = None,
    ) -> None:
        super().__init__()
        depths, num_heads = list(depths), list(num_heads)
        if len(depths) < 1 or len(num_heads) != len(depths) or min(depths) < 0:
            raise ValueError(
                f"depths and num_heads need one entry per stage; got {depths}, {num_heads}"
            )
        self.patch_size, self.embed_dim, self.rope_base = patch_size, embed_dim, rope_base
        self.patch_embed = _PatchEmbed(in_channels, embed_dim, patch_size)
        total = sum(depths)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linspace
        self.layers = nn.ModuleList(
            [_Stage(MBConv(embed_dim, mlp_ratio) for _ in range(depths[0]))]
        )
        start = depths[0]
        for depth, heads in zip(depths[1:], num_heads[1:], strict=True):
            blocks = (
                LGViTBlock(
                    dim=embed_dim,
                    num_heads=heads,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    drop_path=dpr[start + i],
                    attn_impl=attn_impl,
                )
                for i in range(depth)
            )
            self.layers.append(_Stage(blocks))
            start += depth
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed.proj(x)  # (B, dim, gh, gw)
        for block in self.layers[0].blocks:
            x = block(x)
        b, c, gh, gw = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, dim), row-major
        rope = rope_tables((gh, gw), c, base=self.rope_base, device=x.device)
        for stage in self.layers[1:]:
            for block in stage.blocks:
                tokens = block(tokens, (gh, gw), rope)
        return tokens.transpose(1, 2).reshape(b, c, gh, gw)


class LGViTBlock(nn.Module):
    """Pre-LN gated linear attention + pre-LN FFN, each with a residual (v2: a "DLA" block).

    ``x = x + drop_path(out_proj(attn(LN(x)) * SiLU(act_proj(LN(x)))))``, then
    ``x = x + drop_path(FFN(LN(x)))`` with a GELU FFN ``dim -> mlp_ratio * dim -> dim``.

    Shapes:
        x: ``(B, N, dim)``; ``grid``: ``(gh, gw)`` with ``gh * gw == N``; ``rope``: tables of
        :func:`rope_tables` -> ``(B, N, dim)``.
    """

    def __init__(
        self,
        *,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        attn_impl: str | None = None,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.act_proj = nn.Linear(dim, dim)
        self.attn = GatedLinearAttention(
            dim=dim, num_heads=num_heads, qkv_bias=qkv_bias, impl=attn_impl
        )
        self.out_proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = _DropPath(drop_path)

    def forward(self, x: Tensor, grid: tuple[int, int], rope: tuple[Tensor, Tensor]) -> Tensor:
        y = self.norm1(x)
        gate = F.silu(self.act_proj(y))
        x = x + self.drop_path(self.out_proj(self.attn(y, grid, rope) * gate))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> BN -> GELU -> depthwise 3x3 -> BN -> GELU -> 1x1
    project -> BN (gamma initialised to 0) -> + x -> GELU. ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, expand_ratio: float = 2.0) -> None:
        super().__init__()
        hidden = int(channels * expand_ratio)
        self.conv1 = _ConvBN(channels, hidden, 1)
        self.conv2 = _ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = _ConvBN(hidden, channels, 1, bn_weight=0.0)

    def forward(self, x: Tensor) -> Tensor:
        y = F.gelu(self.conv2(F.gelu(self.conv1(x))))
        return F.gelu(self.conv3(y) + x)


class _ConvBN(nn.Sequential):
    """Bias-free conv (``c``) + BatchNorm (``bn``, weight ``bn_weight``, bias 0); same padding."""

    def __init__(
        self, c_in: int, c_out: int, kernel: int, *, groups: int = 1, bn_weight: float = 1.0
    ) -> None:
        super().__init__()
        self.add_module(
            "c", nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, groups=groups, bias=False)
        )
        self.add_module("bn", nn.BatchNorm2d(c_out))
        nn.init.constant_(self.bn.weight, bn_weight)
        nn.init.zeros_(self.bn.bias)


class _PatchEmbed(nn.Module):
    """``proj``: a ``patch x patch`` conv with stride ``patch`` (with bias)."""

    def __init__(self, in_channels: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)


class _Stage(nn.Module):
    """A container (``blocks``) so state-dict keys read ``layers.<stage>.blocks.<i>...``."""

    def __init__(self, blocks: Sequence[nn.Module] | object) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)  # type: ignore[arg-type]


class _Mlp(nn.Module):
    """``fc1 -> GELU -> fc2``: ``(..., dim) -> (..., dim)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode or at rate 0)."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = float(rate)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate:g}"


def _init_weights(m: nn.Module) -> None:
    """The code's LGViT init: Linear weights truncated normal (std 0.02), biases 0; LN 1/0."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
