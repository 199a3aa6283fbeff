"""Output naming, pre-flight checks and the one all-or-nothing writer of the API.

:func:`plan_outputs` checks every output path *before* any model work and creates nothing, so
a bad output folder, an existing result or a path that is an input costs the user seconds, and
a refused run leaves no empty folder behind. :func:`write_outputs` writes volumes and bytes as
one transaction (:class:`medseg.io.StagedWrites`): all of them, or none and every previous file
as it was. ``Segmentation.save``, ``Restoration.save`` and the viewer's export all use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from medseg.errors import InputError, OutputError
from medseg.io.volume import Volume

__all__ = ["VOLUME_SUFFIXES", "case_name", "plan_outputs", "resolved", "write_outputs"]

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
PathLike = str | os.PathLike[str]


def case_name(path: PathLike) -> str:
    """``/a/scan.nii.gz`` -> ``scan``; a DICOM folder -> its folder name."""
    name = Path(path).name
    lower = name.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def plan_outputs(
    folder: PathLike,
    names: Iterable[str],
    *,
    overwrite: bool = False,
    protect: Iterable[PathLike] = (),
) -> list[Path]:
    """The output paths ``folder / name``, after checking them; nothing is created.

    Raises:
        InputError: ``would_overwrite_input`` (a path resolves to one in ``protect``, even with
            ``overwrite``), ``exists`` (without ``overwrite``).
        OutputError: ``not_a_folder`` (``folder`` is a file), ``permission`` (neither the
            folder nor, when it does not exist yet, its nearest existing parent is writable).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError("not_a_folder", "output is not a folder", path=str(folder))
    protected = {resolved(p) for p in protect}
    paths = [folder / n for n in names]
    for path in paths:
        if resolved(path) in protected:
            raise InputError("would_overwrite_input", "would overwrite the input", path=str(path))
        if path.exists() and not overwrite:
            raise InputError(
                "exists", "already exists; pass --overwrite to replace it", path=str(path)
            )
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise OutputError(
            "mkdir", f"cannot create output folder: {existing} is a file", path=str(folder)
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "output folder" if existing == folder else f"cannot create it: {existing}"
        raise OutputError("permission", f"{what} is not writable", path=str(folder))
    return paths


def write_outputs(
    files: Mapping[Path, Volume | bytes],
    *,
    overwrite: bool = False,
    protect: Iterable[PathLike] = (),
    labels: Iterable[Path] = (),
) -> list[Path]:
    """Write every file of ``files`` (path -> Volume or bytes) all-or-nothing; return the paths.

    Folders are created as needed, and temp files (``.tmp_*``) that killed writers left there
    over an hour ago are removed (never anything else). Volumes go through
    :func:`medseg.io.stage_volume` (on their own grid, both NIfTI forms kept; ``labels`` lists
    the paths written as label maps) and are never written over a path in ``protect``. Raises
    what ``stage_volume`` raises, and :class:`OutputError` when a folder cannot be created.
    """
    from medseg.io import StagedWrites, cleanup_orphan_temps, stage_volume

    for folder in {Path(p).parent for p in files}:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                "mkdir", f"cannot create output folder: {exc.strerror}", path=str(folder)
            ) from exc
        cleanup_orphan_temps(folder)  # ``.tmp_*`` left by killed writers over an hour ago
    as_label = {Path(p) for p in labels}
    protect = list(protect)
    with StagedWrites() as staged:
        for path, content in files.items():
            if isinstance(content, Volume):
                role = "label" if Path(path) in as_label else "image"
                stage_volume(staged, content, path, overwrite=overwrite, role=role, protect=protect)
            else:
                plan_outputs(Path(path).parent, [Path(path).name], overwrite=overwrite,
                             protect=protect)  # fmt: skip
                staged.stage_bytes(Path(path), content)
    return [Path(p) for p in files]


def resolved(path: PathLike) -> Path:
    """``path`` with symlinks and ``..`` resolved (the absolute path where resolving fails)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # symlink loops
        return Path(os.path.abspath(path))
