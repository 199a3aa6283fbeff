"""Raw MSD / ACDC downloads -> ``dataset.json``, ``splits.json``, ``fingerprint.json``.

The raw folders are indexed **in place** (never copied, never modified); the three JSON files are
written to a separate prepared folder (``medseg prepare msd|acdc --src RAW --out PREP``). The
library reads them back (:func:`medseg.data.prepared_files.load_prepared`, ``case_paths``; ACDC
``Info.cfg``: :func:`medseg.data.acdc.parse_info_cfg`): ``data_prep`` imports medseg, medseg never
imports ``data_prep``, and ``data_prep`` never imports ``medseg.cli`` or ``apps`` (DESIGN.md §1).

API
===

- :func:`prepare` ``(layout, src, out, *, seed=12345, skip_bad=False, folds=5, overwrite=False,
  progress=None) -> Path`` index, check, split, fingerprint; returns ``out``.
- :func:`write_synthetic` ``(layout, out, *, cases=None, test_cases=None, channels=1, ct=False,
  seed=0) -> Path`` writes a small raw dataset (see :mod:`data_prep.synthetic`); returns the
  folder to pass as ``src``.

Schemas (exact keys; every file is UTF-8 JSON written atomically)
=================================================================

``dataset.json`` (MSD-style, one description for every layout)::

    {
      "name": str,                       # MSD "name" / "ACDC"
      "layout": "msd" | "acdc",
      "root": str,                       # absolute path of the raw folder (the --src given)
      "release": str | null,             # MSD "release" (or Task04's "relase" typo); ACDC null
      "modality": {"0": "MRI", ...},     # channel index (str) -> name, as in MSD
      "channel_names": ["MRI", ...],     # the same names as a list, in channel order
      "labels": {"0": "background", "1": "RV", ...},  # index (str) -> name, consecutive from 0
      "tensorImageSize": "3D" | "4D",    # "4D" when images hold several channels
      "numTraining": int,                # len(training) (after skipped cases are removed)
      "numTest": int,                    # len(test)
      "training": [{"case", "patient", "image", "label", ...}],
      "test": [{"case", "patient", "image", "label"?, ...}],
      "skipped": [{"case": str, "reason": str}],      # training cases dropped by --skip-bad
      "warnings": [{"case": str, "warning": str}]     # e.g. an empty label (the case is kept)
    }

``image`` / ``label`` are POSIX paths **relative to** ``root`` (no leading ``./``). MSD: ``case``
is the file name without extension, ``patient == case``, MSD test entries have no ``label``,
label names are copied from the raw file. ACDC: ``case`` is ``patientNNN_ED`` / ``patientNNN_ES``,
``patient`` is ``patientNNN``, labels are ``{"0": "background", "1": "RV", "2": "MYO",
"3": "LV"}``, the single channel is ``"cineMRI"``, every entry (test included: the current ACDC
release ships test labels) has a ``label`` and adds ``"phase": "ED" | "ES"``, ``"frame": int``
(1-based), ``"group": str`` (NOR, MINF, DCM, HCM, RV), ``"height": float`` (cm),
``"weight": float`` (kg), ``"nb_frames": int``.

``splits.json`` (patient-level folds; no patient in two folds, both ACDC frames together)::

    {"seed": int, "group_by": "patient", "stratify_by": "group" | null, "num_folds": int,
     "folds": [{"train": [case ids], "val": [case ids]}, ...]}   # num_folds entries

``fingerprint.json`` (training cases only)::

    {
      "spatial_dims": 2 | 3,             # recommended network dimensionality
      "modality_kind": "ct" | "mr",      # "ct" when a channel name contains "CT"
      "num_channels": int,
      "num_classes": int,                # including background
      "spacing_median": [x, y, z],       # mm
      "target_spacing": [x, y, z],       # mm, nnU-Net rule (see data_prep.fingerprint)
      "shape_median": [x, y, z],         # voxels, after resampling to target_spacing
      "slice_axis": int,                 # low-resolution axis; 2-D slices are taken across it
      "patch_size": [...],               # len == spatial_dims; 2-D: the two in-plane axes
      "normalisation": [                 # one per channel
        {"scheme": "ct", "clip": [p00_5, p99_5], "mean": float, "std": float}  # CT channels
        | {"scheme": "zscore"}                                                # per-case z-score
      ],
      "cases": {case: {"spacing": [x, y, z], "shape": [x, y, z]}}
    }

Every ``[x, y, z]`` (spacing, shapes, ``slice_axis``, ``patch_size``) is in the (i, j, k) voxel
axes of the **RAS-reoriented** data (nibabel ``as_closest_canonical`` order: i -> R, j -> A,
k -> S), which is what models see (DESIGN.md §2). For a 2-D ``patch_size`` the axes are the two
axes other than ``slice_axis``, in increasing order. CT normalisation follows nnU-Net: clip to the
0.5/99.5 percentiles of foreground voxels, then ``(x - mean) / std`` with the foreground mean and
std (computed before clipping) of all training cases.
"""

from data_prep.prepare import prepare
from data_prep.synthetic import write_synthetic

__all__ = ["prepare", "write_synthetic"]
