"""DB-SAM: SAM ViT-B (frozen) + dual-branch adapter + SAM's neck, prompt encoder and decoder.

Paper: Qin et al., "DB-SAM: Delving into High Quality Universal Medical Image Segmentation",
MICCAI 2024; code github AlfredQin/DB-SAM (not runnable as released: missing modules and a
compiled CUDA op; see FIDELITY.md). The SAM parts are Meta's ``segment_anything`` modules under
their checkpoint names (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``), so
``sam_vit_b_01ec64.pth`` loads with strict key matching; the adapter lives under ``adapter.*``.

Trainable: adapter, ViT neck, prompt encoder, mask decoder. Frozen: patch embedding, absolute
position embedding and every ViT block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    TwoWayTransformer,
)
from torch import Tensor, nn

from medseg.models.layers.sam_decode import decode_per_image
from medseg.models.layers.sam_input import check_sam_config, pick_rgb

from .adapter import DualBranchAdapter

__all__ = ["DBSAM", "db_sam_plus", "db_sam_vit_b", "tiny"]

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
_VIT_B_STAGES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (9, 10, 11))


class DBSAM(nn.Module):
    """Box-promptable 2-D segmentation: one mask per image and box.

    Args:
        spatial_dims: must be 2 (linked by the CLI from the data module).
        in_channels: image channels given to :meth:`forward` (linked by the CLI).
        out_channels: classes of the dataset incl. background (linked by the CLI). The net
            segments one object per box; the task prompts every foreground class.
        rgb_channels: which input channels form SAM's RGB input; default ``(0, 0, 0)`` for one
            channel and ``(0, 1, 2)`` for three (anything else must be given).
        img_size / patch_size / embed_dim / depth / num_heads / window_size /
        global_attn_indexes / out_chans: SAM ``ImageEncoderViT`` (ViT-B: 1024, 16, 768, 12,
            12, 14, (2, 5, 8, 11), 256); ``out_chans`` is also the decoder width.
        adapter: ``"two_branch"`` (paper) or ``"four_branch"`` (released "plus").
        stages: ViT block indices per interaction stage.
        conv_widths / conv_downsamples / bn_momentum: the conv branch.
        deform_heads / deform_points / cross_blocks / channel_attention / ffn_ratio / drop /
        drop_path / fusion_reduction: :class:`.adapter.DualBranchAdapter`.
        decoder_depth / decoder_mlp_dim / decoder_heads / iou_head_hidden_dim /
        mask_in_chans: SAM's prompt encoder and mask decoder (ViT-B: 2, 2048, 8, 256, 16).
        sam_checkpoint: path of an official SAM checkpoint (``sam_vit_b_01ec64.pth``) loaded
            into the SAM parts with strict key matching; None = random init.

    Shapes:
        images ``(B, in_channels, S, S)`` float in [0, 1] (``S = img_size``; resized and
        padded by the caller), boxes ``(B, 4)`` ``(x0, y0, x1, y1)`` pixels of that frame ->
        ``(logits (B, 1, S/4, S/4), iou (B, 1))`` (SAM's low-res single-mask output).
    """

    prompt = "box"

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        rgb_channels: Sequence[int] | None = None,
        img_size: int = 1024,
        patch_size: int = 16,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        window_size: int = 14,
        global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
        out_chans: int = 256,
        adapter: str = "two_branch",
        stages: Sequence[Sequence[int]] = _VIT_B_STAGES,
        conv_widths: Sequence[int] = (128, 256, 512),
        conv_downsamples: Sequence[int] = (3, 2, 1, 0),
        bn_momentum: float = 0.01,
        deform_heads: int = 12,
        deform_points: int = 4,
        cross_blocks: int = 2,
        channel_attention: str = "stage",
        ffn_ratio: float = 4.0,
        drop: float = 0.1,
        drop_path: float = 0.4,
        fusion_reduction: int = 12,
        decoder_depth: int = 2,
        decoder_mlp_dim: int = 2048,
        decoder_heads: int = 8,
        iou_head_hidden_dim: int = 256,
        mask_in_chans: int = 16,
        sam_checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        self.rgb_channels = check_sam_config(
            "DB-SAM",
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            rgb=rgb_channels,
        )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.image_size = img_size
        grid = img_size // patch_size
        self.image_encoder = ImageEncoderViT(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=4.0,
            out_chans=out_chans,
            qkv_bias=True,
            norm_layer=_ln_eps6,
            use_rel_pos=True,
            rel_pos_zero_init=True,
            window_size=window_size,
            global_attn_indexes=tuple(global_attn_indexes),
        )
        self.adapter = DualBranchAdapter(
            layout=adapter,
            dim=embed_dim,
            grid=grid,
            stages=stages,
            conv_widths=conv_widths,
            conv_downsamples=conv_downsamples,
            bn_momentum=bn_momentum,
            num_heads=deform_heads,
            num_points=deform_points,
            cross_blocks=cross_blocks,
            channel_attention=channel_attention,
            ffn_ratio=ffn_ratio,
            drop=drop,
            drop_path=drop_path,
            fusion_reduction=fusion_reduction,
        )
        self.prompt_encoder = PromptEncoder(
            embed_dim=out_chans,
            image_embedding_size=(grid, grid),
            input_image_size=(img_size, img_size),
            mask_in_chans=mask_in_chans,
        )
        self.mask_decoder = MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=decoder_depth,
                embedding_dim=out_chans,
                mlp_dim=decoder_mlp_dim,
                num_heads=decoder_heads,
            ),
            transformer_dim=out_chans,
            iou_head_depth=3,
            iou_head_hidden_dim=iou_head_hidden_dim,
        )
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), False)
        if sam_checkpoint is not None:
            from .weights import load_sam_weights

            load_sam_weights(self, sam_checkpoint)
        self.freeze()

    def freeze(self) -> None:
        """Freeze SAM's patch embedding, position embedding and ViT blocks (neck stays)."""
        enc = self.image_encoder
        for module in (enc.patch_embed, enc.blocks):
            module.requires_grad_(False)
        if enc.pos_embed is not None:
            enc.pos_embed.requires_grad_(False)

    def sam_state_dict_keys(self) -> list[str]:
        """Names of the parameters that come from SAM (everything but ``adapter.*``)."""
        return [k for k in self.state_dict() if not k.startswith("adapter.")]

    def forward(self, images: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Encode then decode; see the class docstring for shapes."""
        return self.decode(self.encode(images), boxes)

    def encode(self, images: Tensor) -> Tensor:
        """``(B, in_channels, S, S)`` in [0, 1] -> image embedding ``(B, out_chans, G, G)``."""
        rgb = pick_rgb(images, self.in_channels, self.image_size, self.rgb_channels) * 255.0
        x = (rgb - self.pixel_mean) / self.pixel_std
        fused = self.adapter(self.image_encoder, x)
        return self.image_encoder.neck(fused.permute(0, 3, 1, 2))

    def decode(self, embeddings: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """One box per image -> ``(logits (B, 1, S/4, S/4), iou (B, 1))``.

        Meta's decoder pairs one image with N prompts, so a batch of images with one box each
        is decoded image by image (:func:`medseg.models.layers.sam_decode.decode_per_image`).
        """
        if boxes.shape != (embeddings.shape[0], 4):
            raise ValueError(f"boxes must be ({embeddings.shape[0]}, 4), got {tuple(boxes.shape)}")
        return decode_per_image(self.prompt_encoder, self.mask_decoder, embeddings, boxes=boxes)


def db_sam_vit_b(**overrides: object) -> DBSAM:
    """Paper reading: two branches, SE channel attention after each stage's frozen ViT-B
    blocks (``channel_attention="block"``: after every block), bilateral deformable
    cross-attention per stage, DANE fusion (random init; pass
    ``sam_checkpoint=".../sam_vit_b_01ec64.pth"`` for SAM's weights)."""
    return DBSAM(**overrides)  # type: ignore[arg-type]  # the constructor's defaults


def db_sam_plus(**overrides: object) -> DBSAM:
    """The released "db_sam_plus" configuration: four conv levels and the ViT map attend
    jointly (two deformable blocks per stage), softmax fusion of the five maps."""
    config = {"adapter": "four_branch", "cross_blocks": 2, "drop_path": 0.3}
    return DBSAM(**{**config, **overrides})  # type: ignore[arg-type]


def tiny(**overrides: object) -> DBSAM:
    """CPU-sized random-init DB-SAM (MODELS.md §7.1): 64 px input, patch 8 (8 x 8 tokens),
    ViT width 64 x 4 blocks in two stages, three conv levels, 32-wide decoder."""
    config: dict[str, object] = {
        "img_size": 64,
        "patch_size": 8,
        "embed_dim": 64,
        "depth": 4,
        "num_heads": 4,
        "window_size": 4,
        "global_attn_indexes": (1, 3),
        "out_chans": 32,
        "stages": ((0, 1), (2, 3)),
        "conv_widths": (8, 16, 32),
        "conv_downsamples": (2, 1, 0),
        "bn_momentum": 0.1,
        "deform_heads": 4,
        "deform_points": 2,
        "cross_blocks": 1,
        "ffn_ratio": 2.0,
        "drop": 0.0,
        "drop_path": 0.0,
        "fusion_reduction": 4,
        "decoder_depth": 2,
        "decoder_mlp_dim": 64,
        "decoder_heads": 2,
        "iou_head_hidden_dim": 32,
        "mask_in_chans": 4,
    }
    return DBSAM(**{**config, **overrides})  # type: ignore[arg-type]


def _ln_eps6(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-6)
