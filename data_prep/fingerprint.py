"""Dataset fingerprint -> target spacing, patch size, normalisation (nnU-Net's rules, simplified).

Axes: every spacing and shape is in the (i, j, k) axes of the **RAS-reoriented** volume (the
voxel axes permuted/flipped to the closest R, A, S order, as ``nib.as_closest_canonical`` does),
which is what models see. :func:`ras_spacing_shape` maps a file's spacing/shape to that order.

Rules (nnU-Net v2 ``default_experiment_planner.py`` / ``fingerprint_extractor.py``):

- ``spacing_median``: per-axis median over training cases.
- ``target_spacing``: the median; if the coarsest axis is anisotropic (its median spacing
  ``> 3 * max(other axes)``) **and** it has fewer than a third of the voxels of the other axes
  (``median_size * 3 < min(other sizes)``), that axis uses the 10th percentile of its spacings
  instead, never finer than the other axes. ACDC (~1.5 x 1.5 x 10 mm) is the case this rule was
  written for. Ties for the coarsest axis go to the last axis (k).
- ``shape_median``: per-axis median of ``round(shape * spacing / target_spacing)``.
- ``spatial_dims``: 2 when the spacing is anisotropic as above (coarsest > 3x the others) and the
  resampled median shape has fewer than :data:`MIN_SLICES_3D` slices along that axis, else 3.
- ``patch_size``: 3-D: the median shape rounded up to multiples of 16, then the largest axis is
  reduced by 16 until the product fits :data:`PATCH_BUDGET_3D` (128^3) voxels. 2-D: the two
  in-plane axes rounded up to multiples of 16 and capped at :data:`MAX_PATCH_2D` (512).
- ``normalisation`` per channel: a channel whose name contains ``CT`` -> ``{"scheme": "ct",
  "clip": [p0.5, p99.5], "mean", "std"}`` of foreground voxels (label > 0) pooled over training
  cases (mean/std computed before clipping, as nnU-Net does); any other channel ->
  ``{"scheme": "zscore"}`` (per-case z-score at training time). Foreground voxels are sampled:
  at most :data:`SAMPLES_PER_CASE` per case and channel, seeded. If no training case has any
  foreground, all voxels are sampled instead.

Shapes and spacings come from the volumes the checks already loaded (one read per case); the
intensity samples need the voxels anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from medseg.io import Volume

ANISO_THRESHOLD = 3.0
MIN_SLICES_3D = 16
PATCH_MULTIPLE = 16
PATCH_BUDGET_3D = 128**3
MAX_PATCH_2D = 512
SAMPLES_PER_CASE = 10_000


@dataclass
class CaseStats:
    """What the fingerprint needs from one case: RAS spacing/shape and foreground samples.

    ``samples``: one 1-D float32 array per channel (foreground voxels; may be empty). Only the
    channels asked for are sampled (CT channels); the others hold empty arrays.
    ``all_samples``: the same drawn from all voxels (fallback when no case has foreground).
    """

    case: str
    spacing: np.ndarray
    shape: np.ndarray
    samples: list[np.ndarray]
    all_samples: list[np.ndarray]


def ras_spacing_shape(affine: np.ndarray, spacing: Sequence[float], shape: Sequence[int]):
    """``(spacing (3,), shape (3,))`` of a volume reoriented to the closest RAS axes."""
    from nibabel.orientations import io_orientation

    order = io_orientation(np.asarray(affine))[:, 0].astype(int)  # file axis i -> RAS axis
    sp, sh = np.zeros(3), np.zeros(3, dtype=int)
    sp[order] = np.asarray(spacing, dtype=float)[:3]
    sh[order] = np.asarray(shape, dtype=int)[:3]
    return sp, sh


def case_stats(
    case: str,
    image: Volume,
    label: Volume,
    rng: np.random.Generator,
    *,
    sample_channels: Sequence[int] | None = None,
    max_samples: int = SAMPLES_PER_CASE,
) -> CaseStats:
    """:class:`CaseStats` of a checked case: image ``(C, X, Y, Z)``, label ``(X, Y, Z)``.

    ``sample_channels``: channels whose intensities are sampled (default: all).
    """
    spacing, shape = ras_spacing_shape(image.affine, image.spacing, image.spatial_shape)
    channels = image.array if image.array.ndim == 4 else image.array[None]
    wanted = range(len(channels)) if sample_channels is None else set(sample_channels)
    flat = [c.reshape(-1) if i in wanted else None for i, c in enumerate(channels)]
    empty = np.zeros(0, dtype=np.float32)
    if not any(f is not None for f in flat):
        return CaseStats(case, spacing, shape, [empty] * len(flat), [empty] * len(flat))
    fg = np.flatnonzero(label.array.reshape(-1) > 0)
    pick = np.sort(fg if fg.size <= max_samples else rng.choice(fg, max_samples, replace=False))
    n_all = channels[0].size
    any_pick = np.sort(rng.choice(n_all, min(max_samples, n_all), replace=False))
    return CaseStats(
        case=case,
        spacing=spacing,
        shape=shape,
        samples=[empty if f is None else f[pick].astype(np.float32) for f in flat],
        all_samples=[empty if f is None else f[any_pick].astype(np.float32) for f in flat],
    )


def target_spacing(spacings: np.ndarray, shapes: np.ndarray) -> tuple[np.ndarray, bool, int]:
    """nnU-Net's target spacing from ``spacings`` / ``shapes`` ``(N, 3)``.

    Returns ``(target (3,), anisotropic, coarsest_axis)``; ``anisotropic`` is the spacing test
    alone (coarsest median spacing > 3x every other axis), used for ``spatial_dims``.
    """
    spacings = np.asarray(spacings, dtype=float)
    target = np.percentile(spacings, 50, axis=0)
    size = np.percentile(np.asarray(shapes, dtype=float), 50, axis=0)
    worst = int(np.argmax(target[::-1]))  # ties -> the last axis (k: slices for axial stacks)
    worst = len(target) - 1 - worst
    others = [i for i in range(len(target)) if i != worst]
    aniso_spacing = bool(target[worst] > ANISO_THRESHOLD * max(target[i] for i in others))
    aniso_voxels = bool(size[worst] * ANISO_THRESHOLD < min(size[i] for i in others))
    if aniso_spacing and aniso_voxels:
        low = float(np.percentile(spacings[:, worst], 10))
        finest_other = max(float(target[i]) for i in others)
        if low < finest_other:
            low = max(finest_other, low) + 1e-5
        target[worst] = low
    return target, aniso_spacing, worst


def patch_size_3d(median_shape: Sequence[float], budget: int = PATCH_BUDGET_3D) -> list[int]:
    """Median shape rounded up to multiples of 16, shrunk (largest axis first) to ``budget``."""
    patch = [max(PATCH_MULTIPLE, _round_up(s)) for s in median_shape]
    while int(np.prod(patch)) > budget and max(patch) > PATCH_MULTIPLE:
        patch[int(np.argmax(patch))] -= PATCH_MULTIPLE
    return patch


def patch_size_2d(median_shape: Sequence[float], slice_axis: int) -> list[int]:
    """In-plane median shape (axes other than ``slice_axis``) in multiples of 16, capped at 512."""
    return [
        min(MAX_PATCH_2D, max(PATCH_MULTIPLE, _round_up(s)))
        for axis, s in enumerate(median_shape)
        if axis != slice_axis
    ]


def normalisation(channel_names: Sequence[str], stats: Sequence[CaseStats]) -> list[dict[str, Any]]:
    """One normalisation dict per channel (see module docstring)."""
    out: list[dict[str, Any]] = []
    for c, name in enumerate(channel_names):
        if not is_ct(name):
            out.append({"scheme": "zscore"})
            continue
        values = np.concatenate([s.samples[c] for s in stats] or [np.zeros(0)])
        if values.size == 0:  # no foreground anywhere: fall back to every voxel
            values = np.concatenate([s.all_samples[c] for s in stats])
        values = values.astype(np.float64)
        lo, hi = np.percentile(values, [0.5, 99.5])
        out.append(
            {
                "scheme": "ct",
                "clip": [float(lo), float(hi)],
                "mean": float(values.mean()),
                "std": float(values.std()),
            }
        )
    return out


def is_ct(channel_name: str) -> bool:
    """A channel is CT when its name contains ``CT`` (any case), as in nnU-Net."""
    return "CT" in channel_name.upper()


def compute_fingerprint(
    stats: Sequence[CaseStats], channel_names: Sequence[str], num_classes: int
) -> dict[str, Any]:
    """The ``fingerprint.json`` dict (schema in :mod:`data_prep`) from per-case stats."""
    if not stats:
        raise ValueError("no case statistics to fingerprint")
    spacings = np.stack([s.spacing for s in stats])
    shapes = np.stack([s.shape for s in stats])
    target, anisotropic, coarsest = target_spacing(spacings, shapes)
    resampled = np.round(shapes * spacings / target[None, :])
    median_shape = np.percentile(resampled, 50, axis=0)
    two_d = anisotropic and median_shape[coarsest] < MIN_SLICES_3D
    patch = patch_size_2d(median_shape, coarsest) if two_d else patch_size_3d(median_shape)
    return {
        "spatial_dims": 2 if two_d else 3,
        "modality_kind": "ct" if any(is_ct(n) for n in channel_names) else "mr",
        "num_channels": len(channel_names),
        "num_classes": int(num_classes),
        "spacing_median": _floats(np.percentile(spacings, 50, axis=0)),
        "target_spacing": _floats(target),
        "shape_median": [int(round(v)) for v in median_shape],
        "slice_axis": coarsest,
        "patch_size": patch,
        "normalisation": normalisation(channel_names, stats),
        "cases": {
            s.case: {"spacing": _floats(s.spacing), "shape": [int(v) for v in s.shape]}
            for s in stats
        },
    }


def _round_up(value: float) -> int:
    return int(np.ceil(float(value) / PATCH_MULTIPLE) * PATCH_MULTIPLE)


def _floats(values: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in values]
