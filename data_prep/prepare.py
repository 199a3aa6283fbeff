"""``prepare``: raw folder -> ``OUT/{dataset,splits,fingerprint}.json``; ``load_prepared`` back.

The raw folder is only read. ``OUT`` must not be the raw folder or inside it; the three files are
written atomically (temporary file in ``OUT`` + fsync + rename), so a reader never sees half a
file. Schemas: :mod:`data_prep`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.acdc import index_acdc
from data_prep.checks import check_dataset
from data_prep.fingerprint import CaseStats, case_stats, compute_fingerprint, is_ct
from data_prep.msd import index_msd
from data_prep.splits import make_splits
from medseg.errors import InputError, OutputError

LAYOUTS = ("msd", "acdc")
FILES = ("dataset.json", "splits.json", "fingerprint.json")
DEFAULT_SEED = 12345


def prepare(
    layout: str,
    src: str | Path,
    out: str | Path,
    *,
    seed: int = DEFAULT_SEED,
    skip_bad: bool = False,
    folds: int = 5,
    overwrite: bool = False,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> Path:
    """Index ``src`` (``layout`` "msd" | "acdc"), check every training case, split and
    fingerprint; write ``out/dataset.json``, ``out/splits.json``, ``out/fingerprint.json``.

    ``seed`` drives the folds and the intensity sampling. ``skip_bad`` records failing cases in
    ``dataset["skipped"]`` instead of raising. ``progress`` wraps the per-case loop (``tqdm``).
    Returns ``out`` (absolute). Raises InputError (bad raw data, naming the case and the field;
    ``would_modify_raw``; ``exists`` without ``overwrite``) or OutputError (cannot write).
    """
    if layout not in LAYOUTS:
        raise InputError("bad_argument", f"layout must be one of {LAYOUTS}, got {layout!r}")
    src_path = Path(src).expanduser().resolve()
    out_path = Path(out).expanduser().resolve()
    if out_path == src_path or out_path.is_relative_to(src_path):
        raise InputError(
            "would_modify_raw",
            f"--out must be outside the raw folder {src_path} (raw data is never modified)",
            path=str(out_path),
        )
    _check_targets(out_path, overwrite)

    dataset = index_msd(src_path) if layout == "msd" else index_acdc(src_path)
    rng = np.random.default_rng(seed)
    stats: list[CaseStats] = []
    ct_channels = [i for i, name in enumerate(dataset["channel_names"]) if is_ct(name)]

    def visit(entry, image, label) -> None:
        stats.append(case_stats(entry["case"], image, label, rng, sample_channels=ct_channels))

    report = check_dataset(dataset, skip_bad=skip_bad, visit=visit, progress=progress)
    dataset.update(
        training=report.good,
        test=report.test,
        numTraining=len(report.good),
        numTest=len(report.test),
        skipped=report.skipped,
        warnings=report.warnings,
    )
    splits = make_splits(report.good, seed=seed, folds=folds)
    fingerprint = compute_fingerprint(stats, dataset["channel_names"], len(dataset["labels"]))

    try:
        out_path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(
            "no_folder", f"cannot create the output folder ({e.strerror})", path=str(out_path)
        ) from e
    for name, payload in zip(FILES, (dataset, splits, fingerprint), strict=True):
        write_json_atomic(out_path / name, payload)
    return out_path


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
    for name in FILES:
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
    _require(dataset, ("root", "labels", "channel_names", "training", "test"), folder / FILES[0])
    _require(splits, ("seed", "folds"), folder / FILES[1])
    _require(fingerprint, ("spatial_dims", "target_spacing", "normalisation"), folder / FILES[2])
    if root is not None:
        dataset["root"] = str(Path(root).expanduser().resolve())
    if not Path(dataset["root"]).is_dir():
        raise InputError(
            "not_found",
            f"raw data folder {dataset['root']} (dataset.json 'root') not found; pass root=... "
            "or re-run `medseg prepare`",
            path=str(folder / FILES[0]),
        )
    return dataset, splits, fingerprint


def case_paths(dataset: dict[str, Any], entry: dict[str, Any]) -> tuple[Path, Path | None]:
    """Absolute ``(image, label or None)`` paths of a ``training``/``test`` entry."""
    root = Path(dataset["root"])
    label = entry.get("label")
    return root / entry["image"], (root / label if label else None)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` via a temporary file in the same folder, fsync and rename."""
    text = json.dumps(payload, indent=2) + "\n"
    fd, tmp = -1, None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            fd = -1
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise OutputError(
            "write_failed", f"cannot write {path.name} ({e.strerror})", path=str(path)
        ) from e
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _check_targets(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError("not_a_folder", "--out exists and is not a folder", path=str(out))
    existing = [name for name in FILES if (out / name).exists()]
    if existing and not overwrite:
        raise InputError(
            "exists",
            f"{', '.join(existing)} already exist; use --overwrite to replace them",
            path=str(out),
        )


def _require(payload: Any, keys: tuple[str, ...], path: Path) -> None:
    missing = [k for k in keys if not isinstance(payload, dict) or k not in payload]
    if missing:
        raise InputError(
            "bad_prepared",
            f"missing key(s) {missing}; re-run `medseg prepare ... --overwrite`",
            path=str(path),
        )
