"""A DICOM series folder -> Volume, through SimpleITK (GDCM), with the checks ITK leaves out.

``ImageSeriesReader`` only *warns* about missing slices or uneven spacing (it then stretches the
grid silently) and GDCM skips files it cannot parse. So before reading voxels this module:

1. lists the series (``GetGDCMSeriesIDs``): none -> ``dicom_no_series``; several and no
   ``series_uid`` -> ``dicom_multiple_series`` (the message lists the UIDs and says how to choose);
2. refuses the series when a file in the folder starts like DICOM (``DICM`` at byte 128), names
   the chosen series UID, and cannot be read -> ``dicom_corrupt`` (a truncated slice);
3. reads every slice header (ImagePositionPatient ``0020|0032``, ImageOrientationPatient
   ``0020|0037``) and projects each position on the slice normal ``n = row x col``; slices are
   sorted by that projection. Refused as ``dicom_nonuniform``: orientations differing by more
   than :data:`ORIENTATION_TOL`, duplicate positions, gaps that differ from the median gap by more
   than ``max(SPACING_ABS_TOL_MM, SPACING_REL_TOL * median)`` (a missing slice shows up here),
   and slices shifted in-plane by more than that tolerance (gantry tilt);
4. reads the voxels (rescale slope/intercept applied by ITK, so CT stays in HU).

``meta`` gets ``series_uid``, ``modality`` (``0008|0060``), ``n_slices`` and ``slice_spacing_mm``,
and what a DICOM SEG or RTSTRUCT needs to reference the series (:mod:`medseg.io.dicom_seg`):
``study_uid``, ``frame_of_reference_uid``, ``sop_class_uid``, and per slice in Z order
``sop_instance_uids`` and ``dicom_files`` (absolute paths).
A series with one slice is accepted as a ``(X, Y, 1)`` volume. Multi-frame (enhanced) files are
refused (``dicom_unsupported``); ``.zip`` archives are not read.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.io.checks import check_affine, check_size
from medseg.io.itk import image_to_volume, quiet_itk, sitk_module
from medseg.io.volume import Volume, VolumeHeader

SPACING_REL_TOL = 0.01
SPACING_ABS_TOL_MM = 1e-3
ORIENTATION_TOL = 1e-4
_UID_LIST_MAX = 10


def read_dicom_series(
    folder: Path,
    *,
    series_uid: str | None,
    as_float: bool,
    max_bytes: int,
    warnings: list[str],
    on_header: Callable[[VolumeHeader], None] | None = None,
) -> Volume:
    """Read one series from ``folder`` (not recursive). Returns ``array`` (X, Y, Z).

    X runs along the DICOM row direction (columns of the image), Y along the column direction,
    Z along the slice normal in increasing position. float32 when ``as_float``.
    """
    sitk = sitk_module()
    where = str(folder)
    with quiet_itk():
        ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(where))
    dicm = [f for f in _regular_files(folder) if _has_dicm(f)]
    if not ids:
        if dicm:
            _refuse_unreadable(dicm, where)
        raise InputError(
            "dicom_no_series",
            "no DICOM series found (a folder is read only as a DICOM series)",
            path=where,
        )
    uid = _choose_series(ids, series_uid, where)
    with quiet_itk():
        names = [str(n) for n in sitk.ImageSeriesReader.GetGDCMSeriesFileNames(where, uid)]
    listed = {os.path.realpath(n) for n in names}
    suspects = [f for f in dicm if os.path.realpath(f) not in listed and _mentions(f, uid)]
    if suspects:
        _refuse_unreadable(suspects, where)

    infos = [_slice_info(sitk, n, where) for n in names]
    ordered, gap = _check_stack(infos, where)
    cols, rows = infos[0]["size"][:2]
    check_size((cols, rows, len(names)), infos[0]["itemsize"], max_bytes, where)
    check_affine(_header_affine(ordered[0], gap), where)
    if on_header is not None:
        slab = gap if np.isfinite(gap) else 1.0
        spacing = (*ordered[0]["pixel_spacing"], float(slab))
        on_header(VolumeHeader(where, (cols, rows, len(names)), 1, spacing, infos[0]["itemsize"]))

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([info["file"] for info in ordered])
    with quiet_itk():
        image = reader.Execute()
    vol = image_to_volume(image)
    check_affine(vol.affine, where)
    if len(names) == 1:
        warnings.append("DICOM series has a single slice; its slice spacing is nominal")
    if as_float:
        vol.array = vol.array.astype(np.float32, copy=False)
    vol.meta.update(
        series_uid=uid,
        modality=infos[0]["modality"],
        n_slices=len(names),
        slice_spacing_mm=gap,
        study_uid=infos[0]["study_uid"],
        frame_of_reference_uid=infos[0]["frame_of_reference_uid"],
        sop_class_uid=infos[0]["sop_class_uid"],
        sop_instance_uids=[info["sop_uid"] for info in ordered],
        dicom_files=[os.path.abspath(info["file"]) for info in ordered],
    )
    return vol


def _choose_series(ids: list[str], series_uid: str | None, where: str) -> str:
    shown = ", ".join(ids[:_UID_LIST_MAX]) + (" ..." if len(ids) > _UID_LIST_MAX else "")
    if series_uid is None:
        if len(ids) > 1:
            raise InputError(
                "dicom_multiple_series",
                f"folder holds {len(ids)} DICOM series ({shown}); choose one with "
                "--series-uid UID (series_uid=...)",
                path=where,
            )
        return ids[0]
    if series_uid not in ids:
        raise InputError(
            "dicom_no_series",
            f"DICOM series {series_uid} not found; the folder holds: {shown}",
            path=where,
        )
    return series_uid


def _regular_files(folder: Path) -> list[str]:
    out = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(".") or entry.name.upper() == "DICOMDIR":
                continue
            if entry.is_file():  # follows symlinks; FIFOs and devices are skipped
                out.append(entry.path)
    return sorted(out)


def _has_dicm(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _mentions(path: str, uid: str) -> bool:
    """Whether the first 64 KiB of a file contain the series UID (so it belongs to the series)."""
    try:
        with open(path, "rb") as f:
            return uid.encode("ascii") in f.read(65536)
    except OSError:
        return False


def _refuse_unreadable(files: list[str], where: str) -> None:
    """Raise ``dicom_corrupt`` if any of ``files`` cannot be parsed by SimpleITK."""
    sitk = sitk_module()
    bad = []
    for name in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(name)
        try:
            with quiet_itk():
                reader.ReadImageInformation()
        except RuntimeError:
            bad.append(os.path.basename(name))
    if bad:
        raise InputError(
            "dicom_corrupt",
            f"DICOM file(s) truncated or corrupt: {', '.join(bad[:5])}"
            + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""),
            path=where,
        )


def _slice_info(sitk, name: str, where: str) -> dict:
    reader = sitk.ImageFileReader()
    reader.SetFileName(name)
    try:
        with quiet_itk():
            reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputError(
            "dicom_corrupt",
            f"DICOM file truncated or corrupt: {os.path.basename(name)}",
            path=where,
        ) from e
    size = [int(s) for s in reader.GetSize()]
    if len(size) > 2 and size[2] > 1:
        raise InputError(
            "dicom_unsupported",
            f"multi-frame (enhanced) DICOM is not supported: {os.path.basename(name)}",
            path=where,
        )

    def floats(key: str, n: int) -> np.ndarray:
        raw = reader.GetMetaData(key) if reader.HasMetaDataKey(key) else ""
        try:
            vals = np.array([float(v) for v in raw.split("\\")], dtype=np.float64)
        except ValueError:
            vals = np.array([])
        if vals.shape != (n,) or not np.all(np.isfinite(vals)):
            raise InputError(
                "dicom_corrupt",
                f"DICOM slice {os.path.basename(name)} lacks a valid {key} (position/orientation)",
                path=where,
            )
        return vals

    if reader.GetNumberOfComponents() != 1:
        raise InputError(
            "unsupported_dtype", "unsupported voxel type: colour (RGB) DICOM", path=where
        )

    def tag(key: str) -> str:
        return reader.GetMetaData(key).strip(" \0") if reader.HasMetaDataKey(key) else ""

    itemsize = int(np.dtype(_numpy_type(sitk, reader.GetPixelID())).itemsize)
    return {
        "file": name,
        "size": size,
        "position": floats("0020|0032", 3),
        "orientation": floats("0020|0037", 6),
        "modality": tag("0008|0060"),
        "study_uid": tag("0020|000d"),
        "frame_of_reference_uid": tag("0020|0052"),
        "sop_class_uid": tag("0008|0016"),
        "sop_uid": tag("0008|0018"),
        "itemsize": itemsize,
        "pixel_spacing": [float(v) for v in reader.GetSpacing()[:2]],
    }


def _header_affine(first: dict, gap: float) -> np.ndarray:
    """RAS affine the header tags promise (checked before any voxel is read)."""
    iop = first["orientation"]
    normal = np.cross(iop[:3], iop[3:])
    spacing = [*first["pixel_spacing"], gap if np.isfinite(gap) else 1.0]
    affine = np.eye(4)
    flip = np.diag([-1.0, -1.0, 1.0])
    affine[:3, :3] = flip @ np.column_stack([iop[:3], iop[3:], normal]) @ np.diag(spacing)
    affine[:3, 3] = flip @ first["position"]
    return affine


def _check_stack(infos: list[dict], where: str) -> tuple[list[dict], float]:
    """Sort slices along the normal and refuse uneven stacks; return (sorted infos, gap mm)."""
    iop = infos[0]["orientation"]
    for info in infos[1:]:
        if np.max(np.abs(info["orientation"] - iop)) > ORIENTATION_TOL:
            raise InputError(
                "dicom_nonuniform",
                "non-uniform slice orientation: slices of the series are not parallel",
                path=where,
            )
        if info["size"][:2] != infos[0]["size"][:2]:
            raise InputError("dicom_nonuniform", "slices differ in size", path=where)
    normal = np.cross(iop[:3], iop[3:])
    if np.linalg.norm(normal) < 1e-3:
        raise InputError(
            "dicom_corrupt", "ImageOrientationPatient has parallel row/column axes", path=where
        )
    normal /= np.linalg.norm(normal)
    ordered = sorted(infos, key=lambda info: float(info["position"] @ normal))
    if len(ordered) < 2:
        return ordered, float("nan")
    pos = np.array([info["position"] for info in ordered])
    steps = np.diff(pos, axis=0)
    along = steps @ normal
    median = float(np.median(along))
    tol = max(SPACING_ABS_TOL_MM, SPACING_REL_TOL * abs(median))
    if np.min(along) <= tol:
        raise InputError(
            "dicom_nonuniform",
            "duplicate slice positions (several slices at one position: multi-echo, "
            "multi-phase or a copied file?)",
            path=where,
        )
    if np.max(np.abs(along - median)) > tol:
        raise InputError(
            "dicom_nonuniform",
            f"non-uniform slice spacing ({np.min(along):.4g} to {np.max(along):.4g} mm, median "
            f"{median:.4g} mm); a slice may be missing",
            path=where,
        )
    sideways = np.linalg.norm(steps - along[:, None] * normal[None, :], axis=1)
    if np.max(sideways) > tol:
        raise InputError(
            "dicom_nonuniform",
            f"slices are shifted in-plane by up to {np.max(sideways):.3g} mm (gantry tilt?)",
            path=where,
        )
    return ordered, median


def _numpy_type(sitk, pixel: int) -> type:
    table = {
        sitk.sitkUInt8: np.uint8,
        sitk.sitkInt8: np.int8,
        sitk.sitkUInt16: np.uint16,
        sitk.sitkInt16: np.int16,
        sitk.sitkUInt32: np.uint32,
        sitk.sitkInt32: np.int32,
        sitk.sitkFloat32: np.float32,
    }
    return table.get(pixel, np.float64)
