"""Per-label statistics of a label map: voxel count, volume in mL, bounding box."""

from __future__ import annotations

from typing import Any

import numpy as np

from medseg.metrics.overlap import dice as metrics_dice

__all__ = ["dice", "label_statistics"]


def label_statistics(
    labels: np.ndarray,
    affine: np.ndarray,
    names: dict[int, str] | None = None,
) -> dict[str, Any]:
    """Statistics of every non-zero label in ``labels (X, Y, Z)`` on the grid ``affine (4, 4)``.

    Returns a JSON-ready dict ``{"voxel_volume_ml", "labels": [{label, name, voxels, volume_ml,
    bbox_voxel: {min: [i, j, k], max: [i, j, k]} (inclusive), bbox_mm: {min, max} (RAS mm of the
    voxel centres)}]}``. 1 mL = 1000 mm^3.
    """
    affine = np.asarray(affine, dtype=np.float64)
    voxel_ml = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
    entries = []
    ids = np.unique(labels)
    for label in (int(v) for v in ids if v != 0):
        coords = np.argwhere(labels == label)
        lo, hi = coords.min(axis=0), coords.max(axis=0)
        corners = np.array(
            [[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])],
            dtype=np.float64,
        )
        world = corners @ affine[:3, :3].T + affine[:3, 3]
        entries.append(
            {
                "label": label,
                "name": (names or {}).get(label, f"label_{label}"),
                "voxels": int(coords.shape[0]),
                "volume_ml": round(coords.shape[0] * voxel_ml, 4),
                "bbox_voxel": {"min": lo.tolist(), "max": hi.tolist()},
                "bbox_mm": {
                    "min": np.round(world.min(axis=0), 3).tolist(),
                    "max": np.round(world.max(axis=0), 3).tolist(),
                },
            }
        )
    return {"voxel_volume_ml": voxel_ml, "labels": entries}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks of the same shape, **1.0 when both are empty**: the one Dice,
    :func:`medseg.metrics.dice`, with ``empty=1.0`` (its default for two empty masks is NaN)."""
    return metrics_dice(a, b, empty=1.0)
