"""Reading the prepared format: ``dataset.json``, ``splits.json`` and ``fingerprint.json``.

``medseg prepare`` (:mod:`data_prep`) writes the three files; the library reads them here, so
the data modules never import the tooling (DESIGN.md §1: ``data_prep`` -> ``medseg``, never the
reverse). The schemas are documented in :mod:`data_prep`. This module imports only the
standard library and :mod:`medseg.errors` (no torch, no Lightning).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medseg.errors import InputError

__all__ = ["PREPARED_FILES", "case_paths", "load_prepared"]

PREPARED_FILES = ("dataset.json", "splits.json", "fingerprint.json")
"""The three files of a prepared folder, in the order :func:`load_prepared` returns them."""


def load_prepared(
    prep_dir: str | Path, *, root: str | Path | None = None
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Read ``(dataset, splits, fingerprint)`` from a prepared folder.

    ``root`` replaces ``dataset["root"]`` (the raw data moved, or ``MEDSEG_DATA_ROOT``). Raises
    InputError ``not_prepared`` (a file is missing: run ``medseg prepare`` first),
    ``bad_prepared`` (not valid JSON / wrong keys) or ``not_found`` (the raw folder is gone).
    """
    folder = Path(prep_dir).expanduser()
    loaded = []
    for name in PREPARED_FILES:
        path = folder / name
        if not path.is_file():
            raise InputError(
                "not_prepared",
                f"{name} not found; run `medseg prepare msd|acdc --src RAW --out {folder}` first",
                path=str(path),
            )
        try:
            loaded.append(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(
                "bad_prepared",
                f"{name} is not valid JSON; re-run `medseg prepare ... --overwrite`",
                path=str(path),
            ) from e
    dataset, splits, fingerprint = loaded
    dataset_file, splits_file, fingerprint_file = (folder / name for name in PREPARED_FILES)
    _require(dataset, ("root", "labels", "channel_names", "training", "test"), dataset_file)
    _require(splits, ("seed", "folds"), splits_file)
    _require(fingerprint, ("spatial_dims", "target_spacing", "normalisation"), fingerprint_file)
    if root is not None:
        dataset["root"] = str(Path(root).expanduser().resolve())
    if not Path(dataset["root"]).is_dir():
        raise InputError(
            "not_found",
            f"raw data folder {dataset['root']} (dataset.json 'root') not found; pass root=... "
            "or re-run `medseg prepare`",
            path=str(dataset_file),
        )
    return dataset, splits, fingerprint


def case_paths(dataset: dict[str, Any], entry: dict[str, Any]) -> tuple[Path, Path | None]:
    """Absolute ``(image, label or None)`` paths of a ``training``/``test`` entry."""
    root = Path(dataset["root"])
    label = entry.get("label")
    return root / entry["image"], (root / label if label else None)


def _require(payload: Any, keys: tuple[str, ...], path: Path) -> None:
    missing = [k for k in keys if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise InputError(
            "bad_prepared",
            f"missing key(s) {missing}; re-run `medseg prepare ... --overwrite`",
            path=str(path),
        )
