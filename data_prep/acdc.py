"""Index a raw ACDC download in place.

Layout (ANCHORS.md §12.2)::

    database/
      MANDATORY_CITATION.md
      training/patient001 .. patient100/
      testing/patient101 .. patient150/
    patientNNN/
      Info.cfg                       # "Key: value" lines, no INI section header
      MANDATORY_CITATION.md
      patientNNN_4d.nii.gz           # the whole cine (not used for segmentation)
      patientNNN_frameXX.nii.gz      # ED and ES frames only, XX 1-based, 2 digits
      patientNNN_frameXX_gt.nii.gz   # 0 background, 1 RV cavity, 2 myocardium, 3 LV cavity

``src`` may be the folder holding ``database/``, ``database/`` itself (``training/`` +
``testing/``), or a folder that directly holds ``patientNNN/`` folders (all indexed as training).
Each patient gives two cases, ``patientNNN_ED`` and ``patientNNN_ES``; patients in ``testing/``
go to ``"test"`` **with** their labels (the current release ships them). Folder and file names
starting with ``.`` or ``_`` (macOS ``._*``) are ignored. ``.nii`` is accepted when ``.nii.gz``
is absent. Files are not opened here (except ``Info.cfg``, read by the library's
:func:`medseg.data.acdc.parse_info_cfg`); :mod:`data_prep.checks` reads them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medseg.data.acdc import parse_info_cfg
from medseg.errors import InputError

LABELS = {"0": "background", "1": "RV", "2": "MYO", "3": "LV"}
CHANNEL = "cineMRI"  # nnU-Net's channel name for ACDC (z-score normalisation)
PHASES = ("ED", "ES")
_PATIENT = re.compile(r"^patient\d{3}$")


def index_acdc(src: str | Path) -> dict[str, Any]:
    """Find the patient folders under ``src`` and build the dataset dict (schema in data_prep).

    Raises InputError (``not_found``, ``bad_info_cfg``) naming the patient and the field.
    """
    root = Path(src).expanduser().resolve()
    if not root.is_dir():
        raise InputError("not_found", "ACDC folder not found", path=str(root))
    training_dirs, testing_dirs = find_patient_dirs(root)
    training = [e for d in training_dirs for e in patient_cases(d, root)]
    test = [e for d in testing_dirs for e in patient_cases(d, root)]
    return {
        "name": "ACDC",
        "layout": "acdc",
        "root": str(root),
        "release": None,
        "modality": {"0": CHANNEL},
        "channel_names": [CHANNEL],
        "labels": dict(LABELS),
        "tensorImageSize": "3D",
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
        "skipped": [],
        "warnings": [],
    }


def find_patient_dirs(root: Path) -> tuple[list[Path], list[Path]]:
    """``(training patient dirs, testing patient dirs)``, each sorted by name."""
    base = root / "database" if (root / "database").is_dir() else root
    train_dir, test_dir = base / "training", base / "testing"
    if train_dir.is_dir() or test_dir.is_dir():
        found = _patients(train_dir), _patients(test_dir)
    else:
        found = _patients(base), []
    if not found[0] and not found[1]:
        raise InputError(
            "not_found",
            "no ACDC patient folders found: expected database/training/patientNNN/ (or "
            "training/ + testing/, or patientNNN/ folders directly)",
            path=str(root),
        )
    return found


def patient_cases(patient_dir: Path, root: Path) -> list[dict[str, Any]]:
    """The ED and ES cases of one patient folder (paths relative to ``root``)."""
    pid = patient_dir.name
    info = parse_info_cfg(patient_dir / "Info.cfg")
    cases = []
    for phase in PHASES:
        frame = info[phase]
        image = _frame_file(patient_dir, f"{pid}_frame{frame:02d}")
        label = _frame_file(patient_dir, f"{pid}_frame{frame:02d}_gt")
        cases.append(
            {
                "case": f"{pid}_{phase}",
                "patient": pid,
                "image": image.relative_to(root).as_posix(),
                "label": label.relative_to(root).as_posix(),
                "phase": phase,
                "frame": frame,
                "group": info["Group"],
                "height": info["Height"],
                "weight": info["Weight"],
                "nb_frames": info["NbFrame"],
            }
        )
    return cases


# helpers ---------------------------------------------------------------------------------------
def _patients(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(d for d in folder.iterdir() if d.is_dir() and _PATIENT.match(d.name))


def _frame_file(patient_dir: Path, stem: str) -> Path:
    """``stem.nii.gz``, or ``stem.nii`` when only that exists (missing files fail in checks)."""
    gz = patient_dir / f"{stem}.nii.gz"
    plain = patient_dir / f"{stem}.nii"
    return plain if not gz.exists() and plain.exists() else gz
