"""Many box prompts on one slice through LiteMedSAM's decoder in a few calls (RAT's region maps).

SAM's mask decoder pairs one image embedding with N prompt sets (it repeats the embedding
inside), so all the boxes of a slice are decoded ``chunk`` at a time instead of one call each,
and boxes that are equal in LiteMedSAM's 256-space (re-prompts of masks that converged to the
same object) are decoded once.
:func:`refined_box_masks` runs :class:`~medseg.inference.regions.SamGridPartitioner`'s box grid
with its re-prompting (each mask prompted again with its own bounding box) as one batch per
refinement step.

The result equals the one-box-per-call path of
:meth:`medseg.inference.litemedsam.LiteMedSAMPredictor.predict` (same embedding, the same
256-space boxes, the same crop / bilinear resize / 0.5 threshold), up to float rounding in
batched matrix products (tested: identical masks on a real slice with the shipped weights).
Measured time per 256 x 256 slice (``bench/sam_regions.py``): on a shared 2-core CPU 1.3x
faster than one call per box (608 s vs 766 s at load average 8): the decoder's work per box
(two-way attention over 4,096 image tokens, upscaling to 256 x 256) is unchanged, only the
call overhead goes. The batch is what a GPU needs to be fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .litemedsam import LiteMedSAMPredictor, box_to_256

__all__ = ["DEFAULT_CHUNK", "mask_box", "predict_boxes", "refined_box_masks"]

#: boxes per decoder call; 64 keeps the repeated embedding at 256 MiB in fp32
DEFAULT_CHUNK = 64


def predict_boxes(
    predictor: Any, index: int, boxes: Sequence[Sequence[float]], *, chunk: int = DEFAULT_CHUNK
) -> tuple[np.ndarray, np.ndarray]:
    """Masks of ``boxes`` ``(N, 4)`` ``(x0, y0, x1, y1)`` in slice pixels on stack slice ``index``.

    Returns ``(masks (N, H, W) bool, ious (N,) float32)``. A :class:`LiteMedSAMPredictor` decodes
    ``chunk`` boxes per call; any other predictor (tests' fakes) is asked one box at a time
    through its ``predict(index, box=...)``.
    """
    if not isinstance(predictor, LiteMedSAMPredictor):
        pairs = [predictor.predict(index, box=list(b)) for b in boxes]
        height, width = predictor.stack.shape[1:] if hasattr(predictor, "stack") else (0, 0)
        if not pairs:
            return np.zeros((0, height, width), bool), np.zeros(0, np.float32)
        return np.stack([m for m, _ in pairs]), np.array([s for _, s in pairs], np.float32)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    height, width = predictor.stack.shape[1:]
    if len(boxes) == 0:
        return np.zeros((0, height, width), bool), np.zeros(0, np.float32)
    for b in boxes:
        if len(b) != 4 or not np.isfinite(b).all() or b[2] < b[0] or b[3] < b[1]:
            raise ValueError(f"box must be finite (x0, y0, x1, y1), x0<=x1, y0<=y1: {b}")
    boxes256 = np.stack([box_to_256(np.asarray(b, np.float64), (height, width)) for b in boxes])
    boxes256, inverse = np.unique(boxes256, axis=0, return_inverse=True)  # equal prompts: once
    embedding = predictor._embedding(int(index), 0, int(index)).float()  # (1, 256, 64, 64)
    net = predictor.net
    scale = 256 / max(height, width)
    new_h, new_w = int(height * scale + 0.5), int(width * scale + 0.5)
    masks, ious = [], []
    with torch.inference_mode():
        image_pe = net.prompt_encoder.get_dense_pe()
        for start in range(0, len(boxes256), chunk):
            part = torch.as_tensor(
                boxes256[start : start + chunk], dtype=torch.float32, device=predictor.device
            )
            sparse, dense = net.prompt_encoder(points=None, boxes=part, masks=None)
            logits, iou = net.mask_decoder(
                image_embeddings=embedding,
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )  # (n, 1, 256, 256), (n, 1)
            logits = F.interpolate(
                logits[..., :new_h, :new_w], (height, width), mode="bilinear", align_corners=False
            )
            masks.append((torch.sigmoid(logits) > 0.5)[:, 0].cpu().numpy())
            ious.append(iou[:, 0].float().cpu().numpy())
    inverse = inverse.reshape(-1)
    return np.concatenate(masks)[inverse], np.concatenate(ious)[inverse]


def refined_box_masks(
    predictor: Any,
    boxes: Sequence[Sequence[float]],
    *,
    refine_steps: int,
    margin: int = 3,
    chunk: int = DEFAULT_CHUNK,
) -> tuple[np.ndarray, np.ndarray]:
    """Each box's mask after ``refine_steps`` re-prompts with its own bounding box (+``margin``
    px), on stack slice 0; a mask that comes back empty stops refining (as one box at a time).

    Returns ``(masks (N, H, W) bool, ious (N,) float32)`` in the order of ``boxes``; one batch of
    decoder calls per step (``ceil(active / chunk)`` calls each).
    """
    masks, ious = predict_boxes(predictor, 0, boxes, chunk=chunk)
    active = np.arange(len(masks))
    for _ in range(refine_steps):
        active = active[masks[active].reshape(len(active), -1).any(1)] if len(active) else active
        if not len(active):
            break
        again = [mask_box(masks[i], margin) for i in active]
        masks[active], ious[active] = predict_boxes(predictor, 0, again, chunk=chunk)
    return masks, ious


def mask_box(mask: np.ndarray, margin: int) -> list[int]:
    """``(x0, y0, x1, y1)`` bounding box of a non-empty ``(H, W)`` mask, grown by ``margin``
    pixels and clipped to the image."""
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    return [
        max(0, int(xs.min()) - margin),
        max(0, int(ys.min()) - margin),
        min(width - 1, int(xs.max()) + margin),
        min(height - 1, int(ys.max()) + margin),
    ]
