"""DB-SAM convolution branch (released ``LFIP0``): light conv stacks on a resized image pyramid.

Level ``l`` resizes the (normalised) input to ``grid * 2**d_l`` pixels and runs
Conv3x3 -> 1x1 -> Conv3x3 -> 1x1 -> Conv3x3 -> 1x1 (each + BN + ReLU, no bias) -> 1x1 to the ViT
width -> LayerNorm2d; the first ``d_l`` of the three 3x3 convolutions have stride 2, so every
level ends on the ViT token grid. ViT-B at 1024: ``d = (3, 2, 1, 0)`` -> inputs 512, 256, 128, 64,
all outputs 64 x 64 x 768. BatchNorm2d replaces the release's SyncBatchNorm (runs on one CPU).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import Tensor, nn

__all__ = ["ConvBranch"]


class ConvBranch(nn.Module):
    """Image -> ``len(downsamples)`` maps on the token grid, channels-last.

    Args:
        grid: token grid side ``G`` (image side / ViT patch size).
        dim: output width (the ViT width).
        widths: the three stage widths (released: 128, 256, 512).
        downsamples: per level, how many of the three 3x3 convs have stride 2 (0..3).
        bn_momentum: BatchNorm momentum (released: 0.01).

    ``images`` ``(B, 3, S, S)`` -> list of ``(B, G, G, dim)``, each plus its learned level
    embedding (zero at init).
    """

    def __init__(
        self,
        *,
        grid: int,
        dim: int,
        widths: Sequence[int] = (128, 256, 512),
        downsamples: Sequence[int] = (3, 2, 1, 0),
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        if len(widths) != 3 or any(not 0 <= d <= 3 for d in downsamples):
            raise ValueError("widths needs 3 entries and every downsample must be in 0..3")
        self.grid = grid
        self.sizes = [grid * 2**d for d in downsamples]
        self.levels = nn.ModuleList(_level(dim, widths, d, bn_momentum) for d in downsamples)
        self.level_embed = nn.Parameter(torch.zeros(len(downsamples), dim))

    def forward(self, images: Tensor) -> list[Tensor]:
        outs = []
        for i, (size, level) in enumerate(zip(self.sizes, self.levels, strict=True)):
            x = images
            if x.shape[-1] != size or x.shape[-2] != size:
                x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False)
            outs.append(level(x).permute(0, 2, 3, 1) + self.level_embed[i])
        return outs


def _level(dim: int, widths: Sequence[int], down: int, momentum: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = 3
    for stage, width in enumerate(widths):
        stride = 2 if stage < down else 1
        layers += _conv_bn(c_in, width, 3, stride, momentum)
        layers += _conv_bn(width, width, 1, 1, momentum)
        c_in = width
    layers += [nn.Conv2d(c_in, dim, 1, bias=False), LayerNorm2d(dim)]
    return nn.Sequential(*layers)


def _conv_bn(c_in: int, c_out: int, k: int, stride: int, momentum: float) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(c_out, eps=1e-5, momentum=momentum),
        nn.ReLU(inplace=True),
    ]
