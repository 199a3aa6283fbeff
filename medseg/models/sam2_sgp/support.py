"""SAM2-SGP building blocks around SAM2: image features, support memories, support selection,
the pseudo-mask decoder pass with its extra outputs, and the box from the pseudo-mask."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "Features",
    "Support",
    "box_from_logits",
    "decode_with_extras",
    "select_supports",
]


@dataclass
class Features:
    """SAM2 image features of ``B`` images.

    Attributes:
        feats: per level ``(HW_l, B, C_l)``: high-res s0 ``(4g)^2 x C/8``, s1 ``(2g)^2 x C/4``
            (already projected by the mask decoder's ``conv_s0``/``conv_s1``), top ``g^2 x C``.
        pos: matching positional encodings.
        sizes: ``[(H_l, W_l)]``.
        key: ``(B, g^2 * C)`` L2-normalised top-level features (support similarity).
    """

    feats: list[Tensor]
    pos: list[Tensor]
    sizes: list[tuple[int, int]]
    key: Tensor

    def __len__(self) -> int:
        return self.key.shape[0]

    def select(self, index: Tensor | list[int]) -> Features:
        index = torch.as_tensor(index, device=self.key.device, dtype=torch.long)
        return Features(
            [f[:, index] for f in self.feats],
            [p[:, index] for p in self.pos],
            list(self.sizes),
            self.key[index],
        )


@dataclass
class Support:
    """Encoded support set of ``M`` image/mask pairs (or propagated slices).

    Attributes:
        memory: ``(M, C_mem, g, g)`` memory-encoder features.
        pos: ``(M, C_mem, g, g)`` their positional encodings (temporal encoding added).
        key: ``(M, g^2 * C)`` normalised image features for similarity (None for a 3-D bank).
    """

    memory: Tensor
    pos: Tensor
    key: Tensor | None

    def __len__(self) -> int:
        return self.memory.shape[0]


def select_supports(
    query_key: Tensor,
    support_key: Tensor,
    k: int,
    *,
    exclude: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick ``k`` supports per query by cosine similarity.

    Deterministic top-k (ties: lower index first) when ``generator`` is None; otherwise the
    released stochastic pick (multinomial without replacement from ``softmax(similarity)``).

    Args:
        query_key: ``(B, D)``, support_key ``(M, D)``, both L2-normalised.
        exclude: ``(B, M)`` bool, True = not allowed (a query is not its own support).

    Returns:
        ``(B, k')`` long indices, ``k' = min(k, allowed supports of the worst-off query)``.
    """
    sim = query_key.float() @ support_key.float().T  # (B, M)
    if exclude is not None:
        sim = sim.masked_fill(exclude, float("-inf"))
    allowed = int(torch.isfinite(sim).sum(1).min())
    k = min(k, allowed)
    if k < 1:
        raise ValueError("a query has no support to choose from")
    if generator is None:
        # stable order: sort by (-similarity, index)
        order = torch.sort(-sim, dim=1, stable=True).indices
        return order[:, :k]
    probs = sim.softmax(1).cpu()
    return torch.multinomial(probs, k, replacement=False, generator=generator).to(sim.device)


def decode_with_extras(
    decoder: nn.Module,
    image_embeddings: Tensor,
    image_pe: Tensor,
    sparse: Tensor,
    dense: Tensor,
    high_res: list[Tensor],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """SAM2 ``MaskDecoder.predict_masks`` (one image per prompt set, single mask) that also
    returns what the PMA decoder reads.

    Returns:
        ``(logits (B, 1, 4g, 4g), iou (B, 1), msk_feat (B, T, g*g), up_embed (B, C/8, 4g, 4g))``:
        ``msk_feat`` = mask-token outputs x image tokens, ``up_embed`` = the upscaled embedding.
    """
    s = 1 if decoder.pred_obj_scores else 0
    parts = [decoder.iou_token.weight, decoder.mask_tokens.weight]
    if s:
        parts.insert(0, decoder.obj_score_token.weight)
    out_tokens = torch.cat(parts, 0).unsqueeze(0).expand(sparse.shape[0], -1, -1)
    tokens = torch.cat([out_tokens, sparse], 1)
    src = image_embeddings + dense
    pos = image_pe.expand(src.shape[0], -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos, tokens)
    iou_token = hs[:, s]
    mask_tokens = hs[:, s + 1 : s + 1 + decoder.num_mask_tokens]
    msk_feat = mask_tokens @ src.transpose(1, 2)  # (B, T, HW)
    src = src.transpose(1, 2).reshape(b, c, h, w)
    dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
    feat_s0, feat_s1 = high_res
    up = act1(ln1(dc1(src) + feat_s1))
    up = act2(dc2(up) + feat_s0)
    hyper = decoder.output_hypernetworks_mlps[0](mask_tokens[:, 0])  # single-mask token
    bb, cc, hh, ww = up.shape
    logits = (hyper[:, None] @ up.view(bb, cc, hh * ww)).view(bb, 1, hh, ww)
    iou = decoder.iou_prediction_head(iou_token)[:, :1]
    return logits, iou, msk_feat, up


def box_from_logits(logits: Tensor, image_size: int) -> Tensor:
    """Box prompt from pseudo-mask logits ``(B, 1, h, w)`` (any ``h = w``): the extent of
    ``sigmoid > 0.5`` in ``image_size`` pixel coordinates ``(x0, y0, x1, y1)``; an empty
    pseudo-mask gives the full image ``(0, 0, S - 1, S - 1)``. ``-> (B, 4)`` float."""
    fg = logits.detach()[:, 0] > 0
    b, h, w = fg.shape
    sy, sx = image_size / h, image_size / w
    rows, cols = fg.any(2), fg.any(1)
    ar_h = torch.arange(h, device=fg.device)
    ar_w = torch.arange(w, device=fg.device)
    y0 = torch.where(rows, ar_h, h).amin(1) * sy
    y1 = (torch.where(rows, ar_h, -1).amax(1) + 1) * sy - 1
    x0 = torch.where(cols, ar_w, w).amin(1) * sx
    x1 = (torch.where(cols, ar_w, -1).amax(1) + 1) * sx - 1
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    full = torch.tensor([0.0, 0.0, image_size - 1.0, image_size - 1.0], device=fg.device)
    return torch.where(rows.any(1)[:, None], boxes, full)
