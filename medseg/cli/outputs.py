"""Output naming and pre-flight checks shared by the writing subcommands.

Every check that can fail runs *before* any model work, so a bad output folder or an existing
result costs the user seconds, not minutes, and nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from medseg.errors import InputError, OutputError

_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def case_name(path: str | Path) -> str:
    """``/a/scan.nii.gz`` -> ``scan``; a DICOM folder -> its folder name."""
    name = Path(path).name
    lower = name.lower()
    for suffix in _SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def prepare_outputs(
    outdir: str | Path, names: list[str], *, overwrite: bool, protect: list[Path]
) -> list[Path]:
    """Create ``outdir`` if needed and return the output paths after checking them.

    Raises:
        InputError: an output exists and ``overwrite`` is False, or an output would replace an
            input (even with ``overwrite``).
        OutputError: the folder cannot be created or written.
    """
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            "mkdir", f"cannot create output folder: {exc.strerror}", path=str(outdir)
        ) from exc
    if not outdir.is_dir():
        raise OutputError("not_a_folder", "output is not a folder", path=str(outdir))
    protected = {resolved(p) for p in protect}
    paths = [outdir / n for n in names]
    for path in paths:
        if resolved(path) in protected:
            raise InputError("would_overwrite_input", "would overwrite the input", path=str(path))
        if path.exists() and not overwrite:
            raise InputError(
                "exists", "already exists; pass --overwrite to replace it", path=str(path)
            )
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise OutputError("permission", "output folder is not writable", path=str(outdir))
    return paths


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync and rename.

    On any failure (disk full, signal) the temp file is removed and the previous ``path`` is
    left untouched; ``OSError`` becomes :class:`OutputError` (see :mod:`medseg.io.atomic`).
    """
    from medseg.io import StagedWrites

    with StagedWrites() as staged:
        staged.stage_bytes(Path(path), data)


def resolved(path: Path) -> Path:
    """``path`` with symlinks and ``..`` resolved (the absolute path where resolving fails)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # symlink loops
        return Path(os.path.abspath(path))
