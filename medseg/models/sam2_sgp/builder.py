"""Build a ``sam2`` ``SAM2Base`` from typed sizes, exactly as the package's YAML configs do with
Hydra: SAM 2.1 (``configs/sam2.1/sam2.1_hiera_{t,s}.yaml``, ``sam2.1_hiera_*.pt``) or SAM 2.0
(``configs/sam2/sam2_hiera_{t,s}.yaml``, ``sam2_hiera_*.pt``, what the SAM2-SGP paper used), so
the state-dict keys and shapes equal ``build_sam2(...)``'s (a test checks both) and official
checkpoints load strictly. SAM 2.0 lacks 2.1's ``no_obj_embed_spatial`` and
``obj_ptr_tpos_proj`` (temporal encoding of object pointers).

Pinned to ``sam2`` 1.1.0: SAM2-SGP uses SAM2Base internals (``forward_image``,
``_prepare_backbone_features``, ``_encode_new_memory``, ``memory_attention``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["SAM2_VERSIONS", "build_sam2_base"]

SAM2_VERSIONS = ("2.1", "2.0")


def build_sam2_base(
    *,
    image_size: int,
    embed_dim: int,
    num_heads: int,
    stages: Sequence[int],
    global_att_blocks: Sequence[int],
    window_spec: Sequence[int],
    window_pos_embed_bkg: Sequence[int],
    d_model: int,
    mem_dim: int,
    memory_layers: int,
    memory_ffn: int,
    fuser_layers: int,
    num_maskmem: int,
    sam2_version: str,
) -> nn.Module:
    """``SAM2Base`` with random weights. Every size is required: the defaults (SAM 2.1 Hiera-S
    at 1024 px) are declared once, by :class:`~.model.SAM2SGP` and its presets."""
    if sam2_version not in SAM2_VERSIONS:
        raise ValueError(f"sam2_version must be one of {SAM2_VERSIONS}, got {sam2_version!r}")
    v21 = sam2_version == "2.1"
    try:
        from sam2.modeling.backbones.hieradet import Hiera
        from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
        from sam2.modeling.memory_attention import MemoryAttention, MemoryAttentionLayer
        from sam2.modeling.memory_encoder import CXBlock, Fuser, MaskDownSampler, MemoryEncoder
        from sam2.modeling.position_encoding import PositionEmbeddingSine
        from sam2.modeling.sam.transformer import RoPEAttention
        from sam2.modeling.sam2_base import SAM2Base
    except ImportError as err:  # pragma: no cover - sam2 is a dependency
        msg = f"SAM2-SGP needs the sam2 package (pip install sam2==1.1.0): {err}"
        raise ImportError(msg) from err
    grid = image_size // 16
    trunk = Hiera(
        embed_dim=embed_dim,
        num_heads=num_heads,
        stages=tuple(stages),
        global_att_blocks=tuple(global_att_blocks),
        window_spec=tuple(window_spec),
        window_pos_embed_bkg_spatial_size=tuple(window_pos_embed_bkg),
    )
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(
            num_pos_feats=d_model, normalize=True, scale=None, temperature=10000
        ),
        d_model=d_model,
        backbone_channel_list=[embed_dim * 8, embed_dim * 4, embed_dim * 2, embed_dim],
        fpn_top_down_levels=[2, 3],
        fpn_interp_model="nearest",
    )

    def rope(**kw) -> nn.Module:
        return RoPEAttention(
            rope_theta=10000.0,
            feat_sizes=[grid, grid],
            embedding_dim=d_model,
            num_heads=1,
            downsample_rate=1,
            dropout=0.1,
            **kw,
        )

    layer = MemoryAttentionLayer(
        activation="relu",
        dim_feedforward=memory_ffn,
        dropout=0.1,
        pos_enc_at_attn=False,
        self_attention=rope(),
        d_model=d_model,
        pos_enc_at_cross_attn_keys=True,
        pos_enc_at_cross_attn_queries=False,
        cross_attention=rope(rope_k_repeat=True, kv_in_dim=mem_dim),
    )
    memory_encoder = MemoryEncoder(
        out_dim=mem_dim,
        position_encoding=PositionEmbeddingSine(
            num_pos_feats=mem_dim, normalize=True, scale=None, temperature=10000
        ),
        mask_downsampler=MaskDownSampler(embed_dim=d_model, kernel_size=3, stride=2, padding=1),
        fuser=Fuser(
            CXBlock(dim=d_model, kernel_size=7, padding=3, layer_scale_init_value=1e-6),
            num_layers=fuser_layers,
        ),
        in_dim=d_model,
    )
    return SAM2Base(
        image_encoder=ImageEncoder(trunk=trunk, neck=neck, scalp=1),
        memory_attention=MemoryAttention(
            d_model=d_model, pos_enc_at_input=True, layer=layer, num_layers=memory_layers
        ),
        memory_encoder=memory_encoder,
        num_maskmem=num_maskmem,
        image_size=image_size,
        sigmoid_scale_for_mem_enc=20.0,
        sigmoid_bias_for_mem_enc=-10.0,
        use_mask_input_as_output_without_sam=True,
        directly_add_no_mem_embed=True,
        no_obj_embed_spatial=v21,
        use_high_res_features_in_sam=True,
        multimask_output_in_sam=True,
        iou_prediction_use_sigmoid=True,
        use_obj_ptrs_in_encoder=True,
        add_tpos_enc_to_obj_ptrs=v21,
        proj_tpos_enc_in_obj_ptrs=v21,
        use_signed_tpos_enc_to_obj_ptrs=v21,
        only_obj_ptrs_in_the_past_for_eval=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        fixed_no_obj_ptr=True,
        multimask_output_for_tracking=True,
        use_multimask_token_for_obj_ptr=True,
        multimask_min_pt_num=0,
        multimask_max_pt_num=1,
        use_mlp_for_obj_ptr_proj=True,
        compile_image_encoder=False,
    )
