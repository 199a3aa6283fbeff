"""NRRD / MetaImage (``.nrrd``, ``.mha``, ``.mhd`` + raw) through SimpleITK, and ITK<->RAS geometry.

SimpleITK is imported lazily (``import medseg.io`` stays light). ITK stores geometry in LPS
(``origin``, ``spacing``, ``direction`` whose *columns* are the i, j, k axes) and its numpy view is
``[k, j, i]``; :class:`~medseg.io.volume.Volume` is RAS+ and ``[i, j, k]``. So::

    affine[:3, :3] = F @ direction @ diag(spacing),  affine[:3, 3] = F @ origin,  F = diag(-1,-1,1)
    array = GetArrayFromImage(img).T    (a view; no copy)

Documented choices: 2-D images are read as ``(X, Y, 1)``; 4-D images follow the NIfTI rule
(``t = 1`` squeezed, ``t > 1`` needs ``volume_index``); multi-component (vector, RGB) images,
complex and uint64 voxels are ``unsupported_dtype`` (no channel axis is guessed).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import InputError
from medseg.files import check_inside, check_regular_file, open_regular
from medseg.io.checks import check_affine, check_size, check_spacing
from medseg.io.nifti import select_volume
from medseg.io.volume import Volume, VolumeHeader

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
#: sniffed content kind -> the ITK ImageIO that reads/writes it
IMAGE_IO = {"nrrd": "NrrdImageIO", "metaimage": "MetaImageIO"}
_ELEMENT_FILE = re.compile(rb"^\s*ElementDataFile\s*=\s*(.+?)\s*$", re.MULTILINE)
_NRRD_DATA_FILE = re.compile(rb"^data ?file\s*:\s*(.+?)\s*$", re.MULTILINE | re.IGNORECASE)
#: longest text header read (bytes); NRRD and MetaImage headers are a few hundred bytes
HEADER_MAX = 1 << 16


def sitk_module() -> Any:
    """The SimpleITK module (imported on first use)."""
    import SimpleITK as sitk

    return sitk


@contextlib.contextmanager
def quiet_itk() -> Iterator[None]:
    """Silence ITK's stderr warnings (we raise our own errors instead), then restore the setting."""
    sitk = sitk_module()
    before = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(before)


def lps_to_affine(spacing, origin, direction) -> np.ndarray:
    """(4, 4) RAS+ affine from ITK geometry of any dimension (spatial part padded/cut to 3-D).

    ``direction`` is ITK's row-major flat ``n*n`` tuple; missing axes get unit spacing/direction.
    """
    n = len(spacing)
    d = np.asarray(direction, dtype=np.float64).reshape(n, n)
    m = min(n, 3)
    direc = np.eye(3)
    direc[:m, :m] = d[:m, :m]
    sp = np.ones(3)
    sp[:m] = np.asarray(spacing, dtype=np.float64)[:m]
    org = np.zeros(3)
    org[:m] = np.asarray(origin, dtype=np.float64)[:m]
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direc @ np.diag(sp)
    affine[:3, 3] = LPS_TO_RAS @ org
    return affine


def affine_to_lps(
    affine: np.ndarray,
) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """``(spacing, origin, direction)`` in ITK's LPS convention from a (4, 4) RAS+ affine."""
    a = np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    direction = LPS_TO_RAS @ (a[:3, :3] / spacing[None, :])
    origin = LPS_TO_RAS @ a[:3, 3]
    return tuple(spacing.tolist()), tuple(origin.tolist()), tuple(direction.ravel().tolist())


def image_to_volume(image: Any, array: np.ndarray | None = None) -> Volume:
    """Volume from a 3-D scalar SimpleITK image (``array``: optional ``[k, j, i]`` pixels)."""
    sitk = sitk_module()
    pixels = sitk.GetArrayFromImage(image) if array is None else array
    affine = lps_to_affine(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    return Volume(array=pixels.T, affine=affine)


def read_itk(
    path: Path,
    *,
    head: bytes,
    kind: str,
    as_float: bool,
    max_bytes: int,
    volume_index: int | None,
    on_header: Callable[[VolumeHeader], None] | None = None,
) -> Volume:
    """Read an NRRD/MetaImage file: header checks first, then the voxels.

    Returns a Volume with ``array`` (X, Y, Z): float32 when ``as_float`` else the stored dtype.
    Raises InputError; ITK's RuntimeError escapes only from ``Execute`` (wrapped by the caller
    as ``truncated``).
    """
    sitk = sitk_module()
    where = str(path)
    data = detached_data(path, kind)
    reader = sitk.ImageFileReader()
    reader.SetFileName(where)
    reader.SetImageIO(IMAGE_IO[kind])  # the content decides, not ITK's case-sensitive extension
    try:
        with quiet_itk():
            reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputError(
            "invalid_header", "invalid header: SimpleITK cannot parse it", path=where
        ) from e

    size = [int(s) for s in reader.GetSize()]
    ncomp = int(reader.GetNumberOfComponents())
    pixel = reader.GetPixelID()
    if ncomp != 1:
        raise InputError(
            "unsupported_dtype",
            f"unsupported voxel type: {ncomp} components per voxel (vector/RGB images)",
            path=where,
        )
    refused = {sitk.sitkComplexFloat32, sitk.sitkComplexFloat64, sitk.sitkUInt64}
    if pixel in refused:
        name = sitk.GetPixelIDValueAsString(pixel)
        raise InputError("unsupported_dtype", f"unsupported voxel type: {name}", path=where)
    if any(s < 1 for s in size) or not 2 <= len(size) <= 4:
        raise InputError("invalid_header", f"invalid header: size {tuple(size)}", path=where)
    spatial = (size + [1])[:3]
    t = size[3] if len(size) == 4 else 1
    if volume_index == "all":
        raise InputError(
            "multi_volume",
            "reading every volume as channels is supported for NIfTI only",
            path=where,
        )
    select = select_volume(t, volume_index, where)
    check_size(size, _itemsize(sitk, pixel), max_bytes, where)
    if data is not None and kind == "metaimage":
        _check_metaimage_length(path, head, data, int(np.prod(size)) * _itemsize(sitk, pixel))
    check_spacing(reader.GetSpacing()[:3], where, what="spacing")
    affine = lps_to_affine(reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
    check_affine(affine, where)
    if on_header is not None:
        spacing = tuple((list(reader.GetSpacing()) + [1.0, 1.0])[:3])
        on_header(VolumeHeader(where, tuple(spatial), 1, spacing, _itemsize(sitk, pixel)))

    with quiet_itk():
        image = reader.Execute()
    pixels = sitk.GetArrayFromImage(image)  # [t,] k, j, i
    if select is not None:
        pixels = pixels[select]
    array = pixels.reshape(spatial[::-1]).T
    if as_float:
        array = array.astype(np.float32, copy=False)
    return Volume(array=array, affine=affine)


def _itemsize(sitk: Any, pixel: int) -> int:
    sizes = {
        sitk.sitkUInt8: 1,
        sitk.sitkInt8: 1,
        sitk.sitkUInt16: 2,
        sitk.sitkInt16: 2,
        sitk.sitkUInt32: 4,
        sitk.sitkInt32: 4,
        sitk.sitkInt64: 8,
        sitk.sitkFloat32: 4,
        sitk.sitkFloat64: 8,
    }
    return sizes.get(pixel, 8)


def detached_data(path: Path, kind: str) -> tuple[Path, int] | None:
    """``(file holding the voxels, offset)`` of an NRRD/MetaImage, after the containment rule.

    A detached header (``.mhd``, or ``.nrrd`` with ``data file:``) names its voxel file: it must
    be a regular file next to the header (:func:`medseg.files.check_inside`: no absolute path,
    no ``..``, no symlink leading out), else ``not_allowed`` / ``not_found`` /
    ``not_regular_file``. Multi-file data (``LIST`` or a file-name pattern) is refused. Attached
    voxels (``.mha`` ``LOCAL``, ``.nrrd`` without ``data file``) give ``(path, offset)`` for a
    MetaImage and None for an NRRD; None too when the header names no data (ITK then refuses).
    """
    header = _read_header(path, kind)
    pattern = _ELEMENT_FILE if kind == "metaimage" else _NRRD_DATA_FILE
    match = pattern.search(header)
    if match is None:
        return None
    name = match.group(1).decode("utf-8", "replace").strip()
    if name.upper() == "LOCAL" and kind == "metaimage":
        return path, header.index(b"\n", match.start()) + 1
    if name.upper().startswith("LIST") or "%" in name:
        raise InputError(
            "unsupported_format",
            f"voxel data split over several files ('{name}') is not supported; save the "
            "volume as one .mha/.nrrd",
            path=str(path),
        )
    data = check_inside(name, path.parent, named_by=path)
    if not data.exists():
        raise InputError(
            "not_found", f"not found: voxel data file '{name}' named by the header", path=str(path)
        )
    try:
        check_regular_file(data, what=f"voxel data file '{name}' named by the header")
    except InputError as err:  # the error names the file the user gave
        raise InputError(err.code, err.message, path=str(path)) from None
    return data, 0


def _read_header(path: Path, kind: str) -> bytes:
    """The text header of an NRRD (up to the blank line) or MetaImage (up to its last field),
    read through :func:`medseg.files.open_regular`; longer than :data:`HEADER_MAX` is refused."""
    fd = open_regular(path)
    try:
        head = os.pread(fd, HEADER_MAX + 1, 0)
    finally:
        os.close(fd)
    if kind == "nrrd":
        end = min((i for i in (head.find(b"\n\n"), head.find(b"\r\n\r\n")) if i >= 0),
                  default=-1)  # fmt: skip
    else:
        found = _ELEMENT_FILE.search(head)
        end = -1 if found is None else head.find(b"\n", found.end()) + 1 or len(head)
    if end < 0 and len(head) > HEADER_MAX:
        raise InputError(
            "invalid_header",
            f"invalid header: no end of the text header in the first {HEADER_MAX} bytes",
            path=str(path),
        )
    return head if end < 0 else head[:end]


def _check_metaimage_length(path: Path, head: bytes, data: tuple[Path, int], raw: int) -> None:
    """Refuse short voxel data before ITK reads it (MetaIO would print to stderr first)."""
    fields = dict(re.findall(rb"^\s*(\w+)\s*=\s*(.*?)\s*$", head, re.MULTILINE))
    if b"HeaderSize" in fields:  # the voxels sit at an offset the header chooses
        return
    need = raw
    if fields.get(b"CompressedData", b"False").strip().lower() == b"true":
        try:
            need = int(fields[b"CompressedDataSize"])
        except (KeyError, ValueError):
            return
    have = data[0].stat().st_size - data[1]
    if have < need:
        raise InputError(
            "truncated",
            f"file is truncated or corrupt (voxel data needs {need} bytes, has {max(have, 0)})",
            path=str(path),
        )
