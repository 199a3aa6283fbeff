"""HER-Seg: high-resolution medical image segmentation with linear-attention encoder and a
prompt-free SAM-style decoder (2-D).

Paper: Xu et al., arXiv 2504.06205 (v1 "HRMedSeg", v2 "HER-Seg"); code: github xq141839/HER-Seg
(``model.py: MHRMedSeg``), which follows v1's naming. FIDELITY.md maps the names and lists every
choice. The net: LGViT encoder (:mod:`.encoder`) -> neck (1x1 conv to the decoder width, LN,
3x3 conv, LN) -> :class:`.decoder.ECMDecoder` with SAM's ``PromptEncoder`` (no prompts: the
learned "no mask" dense embedding and the random-Fourier positional encoding) and
``TwoWayTransformer`` -> bilinear resize of the 4x-upscaled masks to the input size.
"""

from __future__ import annotations

from collections.abc import Sequence

from segment_anything.modeling import PromptEncoder, TwoWayTransformer
from segment_anything.modeling.common import LayerNorm2d
from torch import Tensor, nn
from torch.nn import functional as F

from .decoder import ECMDecoder
from .encoder import LGViT

__all__ = ["HerSeg", "her_seg", "tiny"]


class HerSeg(nn.Module):
    """HER-Seg (code: ``MHRMedSeg``): LGViT encoder, neck, prompt-free ECM decoder; logits out.

    Args:
        spatial_dims: 2 (the model); 3 runs the 2-D model on every slice across the last axis
            (no inter-slice context; v2's 3-D experiments are not in the released code). Taken
            so that the CLI can link it from the data module like every segmentation net's.
        in_channels: image channels (the paper: 3, ImageNet-normalised RGB).
        out_channels: output logits ``K``. ``K = 1`` is the paper's binary head (sigmoid); for
            ``K > 1`` each channel is an independent sigmoid mask from its own hypernetwork MLP
            (see FIDELITY.md); with :class:`medseg.engine.SegmentationTask` ``K`` is the number
            of classes including background and the prediction is the arg-max.
        img_size: nominal input side; sizes the prompt encoder (whose point/box/mask parts are
            unused and frozen). Any input whose sides are multiples of ``patch_size`` runs.
        patch_size: encoder patch side (``size_divisor``).
        embed_dim: encoder width (a multiple of 4).
        depths: encoder blocks per stage (stage 0: MBConv; others: gated linear attention).
        num_heads: heads per encoder stage (entry 0 unused, see :class:`.encoder.LGViT`).
        mlp_ratio: encoder FFN ratio and MBConv expansion.
        drop_path_rate: encoder stochastic depth (linear from 0).
        decoder_dim: neck output / decoder width (256 in the paper; a multiple of 8).
        decoder_depth: two-way transformer layers.
        decoder_heads: two-way transformer heads.
        decoder_mlp_dim: two-way transformer MLP width (256 in the code; SAM uses 2048).
        num_mask_tokens: mask tokens in the decoder's token sequence (3 in the code).
        mask_in_chans: prompt encoder mask-downscaling width (unused; 16 in the code).
        attn_impl: kernel implementation, see :func:`kernels.linear_attention`.

    Shapes:
        x: ``(B, in_channels, H, W)`` float, ``H`` and ``W`` multiples of ``size_divisor =
        patch_size`` (a ``ValueError`` says the rule) -> logits ``(B, K, H, W)``. With
        ``spatial_dims=3``: ``(B, in_channels, H, W, D)`` -> ``(B, K, H, W, D)`` slice by slice.
    """

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 1,
        img_size: int = 1024,
        patch_size: int = 16,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        mlp_ratio: float = 2.0,
        drop_path_rate: float = 0.1,
        decoder_dim: int = 256,
        decoder_depth: int = 2,
        decoder_heads: int = 8,
        decoder_mlp_dim: int = 256,
        num_mask_tokens: int = 3,
        mask_in_chans: int = 16,
        attn_impl: str | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3 (slice-wise), got {spatial_dims}")
        if in_channels < 1 or out_channels < 1 or patch_size < 1:
            raise ValueError(
                f"in_channels, out_channels and patch_size must be >= 1; got {in_channels}, "
                f"{out_channels}, {patch_size}"
            )
        if img_size % patch_size:
            raise ValueError(f"img_size ({img_size}) must be a multiple of patch_size")
        self.spatial_dims = spatial_dims
        self.in_channels, self.out_channels = in_channels, out_channels
        self.size_divisor = patch_size
        # global (linear) attention: the output depends on the whole window, so automatic
        # inference keeps the trained patch as its sliding window
        self.window_dependent = True
        self.image_encoder = LGViT(
            in_channels=in_channels,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depths=depths,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
            attn_impl=attn_impl,
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, decoder_dim, kernel_size=1, bias=False),
            LayerNorm2d(decoder_dim),
            nn.Conv2d(decoder_dim, decoder_dim, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(decoder_dim),
        )
        grid = img_size // patch_size
        self.prompt_encoder = PromptEncoder(
            embed_dim=decoder_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(img_size, img_size),
            mask_in_chans=mask_in_chans,
        )
        # never called with points, boxes or masks: freeze those parts (no DDP unused-param
        # errors, and "every trainable parameter gets a gradient" holds)
        for part in ("point_embeddings", "not_a_point_embed", "mask_downscaling"):
            getattr(self.prompt_encoder, part).requires_grad_(False)
        self.mask_decoder = ECMDecoder(
            transformer_dim=decoder_dim,
            transformer=TwoWayTransformer(
                depth=decoder_depth,
                embedding_dim=decoder_dim,
                num_heads=decoder_heads,
                mlp_dim=decoder_mlp_dim,
            ),
            num_outputs=out_channels,
            num_mask_tokens=num_mask_tokens,
        )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        if self.spatial_dims == 3:  # every slice across the last axis is one 2-D image
            b, c, h, w, d = x.shape
            out = self._forward_2d(x.permute(0, 4, 1, 2, 3).reshape(b * d, c, h, w))
            return out.reshape(b, d, -1, h, w).permute(0, 2, 3, 4, 1)
        return self._forward_2d(x)

    def _forward_2d(self, x: Tensor) -> Tensor:
        masks = self.decode(self.embed(x))  # (B, K, 4h, 4w)
        return F.interpolate(masks, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def embed(self, x: Tensor) -> Tensor:
        """Encoder + neck: ``(B, C, H, W) -> (B, decoder_dim, H / p, W / p)`` (the embedding that
        PFD pretraining regresses onto SAM's)."""
        return self.neck(self.image_encoder(x))

    def decode(self, embedding: Tensor) -> Tensor:
        """Prompt-free decoding of a whole batch: ``(B, d, h, w) -> (B, K, 4h, 4w)`` logits.

        Equals ``PromptEncoder(points=None, boxes=None, masks=None)`` (empty sparse tokens, the
        "no mask" dense embedding) with the dense positional encoding of the actual ``(h, w)``.
        """
        h, w = embedding.shape[-2:]
        pe = self.prompt_encoder.pe_layer((h, w)).unsqueeze(0)  # (1, d, h, w)
        dense = self.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return self.mask_decoder(embedding, pe, dense)

    def _check_input(self, x: Tensor) -> None:
        axes = "H, W" if self.spatial_dims == 2 else "H, W, D"
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, {axes}), got {tuple(x.shape)}")
        if any(s % self.size_divisor for s in x.shape[2:4]):
            raise ValueError(
                f"H and W must be multiples of {self.size_divisor} (the patch size), "
                f"got {tuple(x.shape[2:])}; pad, crop or resize the input"
            )


def her_seg(**overrides: object) -> HerSeg:
    """The released ``MHRMedSeg``: 1024x1024 RGB, patch 16 (64x64 tokens), width 96, stages
    MBConv x2 + attention 2/6/2 (6/12/24 heads), neck and decoder at 256, two-way transformer
    depth 2 / 8 heads / MLP 256, one binary output (random init)."""
    return HerSeg(**overrides)  # type: ignore[arg-type]


def tiny(**overrides: object) -> HerSeg:
    """A CPU-sized HER-Seg for tests: 64x64 input, patch 8 (8x8 tokens), width 32, one block
    per stage, decoder width 32 (2 heads, MLP 32). Forward + backward well under a second."""
    config: dict[str, object] = {
        "img_size": 64,
        "patch_size": 8,
        "embed_dim": 32,
        "depths": (1, 1, 1, 1),
        "num_heads": (1, 2, 2, 4),
        "decoder_dim": 32,
        "decoder_heads": 2,
        "decoder_mlp_dim": 32,
        "mask_in_chans": 4,
    }
    return HerSeg(**{**config, **overrides})  # type: ignore[arg-type]
