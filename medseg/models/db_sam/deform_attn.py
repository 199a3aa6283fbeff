"""Multi-scale deformable attention (Deformable-DETR) in pure PyTorch through ``grid_sample``.

The released DB-SAM imports the compiled ``MultiScaleDeformableAttention`` CUDA op (sources not
shipped). This module is the same maths as that op's PyTorch reference
(``ms_deform_attn_core_pytorch``): bilinear sampling with zero padding, ``align_corners=False``,
sampling locations normalised to [0, 1] over each level's map. It runs on CPU and GPU and is
differentiable in every input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MSDeformAttn", "ms_deform_attn", "reference_points"]


def ms_deform_attn(
    value: Tensor,
    shapes: Sequence[tuple[int, int]],
    locations: Tensor,
    weights: Tensor,
) -> Tensor:
    """Sample and mix values at learned locations.

    Args:
        value: ``(B, sum(H_l * W_l), M, D)`` per-head values of all levels, level-major.
        shapes: ``[(H_l, W_l)]`` of the ``L`` levels.
        locations: ``(B, Q, M, L, P, 2)`` ``(x, y)`` in [0, 1] of each level's map.
        weights: ``(B, Q, M, L, P)`` attention weights (softmax over ``L * P``).

    Returns:
        ``(B, Q, M * D)``.
    """
    b, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = locations.shape
    splits = value.split([h * w for h, w in shapes], dim=1)
    grids = (2.0 * locations - 1.0).to(value.dtype)  # grid_sample wants one dtype
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        v = splits[lvl].flatten(2).transpose(1, 2).reshape(b * heads, dim, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # (B*M, Q, P, 2)
        sampled.append(
            F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        )  # (B*M, D, Q, P)
    stacked = torch.stack(sampled, dim=-2).flatten(-2)  # (B*M, D, Q, L*P)
    attn = weights.to(value.dtype).transpose(1, 2).reshape(b * heads, 1, queries, levels * points)
    out = (stacked * attn).sum(-1).view(b, heads * dim, queries)
    return out.transpose(1, 2).contiguous()


def reference_points(shapes: Sequence[tuple[int, int]], device: torch.device) -> Tensor:
    """Normalised pixel centres of every query token: ``(sum(H_l * W_l), 2)`` ``(x, y)``.

    A query token looks around its own position (the ViT-Adapter ``get_reference_points``
    convention, missing from the released DB-SAM code); all levels share the same unit square.
    """
    refs = []
    for h, w in shapes:
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        refs.append(torch.stack([xx.flatten(), yy.flatten()], -1))
    return torch.cat(refs)


class MSDeformAttn(nn.Module):
    """Deformable-DETR attention module (same parameter names as the released wrapper).

    Args:
        dim: token width ``C`` (a multiple of ``num_heads``).
        num_levels: value levels ``L``.
        num_heads: heads ``M``.
        num_points: sampling points ``P`` per head and level.

    Shapes:
        query ``(B, Q, C)``, refs ``(Q, 2)`` or ``(B, Q, 2)`` in [0, 1], value ``(B, N, C)`` with
        ``N = sum(H_l * W_l)`` -> ``(B, Q, C)``.
    """

    def __init__(
        self, dim: int = 256, num_levels: int = 4, num_heads: int = 8, num_points: int = 4
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must be a multiple of num_heads {num_heads}")
        self.dim, self.num_levels = dim, num_levels
        self.num_heads, self.num_points = num_heads, num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable-DETR init: offsets start on a ring of directions, growing per point."""
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([theta.cos(), theta.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self, query: Tensor, refs: Tensor, value: Tensor, shapes: Sequence[tuple[int, int]]
    ) -> Tensor:
        b, q, _ = query.shape
        if len(shapes) != self.num_levels:
            raise ValueError(f"expected {self.num_levels} levels, got {len(shapes)}")
        if value.shape[1] != sum(h * w for h, w in shapes):
            raise ValueError(f"value has {value.shape[1]} tokens, shapes say otherwise")
        m, lv, p = self.num_heads, self.num_levels, self.num_points
        v = self.value_proj(value).view(b, value.shape[1], m, self.dim // m)
        offsets = self.sampling_offsets(query).view(b, q, m, lv, p, 2)
        weights = self.attention_weights(query).view(b, q, m, lv * p).softmax(-1)
        weights = weights.view(b, q, m, lv, p)
        norm = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
        refs = refs.expand(b, q, 2) if refs.ndim == 2 else refs
        locations = refs[:, :, None, None, None, :] + offsets / norm[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn(v, shapes, locations, weights))
