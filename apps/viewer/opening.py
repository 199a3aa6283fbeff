"""Files -> volumes for the viewer: everything goes through ``load_volume`` or says why not.

Adds to ``load_volume`` only what a browser upload needs: a DICOM series as a ``.zip``
(extracted into the session's private folder with member checks), 2D PNG/JPEG pictures (one
slice, 1 mm pixels, shown exactly as the picture), server-side paths confined to ``--root``, and
label names from an MSD ``dataset.json``. Every refusal is an :class:`InputError` (one line).

Memory: a volume is opened only when a session on it fits the viewer's budget
(:mod:`apps.viewer.budget`), decided from its header before it is decompressed; the image's
bytes stay reserved while the returned ``Volume`` lives. A label file must have the image's
shape in its header, also checked before it is decompressed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.inference.memory import IMAGE_BYTES_PER_VOXEL, viewer_session_need
from medseg.io import check_same_grid, load_volume
from medseg.io.volume import Volume, VolumeHeader
from medseg.viz import WINDOW_PRESETS, percentile_window

from .budget import BUDGET, Reservation

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
ZIP_MAX_BYTES = 2**31  # uncompressed size limit of a DICOM zip
ZIP_MAX_MEMBERS = 10_000
CT_MIN_HU = -500.0  # an image whose minimum is below this is treated as CT (HU)


def open_image(path: str | os.PathLike[str], workdir: str | os.PathLike[str]) -> Volume:
    """Read an image for display: ``(X, Y, Z)`` float32, or ``(C, X, Y, Z)`` for 4-D files.

    Args:
        path: NIfTI, NRRD, MHA, a DICOM folder, a DICOM ``.zip``, or a PNG/JPEG picture.
        workdir: private folder where a zip is extracted (and deleted after reading).
    """
    p = Path(path)
    suffix = p.name.lower()
    if suffix.endswith(PICTURE_SUFFIXES):
        return read_picture(p)
    if suffix.endswith(".zip"):
        folder = Path(tempfile.mkdtemp(prefix="zip-", dir=workdir))
        try:  # the extracted copy is deleted as soon as the voxels are in memory
            return load_within_budget(extract_zip(p, folder))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    try:
        return load_within_budget(p)
    except InputError as err:
        if err.code != "multi_volume":
            raise
        return load_within_budget(p, volume_index="all")


def load_within_budget(path: str | os.PathLike[str], **kwargs) -> Volume:
    """``load_volume`` refusing (``not_enough_memory``), before decompressing, a volume whose
    session would not fit the viewer's budget; the image's bytes are reserved while the
    returned ``Volume`` lives (see :mod:`apps.viewer.budget`)."""
    held: list[Reservation] = []

    def guard(header: VolumeHeader) -> None:
        what = "a viewer session on this image"
        BUDGET.check(viewer_session_need(header), what=what, path=header.path)
        image = IMAGE_BYTES_PER_VOXEL * header.voxels
        held.append(BUDGET.reserve(image, what="this image", path=header.path))

    try:
        volume = load_volume(path, on_header=guard, **kwargs)
    except BaseException:
        for reservation in held:
            reservation.release()
        raise
    for reservation in held:
        reservation.bind(volume)
    return volume


def open_labels(path: str | os.PathLike[str], image: Volume) -> Volume:
    """Read a label map and check that it lies on ``image``'s grid (``grid_mismatch`` if not;
    a header with another shape is refused before the file is decompressed). A DICOM SEG file
    or a 3D Slicer ``.seg.nrrd`` is put on ``image``'s grid (they may cover only part of it);
    the names they carry are in ``meta["label_names"]``."""

    def same_shape(header: VolumeHeader) -> None:
        if header.shape != image.spatial_shape:
            raise InputError(
                "grid_mismatch",
                f"labels have shape {header.shape}, the image {image.spatial_shape}; open the "
                "label map that belongs to this image",
                path=header.path,
            )

    labels = load_volume(path, role="label", on_header=same_shape, grid=image)
    check_same_grid(image, labels)
    return labels


def read_picture(path: Path) -> Volume:
    """A PNG/JPEG as a one-slice volume whose axial view shows the picture unchanged.

    The affine ``diag(-1, -1, 1)`` makes voxel ``i`` run to the patient's left and ``j`` to
    posterior, which the radiological axial view draws left-to-right and top-to-bottom.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            grey = np.asarray(picture.convert("L"), dtype=np.float32)  # (H, W)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise InputError(
            "corrupt", f"not a readable PNG/JPEG picture ({err})", path=str(path)
        ) from err
    if grey.min() == grey.max():
        raise InputError("constant_image", "every pixel has the same value", path=str(path))
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    return Volume(grey.T[:, :, None].copy(), affine, meta={"path": str(path), "format": "picture"})


def extract_zip(path: Path, target: Path) -> Path:
    """Extract a zip (a DICOM series) into the empty folder ``target``; return the folder
    holding the files (the single top folder of the archive, if there is one)."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise InputError("corrupt", f"not a readable zip archive ({err})", path=str(path)) from err
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if not members:
            raise InputError("dicom_no_series", "the zip archive is empty", path=str(path))
        if len(members) > ZIP_MAX_MEMBERS:
            raise InputError("too_large", f"zip holds {len(members)} files", path=str(path))
        if sum(m.file_size for m in members) > ZIP_MAX_BYTES:
            raise InputError("too_large", "zip expands beyond 2 GiB", path=str(path))
        for member in members:
            name = Path(member.filename)
            if name.is_absolute() or ".." in name.parts:
                raise InputError("corrupt", f"unsafe member name {member.filename!r}")
            archive.extract(member, target)
    folders = {Path(m.filename).parts[0] for m in members if len(Path(m.filename).parts) > 1}
    top_files = [m for m in members if len(Path(m.filename).parts) == 1]
    if len(folders) == 1 and not top_files:
        return target / folders.pop()
    return target


def resolve_under_root(text: str, root: str | os.PathLike[str] | None) -> Path:
    """A server-side path typed by the user, allowed only inside ``root`` (after resolving
    symlinks and ``..``); relative paths are taken from ``root``."""
    if root is None:
        raise InputError("not_allowed", "server-side paths are off (start with --root DIR)")
    base = Path(root).resolve()
    candidate = Path(text.strip()).expanduser()
    full = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if not full.is_relative_to(base):
        raise InputError("not_allowed", f"path is outside the allowed root {base}", path=text)
    return full


def label_names_near(path: str | os.PathLike[str]) -> dict[int, str]:
    """Label names from a ``dataset.json`` next to the file or one folder up (MSD layout)."""
    p = Path(path)
    for folder in (p.parent, p.parent.parent):
        candidate = folder / "dataset.json"
        if candidate.is_file():
            return read_label_names(candidate)
    return {}


def read_label_names(path: str | os.PathLike[str]) -> dict[int, str]:
    """``{id: name}`` (background left out) from an MSD-style ``dataset.json``'s ``labels``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        labels = data["labels"]
        if isinstance(labels, dict) and all(str(k).isdigit() for k in labels):
            return {int(k): str(v) for k, v in labels.items() if int(k) != 0}
        return {int(v): str(k) for k, v in labels.items() if int(v) != 0}  # nnU-Net v2 style
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(
            "bad_names", f"no label names in this dataset.json ({err})", path=str(path)
        ) from err


def default_window(image: np.ndarray) -> tuple[str, tuple[float, float]]:
    """``(preset name, (level, width))``: soft tissue for CT (HU), percentiles otherwise."""
    if float(np.min(image)) < CT_MIN_HU:
        return "soft_tissue", WINDOW_PRESETS["soft_tissue"]
    return "auto", percentile_window(image)
