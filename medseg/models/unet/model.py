"""U-Net baseline: MONAI's residual ``UNet`` with a keyword-only, defaulted signature and presets.

Upstream: ``monai.networks.nets.UNet`` (Kerfoot et al., "Left-Ventricle Quantification Using
Residual U-Net", STACOM 2018), Apache-2.0. Subclassed rather than wrapped, so state-dict keys
are MONAI's (``model.0.conv...``) and MONAI-trained weights load unchanged. Differences from
upstream: keyword-only arguments with defaults, 2D/3D only, an input-size check with a clear
error, and no deep supervision (MONAI's UNet has none; use WAU's backbone with
``upsample="transpose"`` for a deep-supervised plain U-Net).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from monai.networks.nets import UNet as _MonaiUNet
from torch import Tensor

__all__ = ["UNet", "tiny", "unet"]


class UNet(_MonaiUNet):
    """Residual U-Net: strided-conv down-sampling, transposed-conv up-sampling, skips joined by
    concatenation (MONAI's design).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes ``K`` (background included).
        channels: widths from the first stage to the bottleneck.
        strides: down-sampling factor between consecutive stages (``len(channels) - 1`` ints).
        kernel_size: convolution kernel size.
        up_kernel_size: transposed-convolution kernel size.
        num_res_units: residual units per stage (0: plain conv blocks).
        act: activation name or ``(name, kwargs)`` (MONAI's ``Act`` factory).
        norm: normalisation name or ``(name, kwargs)`` (MONAI's ``Norm`` factory).
        dropout: dropout probability.
        bias: bias in the convolutions.

    Shapes:
        x: ``(B, C_in, H, W[, D])`` float, every spatial size a multiple of
        ``size_divisor = prod(strides)`` (no padding: a ``ValueError`` says the rule) ->
        logits ``(B, K, H, W[, D])``.
    """

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        strides: Sequence[int] = (2, 2, 2, 2),
        kernel_size: int = 3,
        up_kernel_size: int = 3,
        num_res_units: int = 2,
        act: str | tuple[str, dict[str, Any]] = "PRELU",
        norm: str | tuple[str, dict[str, Any]] = "INSTANCE",
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(channels) < 2 or len(strides) != len(channels) - 1:
            raise ValueError(
                f"need len(strides) == len(channels) - 1 >= 1, got channels={tuple(channels)}, "
                f"strides={tuple(strides)}"
            )
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=tuple(channels),
            strides=tuple(strides),
            kernel_size=kernel_size,
            up_kernel_size=up_kernel_size,
            num_res_units=num_res_units,
            act=act,
            norm=norm,
            dropout=dropout,
            bias=bias,
        )
        self.size_divisor = math.prod(strides)

    def forward(self, x: Tensor) -> Tensor:
        n = self.dimensions
        if x.ndim != n + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected (B, {self.in_channels}, {'H, W, D' if n == 3 else 'H, W'}), "
                f"got {tuple(x.shape)}"
            )
        if any(s % self.size_divisor for s in x.shape[2:]):
            raise ValueError(
                f"spatial sizes must be multiples of {self.size_divisor} (prod(strides)), "
                f"got {tuple(x.shape[2:])}; pad or crop the input"
            )
        return super().forward(x)


def unet(**overrides: object) -> UNet:
    """Base preset: channels (32, 64, 128, 256, 512), strides 2, two residual units per stage,
    instance norm, PReLU (MONAI's tutorial configuration, one level deeper; random init)."""
    return UNet(**overrides)  # type: ignore[arg-type]


def tiny(**overrides: object) -> UNet:
    """A CPU-sized U-Net for tests: channels (8, 16, 32), strides (2, 2), one residual unit."""
    config: dict[str, object] = {"channels": (8, 16, 32), "strides": (2, 2), "num_res_units": 1}
    return UNet(**{**config, **overrides})  # type: ignore[arg-type]
