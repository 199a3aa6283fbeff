"""DB-SAM dual-branch adapter: drives SAM's frozen ViT blocks stage by stage and fuses a conv
branch into them.

Two layouts (FIDELITY.md):

- ``"two_branch"`` (paper reading; released ``TwoBranchImagePyramidAdapter``): learnable SE
  channel attention after the frozen blocks (once per stage, or after every block), then
  *bilateral* deformable cross-attention: the ViT map attends to the conv pyramid and the conv
  pyramid attends to the (pre-update) ViT map; after the last stage the conv maps are
  concatenated, projected to the ViT width and fused with the ViT map by :class:`DANE`.
- ``"four_branch"`` (released "db_sam_plus", ``FourBranchImagePyramidAdapter``): per stage, the
  ViT map and the conv maps form one pyramid and go through ``cross_blocks`` joint deformable
  attention blocks (query = value = the pyramid); softmax fusion of all maps at the end.

The ViT is passed to :meth:`DualBranchAdapter.forward`, not owned, so the SAM parameter names
stay ``image_encoder.*`` and load from the official checkpoint unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from segment_anything.modeling import ImageEncoderViT
from torch import Tensor, nn

from .blocks import DANE, CrossAttnBlock, MultiSourceDANE, SEMbConv
from .conv_branch import ConvBranch

__all__ = ["ADAPTERS", "DualBranchAdapter"]

ADAPTERS = ("two_branch", "four_branch")
CHANNEL_ATTENTION = ("block", "stage")


class DualBranchAdapter(nn.Module):
    """ViT branch + conv branch with cross-attention and fusion.

    Every size is required: the defaults are declared once, by :class:`~.model.DBSAM` (its
    constructor is the config) and its presets.

    Args:
        layout: ``"two_branch"`` or ``"four_branch"`` (see the module docstring).
        dim: ViT width ``C``. grid: ViT token grid side ``G``.
        stages: frozen ViT block indices per interaction stage, in order, covering all blocks.
        conv_widths / conv_downsamples / bn_momentum: :class:`ConvBranch`.
        num_heads / num_points: deformable attention heads and points per level.
        cross_blocks: joint attention blocks per stage (``four_branch``).
        channel_attention: SE channel attention ``"stage"`` (after each stage's frozen
            blocks: the issue's and the released code's reading) or ``"block"`` (after every
            frozen block, a literal reading of the paper's wording) (``two_branch``).
        ffn_ratio / drop / drop_path: of the cross-attention and fusion blocks.
        fusion_reduction: width reduction of the fusion gating MLPs.

    ``forward(vit, images)``: ``images`` ``(B, 3, S, S)`` normalised as SAM expects ->
    fused map ``(B, G, G, C)`` (final LayerNorm applied; SAM's neck comes next).
    """

    def __init__(
        self,
        *,
        layout: str,
        dim: int,
        grid: int,
        stages: Sequence[Sequence[int]],
        conv_widths: Sequence[int],
        conv_downsamples: Sequence[int],
        bn_momentum: float,
        num_heads: int,
        num_points: int,
        cross_blocks: int,
        channel_attention: str,
        ffn_ratio: float,
        drop: float,
        drop_path: float,
        fusion_reduction: int,
    ) -> None:
        super().__init__()
        if layout not in ADAPTERS:
            raise ValueError(f"layout must be one of {ADAPTERS}, got {layout!r}")
        if channel_attention not in CHANNEL_ATTENTION:
            raise ValueError(f"channel_attention must be one of {CHANNEL_ATTENTION}")
        flat = [i for stage in stages for i in stage]
        if flat != list(range(len(flat))) or not all(stages):
            raise ValueError(f"stages must split 0..N-1 in order into non-empty groups: {stages}")
        self.layout, self.channel_attention = layout, channel_attention
        self.stages = [list(s) for s in stages]
        self.grid = grid
        levels = len(conv_downsamples)
        self.conv_branch = ConvBranch(
            grid=grid,
            dim=dim,
            widths=conv_widths,
            downsamples=conv_downsamples,
            bn_momentum=bn_momentum,
        )
        block = dict(num_heads=num_heads, num_points=num_points, ffn_ratio=ffn_ratio, drop=drop)
        n = len(self.stages)
        if layout == "two_branch":
            n_se = len(flat) if channel_attention == "block" else n
            self.channel_attn = nn.ModuleList(
                SEMbConv(dim, drop_path=drop_path) for _ in range(n_se)
            )
            self.vit_to_conv = nn.ModuleList(
                CrossAttnBlock(dim, levels, drop_path=drop_path, **block) for _ in range(n)
            )
            self.conv_to_vit = nn.ModuleList(
                CrossAttnBlock(dim, 1, drop_path=drop_path, **block) for _ in range(n)
            )
            self.conv_proj = nn.Linear(levels * dim, dim)
            self.fusion: nn.Module = DANE(dim, fusion_reduction, ffn_ratio, drop_path)
        else:
            self.joint = nn.ModuleList(
                nn.ModuleList(
                    CrossAttnBlock(dim, levels + 1, drop_path=drop_path, **block)
                    for _ in range(cross_blocks)
                )
                for _ in range(n)
            )
            self.fusion = MultiSourceDANE(dim, levels + 1, fusion_reduction, ffn_ratio, drop_path)
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, vit: ImageEncoderViT, images: Tensor) -> Tensor:
        if len(vit.blocks) != sum(len(s) for s in self.stages):
            raise ValueError(f"adapter stages cover {self.stages}, the ViT has {len(vit.blocks)}")
        x = vit.patch_embed(images)
        if vit.pos_embed is not None:
            x = x + vit.pos_embed
        if x.shape[1] != self.grid or x.shape[2] != self.grid:
            raise ValueError(f"token grid {tuple(x.shape[1:3])} != adapter grid {self.grid}")
        convs = self.conv_branch(images)
        for s, stage in enumerate(self.stages):
            for i in stage:
                x = vit.blocks[i](x)
                if self.layout == "two_branch" and self.channel_attention == "block":
                    x = self.channel_attn[i](x)
            if self.layout == "two_branch":
                x, convs = self._bilateral(s, x, convs)
            else:
                x, convs = self._joint(s, x, convs)
        if self.layout == "two_branch":
            fused = self.fusion(x, self.conv_proj(torch.cat(convs, dim=-1)))
        else:
            fused = self.fusion([*convs, x])
        return self.norm(fused)

    def _bilateral(self, s: int, x: Tensor, convs: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        if self.channel_attention == "stage":
            x = self.channel_attn[s](x)
        b, g, _, c = x.shape
        one = [(g, g)]
        many = one * len(convs)
        vit_tokens = x.reshape(b, g * g, c)
        conv_tokens = torch.cat([m.reshape(b, g * g, c) for m in convs], 1)
        new_vit = self.vit_to_conv[s](vit_tokens, one, conv_tokens, many)
        new_conv = self.conv_to_vit[s](conv_tokens, many, vit_tokens, one)
        return new_vit.view(b, g, g, c), [t.view(b, g, g, c) for t in new_conv.chunk(len(convs), 1)]

    def _joint(self, s: int, x: Tensor, convs: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        b, g, _, c = x.shape
        shapes = [(g, g)] * (len(convs) + 1)
        tokens = torch.cat([m.reshape(b, g * g, c) for m in [x, *convs]], 1)
        for blk in self.joint[s]:
            tokens = blk(tokens, shapes, tokens, shapes)
        maps = [t.view(b, g, g, c) for t in tokens.chunk(len(shapes), 1)]
        return maps[0], maps[1:]
