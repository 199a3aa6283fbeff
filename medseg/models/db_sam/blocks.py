"""DB-SAM adapter blocks: cross-attention, ConvFFN, SE channel attention, fusion (DANE).

Token maps are channels-last ``(B, H, W, C)`` like SAM's ViT blocks; a "pyramid" is a list of
such maps flattened level-major into ``(B, sum(H_l * W_l), C)`` tokens with their ``shapes``.
Names follow the released code (``MSDeformCrossAttnBlock``, ``MSMixFFN``, ``MbConvBlock``,
``DANE``, ``MultiConvFeatsDANE``); their bodies where the release is missing them are the
ViT-Adapter patterns documented in FIDELITY.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import Tensor, nn

from .deform_attn import MSDeformAttn, reference_points

__all__ = ["DANE", "ConvFFN", "CrossAttnBlock", "DropPath", "MultiSourceDANE", "SEMbConv"]


class DropPath(nn.Module):
    """Stochastic depth per sample (identity in eval mode or at ``p = 0``)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)


class ConvFFN(nn.Module):
    """ "MSMixFFN": fc1 -> depthwise 3x3 on each level's map -> GELU -> drop -> fc2 -> drop.

    ``x`` ``(B, N, C)`` with ``N = sum(H_l * W_l)`` -> ``(B, N, C)``.
    """

    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor, shapes: Sequence[tuple[int, int]]) -> Tensor:
        x = self.fc1(x)
        b, _, c = x.shape
        parts = []
        for part, (h, w) in zip(x.split([h * w for h, w in shapes], 1), shapes, strict=True):
            grid = part.transpose(1, 2).reshape(b, c, h, w)
            parts.append(self.dwconv(grid).flatten(2).transpose(1, 2))
        x = self.drop(self.act(torch.cat(parts, 1)))
        return self.drop(self.fc2(x))


class CrossAttnBlock(nn.Module):
    """Pre-LN deformable cross-attention + ConvFFN, both residual with DropPath.

    Args:
        dim: token width. num_levels: value levels. num_heads / num_points: deformable attention.
        ffn_ratio: ConvFFN hidden width / ``dim``. drop: dropout after attention and in the FFN.
        drop_path: stochastic depth of both residual branches.

    ``query`` ``(B, Q, C)``, ``q_shapes`` (its levels), ``value`` ``(B, N, C)``, ``v_shapes``
    -> ``(B, Q, C)``; every query token's reference point is its own position.
    """

    def __init__(
        self,
        dim: int,
        num_levels: int,
        num_heads: int,
        num_points: int,
        ffn_ratio: float = 4.0,
        drop: float = 0.1,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=1e-6)
        self.feat_norm = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MSDeformAttn(dim, num_levels, num_heads, num_points)
        self.attn_drop = nn.Dropout(drop)
        self.ffn_norm = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = ConvFFN(dim, int(dim * ffn_ratio), drop)
        self.drop_path = DropPath(drop_path)

    def forward(
        self,
        query: Tensor,
        q_shapes: Sequence[tuple[int, int]],
        value: Tensor,
        v_shapes: Sequence[tuple[int, int]],
    ) -> Tensor:
        refs = reference_points(q_shapes, query.device).to(query.dtype)
        attn = self.attn(self.query_norm(query), refs, self.feat_norm(value), v_shapes)
        query = query + self.drop_path(self.attn_drop(attn))
        return query + self.drop_path(self.ffn(self.ffn_norm(query), q_shapes))


class SEMbConv(nn.Module):
    """Learnable channel attention on a ViT map: LN2d -> depthwise 3x3 -> GELU ->
    squeeze-excitation (reduction ``rd``) -> 1x1 -> residual. ``(B, H, W, C)`` -> same."""

    def __init__(self, dim: int, rd: float = 0.25, drop_path: float = 0.0) -> None:
        super().__init__()
        hidden = max(8, int(dim * rd))
        self.norm = LayerNorm2d(dim)
        self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.act = nn.GELU()
        self.se_reduce = nn.Conv2d(dim, hidden, 1)
        self.se_expand = nn.Conv2d(hidden, dim, 1)
        self.pw = nn.Conv2d(dim, dim, 1)
        nn.init.zeros_(self.pw.weight)  # starts as identity: the frozen ViT path is unchanged
        nn.init.zeros_(self.pw.bias)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self.dw(self.norm(x.permute(0, 3, 1, 2))))
        gate = torch.sigmoid(self.se_expand(torch.relu(self.se_reduce(y.mean((2, 3), True)))))
        y = self.pw(y * gate)
        return x + self.drop_path(y.permute(0, 2, 3, 1))


class _Mlp(nn.Sequential):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(drop), nn.Linear(hidden, dim)
        )


class _Gate(nn.Sequential):
    """Per-token gating MLP: Linear -> SiLU -> LN -> Linear."""

    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__(
            nn.Linear(dim, hidden), nn.SiLU(), nn.LayerNorm(hidden), nn.Linear(hidden, out)
        )


class DANE(nn.Module):
    """Two-source ViT-convolution fusion (paper "ViT-convolution fusion"; code ``DANE``).

    mask = sigmoid(spatial gate of the conv map + channel gate of the pooled ViT map);
    out = conv * mask + vit * (1 - mask); then a pre-LN MLP residual. ``vit``, ``conv``
    ``(B, H, W, C)`` -> ``(B, H, W, C)``.
    """

    def __init__(
        self, dim: int, reduction: int = 12, ffn_ratio: float = 4.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.spatial_norm = nn.LayerNorm(dim)
        self.spatial = nn.Linear(dim, 1)
        self.channel = _Gate(dim, dim // reduction, dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * ffn_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, vit: Tensor, conv: Tensor) -> Tensor:
        spatial = self.spatial(self.spatial_norm(conv))  # (B, H, W, 1)
        channel = self.channel(vit.mean((1, 2), keepdim=True))  # (B, 1, 1, C)
        mask = torch.sigmoid(spatial + channel)
        x = conv * mask + vit * (1.0 - mask)
        return x + self.drop_path(self.mlp(self.norm(x)))


class MultiSourceDANE(nn.Module):
    """Softmax fusion of several maps (code ``MultiConvFeatsDANE``): per source, a per-token
    gating MLP gives per-channel logits; a softmax across sources weights the sum; then a
    pre-LN MLP residual. ``sources`` list of ``(B, H, W, C)`` -> ``(B, H, W, C)``.

    One gate per source (the release builds ``num_conv = 5`` conv gates for 4 conv maps plus a
    ViT gate, leaving one unused; see FIDELITY.md).
    """

    def __init__(
        self,
        dim: int,
        num_sources: int,
        reduction: int = 12,
        ffn_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.gates = nn.ModuleList(_Gate(dim, dim // reduction, dim) for _ in range(num_sources))
        self.norm = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * ffn_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, sources: Sequence[Tensor]) -> Tensor:
        if len(sources) != len(self.gates):
            raise ValueError(f"expected {len(self.gates)} sources, got {len(sources)}")
        logits = torch.stack([g(s) for g, s in zip(self.gates, sources, strict=True)])
        x = (logits.softmax(0) * torch.stack(list(sources))).sum(0)
        return x + self.drop_path(self.mlp(self.norm(x)))
