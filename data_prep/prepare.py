"""``prepare``: raw folder -> ``OUT/{dataset,splits,fingerprint}.json``.

The raw folder is only read. ``OUT`` must not be the raw folder or inside it; the three files are
written atomically (temporary file in ``OUT`` + fsync + rename), so a reader never sees half a
file. Schemas: :mod:`data_prep`; the library reads them back
(:func:`medseg.data.prepared_files.load_prepared`).
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
from medseg.data.prepared_files import PREPARED_FILES as FILES
from medseg.errors import InputError, OutputError

LAYOUTS = ("msd", "acdc")
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
