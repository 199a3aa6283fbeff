"""Evaluation of label maps against ground truth: per-label Dice and HD95, ACDC clinical indices.

Conventions (nnU-Net / Metrics Reloaded, stated so that tables are comparable):

- **Dice** ``2|P∩G| / (|P| + |G|)`` (:func:`medseg.metrics.dice`): NaN when both P and G are
  empty for that label (the case says nothing about the label and is left out of means, as
  nnU-Net does); 0 when exactly one is empty.
- **HD95** (mm, MONAI ``compute_hausdorff_distance(percentile=95)``, symmetric, on surface
  voxels with the grid's voxel spacing): NaN when both are empty; ``inf`` when exactly one is
  empty (no surface to measure to). Summaries average the finite values and count the ``inf``.
- **ACDC clinical indices** (labels 1 = RV, 2 = MYO, 3 = LV): LV and RV end-diastolic and
  end-systolic volumes (EDV, ESV, mL), ejection fraction ``EF = (EDV - ESV) / EDV`` in %, and
  the myocardial mass at ED ``= MYO volume x 1.05 g/mL``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from medseg.metrics.overlap import dice

__all__ = [
    "ACDC_LABELS",
    "MYOCARDIUM_DENSITY",
    "acdc_indices",
    "agreement",
    "label_metrics",
    "label_names",
    "summarise",
]

ACDC_LABELS = {1: "RV", 2: "MYO", 3: "LV"}
MYOCARDIUM_DENSITY = 1.05  # g/mL


def label_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    labels: Iterable[int],
    spacing: Sequence[float],
    *,
    hd95: bool = True,
) -> list[dict[str, Any]]:
    """Per-label metrics of ``pred`` vs ``gt`` (both integer ``(X, Y, Z)`` on the same grid).

    Returns one dict per label: ``label``, ``dice``, ``hd95`` (mm; see the module conventions),
    ``pred_voxels``, ``gt_voxels``, ``pred_ml``, ``gt_ml`` (``spacing`` in mm per axis).
    """
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ")
    voxel_ml = float(np.prod(spacing)) / 1000.0
    rows = []
    for label in labels:
        p, g = pred == label, gt == label
        n_p, n_g = int(p.sum()), int(g.sum())
        row = {
            "label": int(label),
            "dice": dice(p, g),  # NaN when both are empty (medseg.metrics.dice's rule)
            "hd95": _hd95(p, g, spacing) if hd95 else math.nan,
            "pred_voxels": n_p,
            "gt_voxels": n_g,
            "pred_ml": n_p * voxel_ml,
            "gt_ml": n_g * voxel_ml,
        }
        rows.append(row)
    return rows


def _hd95(p: np.ndarray, g: np.ndarray, spacing: Sequence[float]) -> float:
    if not p.any() and not g.any():
        return math.nan
    if not p.any() or not g.any():
        return math.inf
    import torch
    from monai.metrics import compute_hausdorff_distance

    yp = torch.from_numpy(np.ascontiguousarray(p))[None, None]
    yg = torch.from_numpy(np.ascontiguousarray(g))[None, None]
    with warnings.catch_warnings():  # MONAI 1.5+ warns about its own internal argument
        warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
        hd = compute_hausdorff_distance(
            yp, yg, include_background=True, percentile=95, spacing=[float(s) for s in spacing]
        )
    return float(hd.reshape(-1)[0])


def summarise(values: Iterable[float]) -> dict[str, float | int]:
    """``{"n", "mean", "std", "n_nan", "n_inf"}`` of the finite values (std with ddof 0)."""
    arr = np.asarray(list(values), dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    return {
        "n": int(finite.size),
        "mean": float(finite.mean()) if finite.size else math.nan,
        "std": float(finite.std()) if finite.size else math.nan,
        "n_nan": int(np.isnan(arr).sum()),
        "n_inf": int(np.isinf(arr).sum()),
    }


def acdc_indices(ed: np.ndarray, es: np.ndarray, voxel_ml_ed: float, voxel_ml_es: float) -> dict:
    """Clinical indices of one patient from its ED and ES label maps (``(X, Y, Z)``, ACDC
    labels) and their voxel volumes in mL.

    Returns ``lv_edv, lv_esv, lv_ef, rv_edv, rv_esv, rv_ef`` (mL, %) and ``myo_mass_ed`` (g). An
    EF with EDV = 0 is NaN.
    """
    out: dict[str, float] = {}
    for name, label in (("lv", 3), ("rv", 1)):
        edv = int((ed == label).sum()) * voxel_ml_ed
        esv = int((es == label).sum()) * voxel_ml_es
        out[f"{name}_edv"] = edv
        out[f"{name}_esv"] = esv
        out[f"{name}_ef"] = 100.0 * (edv - esv) / edv if edv > 0 else math.nan
    out["myo_mass_ed"] = int((ed == 2).sum()) * voxel_ml_ed * MYOCARDIUM_DENSITY
    return out


def agreement(pred: Sequence[float], gt: Sequence[float]) -> dict[str, float]:
    """Pearson ``corr``, mean absolute difference ``mad`` and mean difference ``bias``
    (pred - gt) over patients (finite pairs only; ``corr`` NaN below 2 pairs or no variance)."""
    p, g = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    ok = np.isfinite(p) & np.isfinite(g)
    p, g = p[ok], g[ok]
    if p.size == 0:
        return {"n": 0, "corr": math.nan, "mad": math.nan, "bias": math.nan}
    corr = math.nan
    if p.size >= 2 and p.std() > 0 and g.std() > 0:
        corr = float(np.corrcoef(p, g)[0, 1])
    return {
        "n": int(p.size),
        "corr": corr,
        "mad": float(np.abs(p - g).mean()),
        "bias": float((p - g).mean()),
    }


def label_names(mapping: Mapping[Any, Any] | None, labels: Iterable[int]) -> dict[int, str]:
    """``{label: name}`` from an optional mapping, ``label_<i>`` where it has none."""
    mapping = {int(k): str(v) for k, v in (mapping or {}).items()}
    return {int(v): mapping.get(int(v), f"label_{int(v)}") for v in labels}
