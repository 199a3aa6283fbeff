"""RAT: Region Attention Transformer for 2D medical image restoration.

Paper: Yang, Chen, Qian, Zhou, Zhang, Zhao, Wei, Xu, "Region Attention Transformer for Medical
Image Restoration", MICCAI 2024, pp. 603-613 (arXiv 2407.09268); released code ``Model_RAT.py``
(github Yaziwel/Region-Attention-Transformer-for-Medical-Image-Restoration). A NAFNet U-shape
(2 levels) around a bottleneck of BasicLayers that alternate region attention (tokens attend
only within their region of an externally given partition, e.g. SAM masks) and window
attention. FIDELITY.md lists what follows the code and what is ours.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.models.layers.attention import check_impl, region_plan

from .blocks import Block, NAFBlock, attention_scale

__all__ = ["RAT", "rat", "tiny"]


class RAT(nn.Module):
    """NAFNet encoder/decoder with a region/window-attention bottleneck and a global residual.

    Args:
        in_channels: image channels ``C_in`` (1 for the released gray-scale tasks).
        out_channels: ``C_out``; ``None`` means ``in_channels``. The global residual (output =
            network + input) is added only when ``C_out == C_in``.
        width: channels after the intro conv; doubled at every encoder level.
        enc_blk_nums: NAFBlocks per encoder level; ``levels = len(enc_blk_nums)`` 2x2 stride-2
            convs follow them (bottleneck at ``1 / 2 ** levels``, ``width * 2 ** levels`` ch).
        dec_blk_nums: NAFBlocks per decoder level (same length as ``enc_blk_nums``).
        middle_blocks: bottleneck Blocks, each ``layers_per_block`` BasicLayers + 3x3 conv +
            residual (the released ``middle_blk_num=12`` = 4 Blocks x 3 layers).
        layers_per_block: BasicLayers per Block.
        num_heads: heads of both attentions (must divide the bottleneck width).
        window_size: W-MSA window side at the bottleneck.
        mlp_ratio: MLP hidden width over the bottleneck width.
        scale: super-resolution factor: the input is bilinearly upsampled by ``scale`` first
            (as released; 1 for denoising/synthesis).
        impl: region-attention kernel (``"auto"``, ``"torch"``, ``"triton"``; ``None`` reads
            ``$MEDSEG_KERNELS``), validated here.
        qk_scale: ``"heads"`` scales scores by ``num_heads ** -0.5`` (the released code, kept
            for fidelity) or ``"head_dim"`` by ``head_dim ** -0.5``; both attentions.

    Shapes:
        x: ``(B, C_in, h, w)`` float, any ``h, w``; regions: ``(B, H, W)`` integer region ids at
        the OUTPUT size ``(H, W) = (h * scale, w * scale)``, any values (``None``: the whole
        image is one region, i.e. R-MSA is plain global attention) -> ``(B, C_out, H, W)``.
        Internally the image is reflect-padded (regions replicate-padded) at the bottom/right to
        multiples of ``size_divisor = 2 ** levels * window_size`` and the output cropped back;
        the regions are nearest-downsampled by ``2 ** levels`` to the bottleneck grid, and one
        region plan is shared by all layers.
    """

    spatial_dims = 2

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int | None = None,
        width: int = 64,
        enc_blk_nums: Sequence[int] = (2, 2),
        dec_blk_nums: Sequence[int] = (2, 2),
        middle_blocks: int = 4,
        layers_per_block: int = 3,
        num_heads: int = 8,
        window_size: int = 4,
        mlp_ratio: float = 2.0,
        scale: int = 1,
        impl: str | None = None,
        qk_scale: str = "heads",
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        enc_blk_nums, dec_blk_nums = tuple(enc_blk_nums), tuple(dec_blk_nums)
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError(
                f"enc_blk_nums and dec_blk_nums need the same length, got {enc_blk_nums} and "
                f"{dec_blk_nums}"
            )
        if min(in_channels, out_channels, width, window_size, num_heads, scale) < 1:
            raise ValueError("channels, width, window_size, num_heads and scale must be >= 1")
        levels = len(enc_blk_nums)
        chan = width * 2**levels
        if chan % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide the bottleneck width {chan}")
        check_impl(impl, op="region_attention")
        self.scale = int(scale)
        self.levels = levels
        self.size_divisor = 2**levels * window_size
        self.residual = out_channels == in_channels

        self.intro = nn.Conv2d(in_channels, width, 3, padding=1)
        self.encoders, self.downs = nn.ModuleList(), nn.ModuleList()
        chan = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*(NAFBlock(chan) for _ in range(num))))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, stride=2))
            chan *= 2
        qk = attention_scale(qk_scale, num_heads, chan // num_heads)
        self.middle_blks = nn.ModuleList(
            Block(
                layers_per_block,
                chan,
                num_heads=num_heads,
                window_size=window_size,
                mlp_ratio=mlp_ratio,
                scale=qk,
                impl=impl,
            )
            for _ in range(middle_blocks)
        )
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for num in dec_blk_nums:
            self.ups.append(
                nn.Sequential(nn.Conv2d(chan, 2 * chan, 1, bias=False), nn.PixelShuffle(2))
            )
            chan //= 2
            self.decoders.append(nn.Sequential(*(NAFBlock(chan) for _ in range(num))))
        self.ending = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, x: Tensor, regions: Tensor | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.intro.in_channels:
            raise ValueError(
                f"expected x (B, {self.intro.in_channels}, h, w), got {tuple(x.shape)}"
            )
        if self.scale > 1:
            x = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        batch, _, height, width = x.shape
        pad_h, pad_w = (-height) % self.size_divisor, (-width) % self.size_divisor
        plan = region_plan(self._bottleneck_regions(regions, batch, height, width, pad_h, pad_w))
        inp = _pad(x, pad_h, pad_w, "reflect")
        y = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            y = encoder(y)
            skips.append(y)
            y = down(y)
        shortcut = y
        for blk in self.middle_blks:
            y = blk(y, plan)
        y = y + shortcut
        for decoder, up, skip in zip(self.decoders, self.ups, skips[::-1], strict=True):
            y = decoder(up(y) + skip)
        y = self.ending(y)
        if self.residual:
            y = y + inp
        return y[:, :, :height, :width]

    def _bottleneck_regions(
        self, regions: Tensor | None, batch: int, height: int, width: int, pad_h: int, pad_w: int
    ) -> Tensor:
        """``(B, H, W)`` ids -> ``(B, N)`` int64 ids on the bottleneck grid, on the right device."""
        f = 2**self.levels
        rows, cols = (height + pad_h) // f, (width + pad_w) // f
        device = self.intro.weight.device
        if regions is None:
            return torch.zeros(batch, rows * cols, dtype=torch.long, device=device)
        if not isinstance(regions, Tensor) or regions.shape != (batch, height, width):
            got = tuple(regions.shape) if isinstance(regions, Tensor) else type(regions).__name__
            raise ValueError(
                f"regions must be a (B, H, W) = {(batch, height, width)} id map at the output "
                f"size, got {got}"
            )
        if (
            regions.dtype.is_floating_point
            or regions.dtype.is_complex
            or regions.dtype == torch.bool
        ):
            raise ValueError(f"regions must hold integer ids, got dtype {regions.dtype}")
        ids = _pad(regions.to(device, torch.long)[:, None], pad_h, pad_w, "replicate")
        return ids[:, 0, ::f, ::f].reshape(batch, rows * cols)  # nearest, as F.interpolate


def _pad(x: Tensor, pad_h: int, pad_w: int, mode: str) -> Tensor:
    """Pad ``(B, C, H, W)`` at the bottom/right. Reflect needs pads < the size: larger pads
    (tiny images) reflect repeatedly."""
    if not (pad_h or pad_w):
        return x
    if mode == "replicate" and not x.dtype.is_floating_point:
        # replicate is not implemented for integer tensors: index the edge rows/cols instead
        rows = torch.arange(x.shape[2] + pad_h, device=x.device).clamp(max=x.shape[2] - 1)
        cols = torch.arange(x.shape[3] + pad_w, device=x.device).clamp(max=x.shape[3] - 1)
        return x[:, :, rows][:, :, :, cols]
    while pad_h or pad_w:
        step_h, step_w = min(pad_h, x.shape[2] - 1), min(pad_w, x.shape[3] - 1)
        if mode == "reflect" and not (step_h or step_w):  # 1-pixel side: nothing to reflect
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = F.pad(x, (0, step_w, 0, step_h), mode=mode)
        pad_h, pad_w = pad_h - step_h, pad_w - step_w
    return x


def rat(**overrides: object) -> RAT:
    """The released configuration (random init): width 64, encoder/decoder ``[2, 2]``, 4 Blocks
    x 3 BasicLayers at 256 channels, 8 heads, 4x4 windows, MLP ratio 2 (15.95 M parameters)."""
    return RAT(**overrides)  # type: ignore[arg-type]


def tiny(**overrides: object) -> RAT:
    """A CPU-sized RAT for tests: width 16, ``[1, 1]`` levels, one Block of 3 layers (0.28 M)."""
    config: dict[str, object] = {
        "width": 16,
        "enc_blk_nums": (1, 1),
        "dec_blk_nums": (1, 1),
        "middle_blocks": 1,
        "layers_per_block": 3,
    }
    return RAT(**{**config, **overrides})  # type: ignore[arg-type]
