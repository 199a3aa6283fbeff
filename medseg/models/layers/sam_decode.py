"""SAM's prompt encoder + mask decoder over a batch of images with one prompt set each.

Meta's ``MaskDecoder`` pairs *one* image with N prompt sets (it repeats the image embedding), so
a batch of B images with one prompt set per image is decoded image by image. LiteMedSAM and
DB-SAM share this loop (SAM2-SGP decodes through SAM2's own heads).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["decode_per_image"]


def decode_per_image(
    prompt_encoder: nn.Module,
    mask_decoder: nn.Module,
    embeddings: Tensor,
    *,
    boxes: Tensor | None = None,
    points: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Single-mask logits for one prompt set per image.

    Args:
        prompt_encoder / mask_decoder: ``segment_anything``'s ``PromptEncoder`` and
            ``MaskDecoder`` (``multimask_output`` off).
        embeddings: image embeddings ``(B, C, G, G)``.
        boxes: ``(B, 4)`` float ``(x0, y0, x1, y1)`` in the net's input pixels, or None.
        points: SAM's ``(coords (B, N, 2) float (x, y) in the same pixels, labels (B, N))``
            with label 1 = foreground, 0 = background, or None.

    Returns:
        ``(logits (B, 1, 4G, 4G), iou (B, 1))``: SAM's low-resolution mask and predicted IoU.
    """
    image_pe = prompt_encoder.get_dense_pe()
    logits, ious = [], []
    for b in range(embeddings.shape[0]):
        one = slice(b, b + 1)
        sparse, dense = prompt_encoder(
            points=None if points is None else (points[0][one], points[1][one]),
            boxes=None if boxes is None else boxes[one],
            masks=None,
        )
        mask, iou = mask_decoder(
            image_embeddings=embeddings[one],
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        logits.append(mask)
        ious.append(iou)
    return torch.cat(logits), torch.cat(ious)
