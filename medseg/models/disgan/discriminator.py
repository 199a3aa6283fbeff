"""DISGAN discriminator: a 3D U-Net whose encoder levels carry Haar-wavelet side branches.

Follows the released ``dwt_UNet`` (wqlevi/DISGAN ``mains/model/model_DISGAN.py`` and
``basic_block.py``), with the depth derived from the patch size instead of fixed at six levels.
At every encoder level but the deepest, the level's *input* goes through a 3D Haar DWT: the LLL
sub-band, via a 1x1x1 conv, is concatenated to the level's conv output (so the encoder width is
conv channels + wavelet channels), and the 7 high bands, via another 1x1x1 conv, are kept and
concatenated into the decoder's skip at the same resolution. The output is one logit per voxel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .dwt import haar_dwt3d
from .generator import DenseResidualBlock

__all__ = ["DWTUNetDiscriminator", "WaveletUnit"]


class DWTUNetDiscriminator(nn.Module):
    """Per-voxel relativistic discriminator with DWT units (DISGAN).

    Depth rule: ``levels = log2(patch_size / min_size)`` stride-2 levels (64 -> 1 gives the
    released 6; the ``tiny`` 32 -> 4 gives 3). Level ``k`` (1-based) has width
    ``nf * min(2^(k-1), 8)`` and its wavelet branch ``min(2^(k-1), width_k // 2)`` channels
    (the released 1, 2, 4, 8, 16 for ``nf=16``).

    Blocks (as released): level 1 = Conv4 s2 on the stem map; levels 2..L = LeakyReLU(0.2) ->
    Conv4 s2 -> dense residual block -> BatchNorm (no BatchNorm at the bottleneck L). Decoder
    levels L..2 = ReLU -> ConvTranspose4 s2 -> dense residual block -> BatchNorm; level 1 =
    ReLU -> trilinear x2 -> dense residual block -> 1x1 conv -> BatchNorm. Tail: concat with
    the stem map, conv3 (3nf -> 2nf), BatchNorm, conv3 (2nf -> 1). Stem: conv3 + BatchNorm.

    Because the bottleneck has no BatchNorm, no BatchNorm ever sees a 1x1x1 map when the input
    side is a multiple of ``2**levels``: batch 1 trains.

    Args:
        in_channels: image channels.
        nf: base width (released: 16; the stem is hard-coded to 16 there, here it is ``nf``).
        patch_size: training patch side; with ``min_size`` it fixes the depth.
        min_size: bottleneck side for a ``patch_size`` input (a power-of-two fraction of it).
        released_init: re-initialise every ``Conv3d`` weight with N(0, 1) and zero biases, as
            the released ``_init_weights`` does (off by default: PyTorch default init).

    Shapes:
        x: ``(B, C, D, H, W)`` float, each side a multiple of ``size_divisor = 2**levels`` ->
        logits ``(B, 1, D, H, W)``.
    """

    spatial_dims = 3

    def __init__(
        self,
        in_channels: int = 1,
        nf: int = 16,
        patch_size: int = 64,
        min_size: int = 1,
        released_init: bool = False,
    ) -> None:
        super().__init__()
        levels = _levels(patch_size, min_size)
        if in_channels < 1 or nf < 2:
            raise ValueError(f"in_channels must be >= 1 and nf >= 2, got {in_channels}, {nf}")
        self.in_channels = in_channels
        self.levels = levels
        self.size_divisor = 2**levels
        widths = [nf * min(2**k, 8) for k in range(levels)]  # width of encoder level k + 1
        wave = [min(2**k, widths[k] // 2) for k in range(levels - 1)]  # DWT unit k channels
        sources = [in_channels, *widths[:-1]]  # what DWT unit k transforms

        self.stem = nn.Sequential(nn.Conv3d(in_channels, nf, 3, padding=1), nn.BatchNorm3d(nf))
        self.wavelets = nn.ModuleList(WaveletUnit(sources[k], wave[k]) for k in range(levels - 1))
        down: list[nn.Module] = [nn.Conv3d(nf, widths[0] - wave[0], 4, 2, 1, bias=False)]
        for k in range(1, levels):
            last = k == levels - 1
            out = widths[k] if last else widths[k] - wave[k]
            down.append(_down_block(widths[k - 1], out, norm=not last))
        self.down = nn.ModuleList(down)

        up: list[nn.Module] = [_up_block(widths[-1], widths[-2])]
        for k in range(levels - 2, 0, -1):
            up.append(_up_block(2 * widths[k] + wave[k], widths[k - 1]))
        up.append(_last_up_block(2 * widths[0] + wave[0], 2 * nf))
        self.up = nn.ModuleList(up)
        self.tail = nn.Sequential(
            nn.Conv3d(3 * nf, 2 * nf, 3, padding=1),
            nn.BatchNorm3d(2 * nf),
            nn.Conv3d(2 * nf, 1, 3, padding=1),
        )
        if released_init:
            self.apply(_normal_conv_init)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, D, H, W) -> (B, 1, D, H, W)`` logits."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, D, H, W), got {tuple(x.shape)}")
        if any(s % self.size_divisor for s in x.shape[2:]):
            raise ValueError(
                f"spatial sizes {tuple(x.shape[2:])} must be multiples of "
                f"size_divisor={self.size_divisor} (2**levels, levels={self.levels})"
            )
        stem = self.stem(x)
        skips, highs = [], []
        source, feat = x, stem
        for k, block in enumerate(self.down):
            feat = block(feat)
            if k < self.levels - 1:
                low, high = self.wavelets[k](source)
                feat = torch.cat([feat, low], dim=1)
                skips.append(feat)
                highs.append(high)
                source = feat
        out = self.up[0](feat)
        for block, skip, high in zip(self.up[1:], reversed(skips), reversed(highs), strict=True):
            out = block(torch.cat([out, skip, high], dim=1))
        return self.tail(torch.cat([out, stem], dim=1))


class WaveletUnit(nn.Module):
    """Haar DWT + two 1x1x1 convs: ``(B, C, D, H, W) -> (low, high)``, both
    ``(B, out_channels, D/2, H/2, W/2)`` (low from LLL, high from the 7 high bands)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.low = nn.Conv3d(in_channels, out_channels, 1)
        self.high = nn.Conv3d(7 * in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        bands = haar_dwt3d(x)
        c = self.in_channels
        return self.low(bands[:, :c]), self.high(bands[:, c:])


def _down_block(in_channels: int, out_channels: int, *, norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.LeakyReLU(0.2),
        nn.Conv3d(in_channels, out_channels, 4, 2, 1, bias=False),
        DenseResidualBlock(out_channels),
    ]
    if norm:
        layers.append(nn.BatchNorm3d(out_channels))
    return nn.Sequential(*layers)


def _up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ReLU(),
        nn.ConvTranspose3d(in_channels, out_channels, 4, 2, 1, bias=False),
        DenseResidualBlock(out_channels),
        nn.BatchNorm3d(out_channels),
    )


def _last_up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ReLU(),
        nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False),
        DenseResidualBlock(in_channels),
        nn.Conv3d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm3d(out_channels),
    )


def _levels(patch_size: int, min_size: int) -> int:
    ratio = patch_size / min_size if min_size > 0 else 0.0
    levels = round(math.log2(ratio)) if ratio >= 1 else 0
    if min_size < 1 or levels < 2 or 2**levels * min_size != patch_size:
        raise ValueError(
            "patch_size / min_size must be a power of two >= 4 "
            f"(levels = log2(patch_size / min_size) >= 2), got {patch_size} / {min_size}"
        )
    return levels


def _normal_conv_init(module: nn.Module) -> None:
    # the released _init_weights touches nn.Conv3d only (not ConvTranspose3d)
    if isinstance(module, nn.Conv3d):
        nn.init.normal_(module.weight, 0.0, 1.0)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
