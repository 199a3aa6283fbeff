"""DISGAN generator: an ESRGAN-style 3D RRDB network with a 3D pixel-shuffle upsampler.

Follows the released ``Generator`` of wqlevi/DISGAN (``mains/model/model_DISGAN.py``): no
normalisation, LeakyReLU (slope 0.01) everywhere, residual scaling 0.2 in the dense blocks and
around each RRDB, a long skip from the first conv over the RRDB trunk, one ``conv -> LeakyReLU
-> PixelShuffle3d(2)`` stage per factor 2.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DenseResidualBlock", "PixelShuffle3d", "RRDBGenerator", "ResidualInResidualDenseBlock"]


class RRDBGenerator(nn.Module):
    """3D super-resolution generator: ``conv3 -> RRDB x N -> conv3 (+ long skip) -> upsampler ->
    conv3 -> LeakyReLU -> conv3``.

    Args:
        in_channels: image channels of the low-resolution input.
        out_channels: channels of the output (default: ``in_channels``).
        filters: trunk width.
        num_res_blocks: number of RRDBs (each = 3 dense residual blocks).
        growth: channels added by each conv inside a dense block (the released code ties it
            to ``filters``; the presets keep ``growth == filters``).
        res_scale: residual scaling of dense blocks and RRDBs.
        negative_slope: LeakyReLU slope (PyTorch default 0.01, as released).
        scale: 2 (faithful) or 4 (two x2 upsampler stages: our extension).

    Shapes:
        x: ``(B, C_in, d, h, w)`` float -> ``(B, C_out, scale*d, scale*h, scale*w)``.
    """

    spatial_dims = 3

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        filters: int = 64,
        num_res_blocks: int = 3,
        growth: int = 64,
        res_scale: float = 0.2,
        negative_slope: float = 0.01,
        scale: int = 2,
    ) -> None:
        super().__init__()
        if scale not in (2, 4):
            raise ValueError(f"scale must be 2 (or 4 as an extension), got {scale}")
        if min(in_channels, filters, growth, num_res_blocks) < 1:
            raise ValueError("in_channels, filters, growth and num_res_blocks must be >= 1")
        out_channels = in_channels if out_channels is None else out_channels
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.scale = scale
        self.conv_in = nn.Conv3d(in_channels, filters, 3, padding=1)
        self.trunk = nn.Sequential(
            *(
                ResidualInResidualDenseBlock(filters, growth, res_scale, negative_slope)
                for _ in range(num_res_blocks)
            )
        )
        self.conv_trunk = nn.Conv3d(filters, filters, 3, padding=1)
        stages: list[nn.Module] = []
        for _ in range(scale.bit_length() - 1):
            stages += [
                nn.Conv3d(filters, filters * 8, 3, padding=1),
                nn.LeakyReLU(negative_slope),
                PixelShuffle3d(2),
            ]
        self.upsample = nn.Sequential(*stages)
        self.conv_out = nn.Sequential(
            nn.Conv3d(filters, filters, 3, padding=1),
            nn.LeakyReLU(negative_slope),
            nn.Conv3d(filters, out_channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, d, h, w) -> (B, C_out, scale*d, scale*h, scale*w)``."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected (B, {self.in_channels}, d, h, w), got shape {tuple(x.shape)}"
            )
        first = self.conv_in(x)
        out = first + self.conv_trunk(self.trunk(first))
        return self.conv_out(self.upsample(out))


class ResidualInResidualDenseBlock(nn.Module):
    """Three dense residual blocks in sequence, scaled by ``res_scale`` and added to the input.

    Shapes: ``(B, filters, D, H, W) -> same``.
    """

    def __init__(
        self, filters: int, growth: int, res_scale: float = 0.2, negative_slope: float = 0.01
    ) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.blocks = nn.Sequential(
            *(DenseResidualBlock(filters, growth, res_scale, negative_slope) for _ in range(3))
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x) * self.res_scale + x


class DenseResidualBlock(nn.Module):
    """Residual dense block (RDN, CVPR 2018) in 3D: five 3x3x3 convs, each fed the concatenation
    of the input and all previous outputs; LeakyReLU after the first four; the last maps back to
    ``filters`` and is added to the input after scaling by ``res_scale``.

    Shapes: ``(B, filters, D, H, W) -> same``.
    """

    def __init__(
        self,
        filters: int,
        growth: int | None = None,
        res_scale: float = 0.2,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        growth = filters if growth is None else growth
        self.res_scale = res_scale
        convs = []
        for i in range(5):
            last = i == 4
            conv = nn.Conv3d(filters + i * growth, filters if last else growth, 3, padding=1)
            convs.append(conv if last else nn.Sequential(conv, nn.LeakyReLU(negative_slope)))
        self.convs = nn.ModuleList(convs)

    def forward(self, x: Tensor) -> Tensor:
        features = x
        for conv in self.convs[:-1]:
            features = torch.cat([features, conv(features)], dim=1)
        return self.convs[-1](features) * self.res_scale + x


class PixelShuffle3d(nn.Module):
    """3D sub-pixel rearrangement: ``(B, C * r^3, D, H, W) -> (B, C, rD, rH, rW)``.

    Input channel ``c * r^3 + i * r^2 + j * r + k`` lands at offset ``(i, j, k)`` of output
    channel ``c`` (the 3D analogue of :class:`torch.nn.PixelShuffle`, as in the released code).
    """

    def __init__(self, upscale_factor: int) -> None:
        super().__init__()
        if upscale_factor < 1:
            raise ValueError(f"upscale_factor must be >= 1, got {upscale_factor}")
        self.upscale_factor = upscale_factor

    def forward(self, x: Tensor) -> Tensor:
        r = self.upscale_factor
        b, c, d, h, w = x.shape
        if c % r**3:
            raise ValueError(f"channels {c} are not a multiple of upscale_factor^3 = {r**3}")
        out = x.reshape(b, c // r**3, r, r, r, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        return out.reshape(b, c // r**3, d * r, h * r, w * r)

    def extra_repr(self) -> str:
        return f"upscale_factor={self.upscale_factor}"
