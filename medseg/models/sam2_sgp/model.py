"""SAM2-SGP: SAM2 with support-set guided prompting (prompt-free 2-D and 3-D segmentation).

Paper: Xing et al., arXiv 2506.19658; code github astlian9/SAM_Support (see FIDELITY.md for
what is fixed: the inert pseudo-mask attention, the dead KL term, LoRA at stage transitions,
the hard-coded 1024 px / 64 x 64 grid and the CUDA-only code). Pipeline per query image:

1. SAM2 image encoder (Hiera trunk frozen + rank-16 LoRA on every ``attn.qkv``; FPN neck trained);
2. PMG: the ``k`` most similar supports (cosine of top-level features; deterministic top-k at
   inference) give their memories (SAM2 memory encoder on the support image + its mask);
   SAM2's memory attention conditions the query tokens on them; SAM2's mask decoder without a
   prompt gives the pseudo-mask;
3. box prompt = extent of the pseudo-mask (full image when empty);
4. PMA decoder (:mod:`.pma`): box-prompted, attention weighted by the pseudo-mask -> mask.

3-D (:meth:`SAM2SGP.segment_stack`, inference and training): slices in order; the memory is
the selected supports plus a FIFO bank (``bank_size``) of the model's own previous-slice
memories.

SAM2 lives under ``sam2.*`` with its official names (plus ``lora_*`` factors), so an official
checkpoint's ``model`` dict loads into it strictly (:func:`.weights.load_sam2_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.models.layers.sam_input import check_sam_config, pick_rgb

from .builder import build_sam2_base
from .lora import add_lora
from .pma import PMADecoder
from .support import Features, Support, box_from_logits, decode_with_extras, select_supports

__all__ = ["SAM2SGP", "sam2_sgp_hiera_s", "sam2_sgp_hiera_t", "tiny"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SELECTION = ("multinomial", "topk")


class SAM2SGP(nn.Module):
    """Prompt-free segmentation guided by a support set of image/mask pairs.

    Args:
        spatial_dims / in_channels / out_channels / rgb_channels: as :class:`~medseg.models.
            db_sam.DBSAM` (linked by the CLI; 2-D net, one object class per support set).
        image_size: input side ``S`` (a multiple of 32; SAM2: 1024). Grid ``g = S / 16``.
        embed_dim / num_heads / stages / global_att_blocks / window_spec / window_pos_embed_bkg:
            Hiera trunk (Hiera-S: 96, 1, (1, 2, 11, 2), (7, 10, 13), (8, 4, 14, 7), (7, 7)).
        d_model / mem_dim / memory_layers / memory_ffn / fuser_layers / num_maskmem: SAM2 neck,
            memory attention and memory encoder (256, 64, 4, 2048, 2, 7).
        lora_rank: LoRA rank on every ``attn.qkv`` (16).
        support_size: supports per query (``k``; released: 1 in 2-D, 4 in 3-D).
        train_selection: ``"multinomial"`` (released, training only) or ``"topk"``.
        normalize: ImageNet mean/std on the [0, 1] input (SAM2's training; released: off).
        pma_depth / pma_heads / pma_mlp_dim / pma_final_dim / pma_renormalise / token_mixer /
            pma_code_compat: :class:`.pma.PMADecoder` (the 4096-d released token mixer is off
            by default; ``pma_code_compat=True`` reproduces the released, inert PMA).
        sam2_version: ``"2.1"`` (``sam2.1_hiera_*.pt``) or ``"2.0"`` (``sam2_hiera_*.pt``, the
            paper's): which SAM2 layout is built (:mod:`.builder`).
        sam2_checkpoint: official SAM2 checkpoint of that version (``sam2.1_hiera_small.pt``)
            loaded strictly.
        init_pma_from_sam: with a checkpoint, start the PMA decoder from SAM2's decoder
            weights where names and shapes agree (released: random init).

    Shapes: images ``(B, in_channels, S, S)`` float in [0, 1] (resized and padded by the
    caller), masks ``(M, 1, S, S)`` in {0, 1}; :meth:`predict` returns ``logits (B, 1, S, S)``,
    ``pseudo_logits (B, 1, S/4, S/4)``, ``boxes (B, 4)`` in pixels of the ``S`` frame.
    """

    prompt = "support"

    def __init__(
        self,
        *,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        rgb_channels: Sequence[int] | None = None,
        image_size: int = 1024,
        embed_dim: int = 96,
        num_heads: int = 1,
        stages: Sequence[int] = (1, 2, 11, 2),
        global_att_blocks: Sequence[int] = (7, 10, 13),
        window_spec: Sequence[int] = (8, 4, 14, 7),
        window_pos_embed_bkg: Sequence[int] = (7, 7),
        d_model: int = 256,
        mem_dim: int = 64,
        memory_layers: int = 4,
        memory_ffn: int = 2048,
        fuser_layers: int = 2,
        num_maskmem: int = 7,
        lora_rank: int = 16,
        support_size: int = 1,
        train_selection: str = "multinomial",
        normalize: bool = True,
        pma_depth: int = 2,
        pma_heads: int = 8,
        pma_mlp_dim: int = 2048,
        pma_final_dim: int = 16,
        pma_renormalise: bool = True,
        token_mixer: bool = False,
        pma_code_compat: bool = False,
        sam2_version: str = "2.1",
        sam2_checkpoint: str | None = None,
        init_pma_from_sam: bool = True,
    ) -> None:
        super().__init__()
        self.rgb_channels = check_sam_config(
            "SAM2-SGP",
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            rgb=rgb_channels,
        )
        if train_selection not in SELECTION:
            raise ValueError(f"train_selection must be one of {SELECTION}")
        if image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32, got {image_size}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.image_size, self.support_size = image_size, support_size
        self.train_selection, self.normalize = train_selection, normalize
        self.sam2 = build_sam2_base(
            image_size=image_size,
            embed_dim=embed_dim,
            num_heads=num_heads,
            stages=stages,
            global_att_blocks=global_att_blocks,
            window_spec=window_spec,
            window_pos_embed_bkg=window_pos_embed_bkg,
            d_model=d_model,
            mem_dim=mem_dim,
            memory_layers=memory_layers,
            memory_ffn=memory_ffn,
            fuser_layers=fuser_layers,
            num_maskmem=num_maskmem,
            sam2_version=sam2_version,
        )
        grid = image_size // 16
        self.pma_decoder = PMADecoder(
            d_model,
            pma_heads,
            pma_mlp_dim,
            pma_depth,
            final_dim=pma_final_dim,
            renormalise=pma_renormalise,
            token_mixer_tokens=grid * grid if token_mixer else 0,
            code_compat=pma_code_compat,
        )
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        if sam2_checkpoint is not None:
            from .weights import init_pma_from_sam2, load_sam2_weights

            load_sam2_weights(self, sam2_checkpoint)
            if init_pma_from_sam:
                init_pma_from_sam2(self)
        add_lora(self.sam2.image_encoder.trunk, lora_rank)
        for name, p in self.sam2.image_encoder.trunk.named_parameters():
            p.requires_grad_("lora_" in name)

    # feature extraction ------------------------------------------------------------------------
    def encode_images(self, images: Tensor) -> Features:
        """``(B, in_channels, S, S)`` in [0, 1] -> :class:`Features`."""
        x = pick_rgb(images, self.in_channels, self.image_size, self.rgb_channels)
        if self.normalize:
            x = (x - self.pixel_mean) / self.pixel_std
        out = self.sam2.forward_image(x)
        _, feats, pos, sizes = self.sam2._prepare_backbone_features(out)
        key = F.normalize(feats[-1].permute(1, 0, 2).flatten(1).float(), dim=1)
        return Features(feats, pos, sizes, key)

    def select(self, features: Features, index: Tensor | list[int]) -> Features:
        """The features of a subset of the images (for supports drawn from a batch)."""
        return features.select(index)

    def support_memory(self, features: Features, masks: Tensor) -> Support:
        """Encode support images (their ``features``) with their masks ``(M, 1, S, S)``."""
        mem, pos = self._memory(features, masks.float() * 20.0 - 10.0, from_mask=True)
        tpos = self.sam2.maskmem_tpos_enc[self.sam2.num_maskmem - 1].view(1, -1, 1, 1)
        return Support(mem, pos + tpos, features.key)

    def _memory(self, features: Features, logits: Tensor, from_mask: bool) -> tuple[Tensor, Tensor]:
        s = self.image_size
        if logits.shape[-1] != s:
            logits = F.interpolate(logits, (s, s), mode="bilinear", align_corners=False)
        present = (logits > 0).flatten(1).any(1, keepdim=True)
        obj = torch.where(present, 10.0, -10.0).to(logits.dtype)
        mem, pos = self.sam2._encode_new_memory(
            current_vision_feats=features.feats,
            feat_sizes=features.sizes,
            pred_masks_high_res=logits,
            object_score_logits=obj,
            is_mask_from_pts=from_mask,
        )
        return mem, pos[-1]

    # prediction --------------------------------------------------------------------------------
    def predict(
        self,
        features: Features,
        support: Support,
        *,
        k: int | None = None,
        exclude: Tensor | None = None,
        generator: torch.Generator | None = None,
        bank: Support | None = None,
    ) -> dict[str, Tensor]:
        """Segment the images of ``features`` guided by ``support`` (see the class docstring).

        Args:
            k: supports per query (default ``support_size``).
            exclude: ``(B, M)`` bool, supports a query may not use (leave-one-out training).
            generator: training-time stochastic selection (``train_selection="multinomial"``).
            bank: extra memories shared by every query (3-D propagation), used whole.
        """
        b = len(features)
        stochastic = self.training and self.train_selection == "multinomial" and generator
        assert support.key is not None
        index = select_supports(
            features.key,
            support.key,
            k or self.support_size,
            exclude=exclude,
            generator=generator if stochastic else None,
        )
        mem = _tokens(support.memory[index])  # (k*g*g, B, Cm)
        pos = _tokens(support.pos[index])
        if bank is not None and len(bank):
            mem = torch.cat([mem, _tokens(bank.memory[None].expand(b, -1, -1, -1, -1))])
            pos = torch.cat([pos, _tokens(bank.pos[None].expand(b, -1, -1, -1, -1))])
        g = features.sizes[-1]
        pix = self.sam2.memory_attention(
            curr=[features.feats[-1]],
            curr_pos=[features.pos[-1]],
            memory=mem,
            memory_pos=pos,
            num_obj_ptr_tokens=0,
        )
        pix = pix.permute(1, 2, 0).reshape(b, -1, *g)
        high_res = [
            f.permute(1, 2, 0).reshape(b, -1, *size)
            for f, size in zip(features.feats[:-1], features.sizes[:-1], strict=True)
        ]
        pe = self.sam2.sam_prompt_encoder
        image_pe = pe.get_dense_pe()
        sparse, dense = pe(points=None, boxes=None, masks=None)
        pseudo, _, msk_feat, up_embed = decode_with_extras(
            self.sam2.sam_mask_decoder,
            pix,
            image_pe,
            sparse.expand(b, -1, -1),
            dense.expand(b, -1, -1, -1),
            high_res,
        )
        boxes = box_from_logits(pseudo, self.image_size)
        sparse2, dense2 = pe(points=None, boxes=boxes, masks=None)
        prob = F.interpolate(torch.sigmoid(pseudo), g, mode="area")
        logits = self.pma_decoder(
            pix, image_pe, sparse2, dense2, (high_res[0], high_res[1]), prob, up_embed, msk_feat
        )
        return {"logits": logits, "pseudo_logits": pseudo, "boxes": boxes, "support_index": index}

    def forward(self, images: Tensor, support_images: Tensor, support_masks: Tensor) -> Tensor:
        """2-D: ``images (B, C, S, S)``, supports ``(M, C, S, S)`` + masks ``(M, 1, S, S)`` ->
        mask logits ``(B, 1, S, S)``."""
        support = self.support_memory(self.encode_images(support_images), support_masks)
        return self.predict(self.encode_images(images), support)["logits"]

    def segment_stack(
        self,
        images: Tensor | Features,
        support: Support,
        *,
        bank_size: int = 16,
        k: int | None = None,
        exclude: Tensor | None = None,
        generator: torch.Generator | None = None,
        progress=None,
    ) -> dict[str, Tensor]:
        """3-D: slices in order, each conditioned on the supports and on a FIFO bank of at most
        ``bank_size`` memories of its predecessors' predictions (differentiable: 3-D training
        back-propagates through the bank).

        Args:
            images: slices ``(N, C, S, S)`` (encoded one at a time, so any ``N``) or their
                :class:`Features` (training: a chunk encoded in one batch).
            exclude: ``(M,)`` bool, supports no slice may use (training: the chunk's own case).
            generator: training-time stochastic support pick (as :meth:`predict`).

        Returns ``logits (N, 1, S, S)``, ``pseudo_logits``, ``boxes (N, 4)`` and
        ``bank_sizes (N,)`` (memories in the bank when each slice was segmented).
        """
        if bank_size < 0:
            raise ValueError("bank_size must be >= 0")
        out: dict[str, list[Tensor]] = {"logits": [], "pseudo_logits": [], "boxes": []}
        past: list[tuple[Tensor, Tensor]] = []  # (memory, pos without temporal encoding)
        sizes = []
        n_tpos = self.sam2.num_maskmem
        for i in range(len(images)):
            if isinstance(images, Features):
                feats = images.select([i])
            else:
                feats = self.encode_images(images[i : i + 1])
            bank = None
            if past:
                tpos = [
                    self.sam2.maskmem_tpos_enc[max(0, n_tpos - 1 - min(t, n_tpos - 1))]
                    for t in range(len(past), 0, -1)
                ]
                bank = Support(
                    torch.cat([m for m, _ in past]),
                    torch.cat(
                        [p + tp.view(1, -1, 1, 1) for (_, p), tp in zip(past, tpos, strict=True)]
                    ),
                    None,
                )
            sizes.append(len(past))
            res = self.predict(
                feats,
                support,
                k=k,
                bank=bank,
                exclude=None if exclude is None else exclude[None],
                generator=generator,
            )
            for key in out:
                out[key].append(res[key])
            if bank_size:
                past.append(self._memory(feats, res["logits"], from_mask=False))
                del past[: max(0, len(past) - bank_size)]
            if progress is not None:
                progress(i + 1)
        result = {key: torch.cat(v) for key, v in out.items()}
        result["bank_sizes"] = torch.tensor(sizes)
        return result


def sam2_sgp_hiera_s(**overrides: object) -> SAM2SGP:
    """The paper's configuration: SAM2 Hiera-S at 1024 px, LoRA 16 (random init; pass
    ``sam2_checkpoint=".../sam2.1_hiera_small.pt"``, or ``sam2_version="2.0"`` with
    ``sam2_hiera_small.pt``, the SAM 2.0 file the paper used)."""
    return SAM2SGP(**overrides)  # type: ignore[arg-type]


def sam2_sgp_hiera_t(**overrides: object) -> SAM2SGP:
    """Hiera-T variant (``sam2.1_hiera_tiny.pt``; ``sam2_version="2.0"``: ``sam2_hiera_tiny.pt``):
    stages (1, 2, 7, 2), global (5, 7, 9)."""
    config = {"stages": (1, 2, 7, 2), "global_att_blocks": (5, 7, 9)}
    return SAM2SGP(**{**config, **overrides})  # type: ignore[arg-type]


def tiny(**overrides: object) -> SAM2SGP:
    """CPU-sized random-init SAM2-SGP (MODELS.md §7.2 (b)): 64 px, Hiera width 16,
    feature grids 16/8/4, memory width 8, one memory-attention layer, LoRA rank 4."""
    config: dict[str, object] = {
        "image_size": 64,
        "embed_dim": 16,
        "num_heads": 1,
        "stages": (1, 1, 2, 1),
        "global_att_blocks": (3,),
        "window_spec": (4, 4, 4, 2),
        "window_pos_embed_bkg": (4, 4),
        "d_model": 32,
        "mem_dim": 8,
        "memory_layers": 1,
        "memory_ffn": 64,
        "fuser_layers": 1,
        "lora_rank": 4,
        "pma_heads": 2,
        "pma_mlp_dim": 64,
        "pma_final_dim": 8,
    }
    return SAM2SGP(**{**config, **overrides})  # type: ignore[arg-type]


def _tokens(x: Tensor) -> Tensor:
    """``(B, k, C, h, w)`` -> memory tokens ``(k * h * w, B, C)``."""
    b, k, c, h, w = x.shape
    return x.permute(1, 3, 4, 0, 2).reshape(k * h * w, b, c)
