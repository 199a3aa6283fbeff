"""Prompt geometry for SAM-family tasks and predictors: the net frame (resize longest side,
pad bottom/right) and box prompts from masks (MedSAM conventions).

Pure torch (no Lightning): the training tasks (:mod:`medseg.engine.promptable`) and the
predictors (:mod:`medseg.inference.sam_family`) share it, so a predictor never imports a task.

Boxes are ``(x0, y0, x1, y1)`` inclusive pixel coordinates (x = column, y = row) of the frame
they are given in.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["boxes_from_masks", "from_frame", "jitter_boxes", "low_res_target", "to_frame"]


def to_frame(x: Tensor, size: int, *, mode: str = "bilinear") -> tuple[Tensor, tuple[int, int]]:
    """Slices ``(N, C, h, w)`` -> the net frame ``(N, C, size, size)``: per-slice, per-channel
    min-max to [0, 1] (bilinear mode; labels use ``mode="nearest"`` and keep their values),
    longest side resized to ``size``, padded bottom/right with 0. Returns the resized ``(h', w')``.
    """
    h, w = x.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))
    x = x.float()
    if mode != "nearest":
        lo = x.amin((2, 3), keepdim=True)
        hi = x.amax((2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp_min(1e-8)
    if (nh, nw) != (h, w):
        kw = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
        x = F.interpolate(x, (nh, nw), mode=mode, **kw)
    return F.pad(x, (0, size - nw, 0, size - nh)), (nh, nw)


def from_frame(logits: Tensor, size: int, resized: tuple[int, int], shape) -> Tensor:
    """Net-frame logits ``(N, 1, s, s)`` (any ``s``) -> ``(N, 1, *shape)``: crop the padding,
    resize bilinearly to the slice size."""
    s = logits.shape[-1]
    nh, nw = (math.ceil(r * s / size) for r in resized)
    return F.interpolate(
        logits[..., :nh, :nw].float(), tuple(shape), mode="bilinear", align_corners=False
    )


def boxes_from_masks(masks: Tensor) -> tuple[Tensor, Tensor]:
    """``(N, 1, H, W)`` bool -> ``(boxes (N, 4) float (x0, y0, x1, y1) inclusive px, valid (N,))``;
    an empty mask gives the full-image box and ``valid = False``."""
    n, _, h, w = masks.shape
    m = masks.reshape(n, h, w)
    rows, cols = m.any(2), m.any(1)
    valid = rows.any(1)
    ar_h = torch.arange(h, device=m.device)
    ar_w = torch.arange(w, device=m.device)
    big = max(h, w) + 1
    y0 = torch.where(rows, ar_h, big).amin(1)
    y1 = torch.where(rows, ar_h, -1).amax(1)
    x0 = torch.where(cols, ar_w, big).amin(1)
    x1 = torch.where(cols, ar_w, -1).amax(1)
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    full = torch.tensor([0.0, 0.0, w - 1.0, h - 1.0], device=m.device)
    return torch.where(valid[:, None], boxes, full), valid


def jitter_boxes(
    boxes: Tensor, max_px: float, size: int, *, generator: torch.Generator | None = None
) -> Tensor:
    """Enlarge each side by an independent uniform integer in ``[0, max_px]``, clipped to the
    ``size`` frame (MedSAM / DB-SAM box perturbation)."""
    if max_px <= 0:
        return boxes
    r = torch.randint(0, int(max_px) + 1, boxes.shape, generator=generator).to(boxes)
    out = boxes + r * torch.tensor([-1.0, -1.0, 1.0, 1.0], device=boxes.device)
    return out.clamp(0, size - 1)


def low_res_target(target: Tensor, logits: Tensor) -> Tensor:
    """Target at the logits' size (area average, then >= 0.5)."""
    if target.shape[-2:] == logits.shape[-2:]:
        return target
    return (F.interpolate(target, logits.shape[-2:], mode="area") >= 0.5).to(logits.dtype)
