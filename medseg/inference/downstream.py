"""Downstream check of a restoration: does segmentation get better on the restored image?

:func:`downstream_dice` segments the degraded input and the restored volume with one trained
segmentation checkpoint (:class:`medseg.inference.automatic.AutomaticSegmenter`) and scores both
against a reference label map. Each prediction is brought onto the reference's grid by
nearest-neighbour lookup through the affines (world coordinates), so a super-resolved output
(finer grid) and the input are scored on the same voxels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medseg.io import Volume
from medseg.metrics.overlap import dice

__all__ = ["dice_per_label", "downstream_dice", "resample_nearest"]


def resample_nearest(labels: Volume, grid: Volume) -> np.ndarray:
    """``labels`` ``(X, Y, Z)`` looked up at the voxel centres of ``grid`` (nearest voxel;
    outside the source box -> 0). Returns an array of ``grid.spatial_shape``."""
    src = np.asarray(labels.array)
    to_src = np.linalg.inv(labels.affine) @ grid.affine
    shape = grid.spatial_shape
    out = np.zeros(shape, dtype=src.dtype)
    ii, jj = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    for k in range(shape[2]):  # one slice at a time: bounded memory
        pts = np.stack([ii, jj, np.full_like(ii, k), np.ones_like(ii)]).reshape(4, -1)
        idx = np.rint((to_src @ pts)[:3]).astype(np.int64)
        ok = np.all((idx >= 0) & (idx < np.array(src.shape)[:, None]), axis=0)
        flat = np.zeros(idx.shape[1], dtype=src.dtype)
        flat[ok] = src[idx[0, ok], idx[1, ok], idx[2, ok]]
        out[:, :, k] = flat.reshape(shape[0], shape[1])
    return out


def dice_per_label(pred: np.ndarray, ref: np.ndarray) -> dict[int, float]:
    """Dice of every foreground label present in ``ref`` (1.0 when both are empty)."""
    labels = sorted(int(v) for v in np.unique(ref) if v != 0)
    return {label: dice(pred == label, ref == label, empty=1.0) for label in labels}


def downstream_dice(
    seg_checkpoint: str,
    degraded: Volume,
    restored: Volume,
    reference: Volume,
    *,
    device: str = "auto",
    trusted: bool = False,
) -> dict[str, Any]:
    """Dice of segmenting ``degraded`` and ``restored`` against ``reference`` and the change.

    Returns ``{"labels": {name: {"input", "restored", "delta"}}, "dice_input",
    "dice_restored", "delta"}`` (means over the reference's foreground labels). Raises
    :class:`~medseg.errors.ModelError` (exit 4) for an unusable ``seg_checkpoint``.
    """
    from medseg.inference.automatic import AutomaticSegmenter
    from medseg.inference.checkpoints import check_checkpoint_file

    check_checkpoint_file(seg_checkpoint)  # a FIFO or a device is refused before any open
    segmenter = AutomaticSegmenter.from_checkpoint(seg_checkpoint, device=device, trusted=trusted)
    names = segmenter.label_names
    before = dice_per_label(
        resample_nearest(segmenter.segment(degraded).labels, reference), reference.array
    )
    after = dice_per_label(
        resample_nearest(segmenter.segment(restored).labels, reference), reference.array
    )
    per = {}
    for label in before:
        name = names.get(label, f"label{label}")
        per[name] = {
            "input": before[label],
            "restored": after[label],
            "delta": after[label] - before[label],
        }
    mean_in = float(np.mean(list(before.values()))) if before else float("nan")
    mean_out = float(np.mean(list(after.values()))) if after else float("nan")
    return {
        "labels": per,
        "dice_input": mean_in,
        "dice_restored": mean_out,
        "delta": mean_out - mean_in,
    }
