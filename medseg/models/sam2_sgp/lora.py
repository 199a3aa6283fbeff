"""LoRA on the fused ``qkv`` projection of SAM2's Hiera attention (SAM2-SGP: rank 16).

Hiera's ``MultiScaleAttention.qkv`` is ``Linear(dim, 3 * dim_out)`` with the output laid out as
``[q | k | v]``, each ``dim_out`` wide. At a stage transition ``dim_out = 2 * dim``; the released
code adds ``dim``-wide updates to the first and last ``dim`` columns there, so half of Q and V
go without LoRA. :class:`LoRAQKV` adds ``B_q A_q x`` to all of Q and ``B_v A_v x`` to all of V
(``A: (r, dim)`` Kaiming-uniform, ``B: (dim_out, r)`` zeros, so training starts from SAM2).

It *is* the ``nn.Linear`` (same ``weight``/``bias`` names), so the official checkpoint keys
``...attn.qkv.weight``/``bias`` load unchanged; the LoRA factors are extra keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["LoRAQKV", "add_lora"]


class LoRAQKV(nn.Linear):
    """``Linear(dim, 3 * dim_out)`` with rank-``r`` updates on its Q and V column blocks.

    ``x`` ``(..., dim)`` -> ``(..., 3 * dim_out)``; scaling ``alpha / r`` (1 by default, as
    released).
    """

    def __init__(self, dim: int, dim_out: int, rank: int = 16, alpha: float | None = None) -> None:
        super().__init__(dim, 3 * dim_out)
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.dim_out, self.rank = dim_out, rank
        self.scaling = (alpha if alpha is not None else rank) / rank
        self.lora_a_q = nn.Parameter(torch.empty(rank, dim))
        self.lora_b_q = nn.Parameter(torch.zeros(dim_out, rank))
        self.lora_a_v = nn.Parameter(torch.empty(rank, dim))
        self.lora_b_v = nn.Parameter(torch.zeros(dim_out, rank))
        nn.init.kaiming_uniform_(self.lora_a_q, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.lora_a_v, a=math.sqrt(5))

    @classmethod
    def wrap(cls, linear: nn.Linear, rank: int, alpha: float | None = None) -> LoRAQKV:
        """A LoRA copy of a Hiera ``qkv`` Linear (weights shared by value, frozen)."""
        if linear.out_features % 3:
            raise ValueError("qkv out_features must be 3 * dim_out")
        out = cls(linear.in_features, linear.out_features // 3, rank, alpha)
        out.to(linear.weight.device, linear.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(linear.weight)
            out.bias.copy_(linear.bias)
        out.weight.requires_grad_(False)
        out.bias.requires_grad_(False)
        return out

    def forward(self, x: Tensor) -> Tensor:
        qkv = F.linear(x, self.weight, self.bias)
        dq = F.linear(F.linear(x, self.lora_a_q), self.lora_b_q) * self.scaling
        dv = F.linear(F.linear(x, self.lora_a_v), self.lora_b_v) * self.scaling
        zeros = torch.zeros_like(dq)
        return qkv + torch.cat([dq, zeros, dv], dim=-1)


def add_lora(trunk: nn.Module, rank: int = 16, alpha: float | None = None) -> int:
    """Replace every Hiera block's ``attn.qkv`` by a :class:`LoRAQKV`; returns the count."""
    count = 0
    for block in trunk.blocks:
        attn = block.attn
        if not isinstance(attn.qkv, LoRAQKV):
            attn.qkv = LoRAQKV.wrap(attn.qkv, rank, alpha)
            count += 1
    return count
