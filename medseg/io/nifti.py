"""NIfTI-1/-2 (``.nii``, ``.nii.gz``) reading, always with nibabel.

Never SimpleITK: it zero-fills truncated files, turns NaN into 0, reads a broken magic as Analyze
(flipping orientation) and uses the qform where nibabel and MONAI use the sform (RELIABILITY.md
B.1/B.2). Every header field that decides how many bytes are read is checked here *before* nibabel
touches the voxels.

Documented choices:

- **Affine**: nibabel's choice: sform when ``sform_code > 0``, else qform when ``qform_code > 0``,
  else the pixdim fallback. When both codes are > 0 and the forms put the grid corners more than
  :data:`FORM_TOL_MM` apart, a warning in ``meta["warnings"]`` says the sform is used. Both forms
  and codes are kept in the :class:`~medseg.io.volume.Volume` (``None``/0 when a code is 0).
- **2-D** (``dim[0] = 2``): accepted as a single-slice ``(X, Y, 1)`` volume.
- **4-D**: ``t = 1`` is squeezed; ``t > 1`` needs ``volume_index`` (CLI ``--volume N``), else
  ``multi_volume``. Dimensions 5-7 must be 1 (a 5-D vector/tensor image is ``unsupported_dtype``).
- **Datatypes**: RGB24/RGBA32, complex, binary/void, float128 and uint64 are ``unsupported_dtype``;
  int64 is accepted (converted on load like any integer type).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.io.checks import check_affine, check_size, check_spacing, form_disagreement_mm
from medseg.io.sniff import Sniffed
from medseg.io.volume import Volume, VolumeHeader

#: qform/sform corner disagreement (mm) above which a warning is recorded
FORM_TOL_MM = 1e-3
#: NIfTI datatype codes refused as "unsupported voxel type" (code -> words)
UNSUPPORTED_DATATYPES = {
    1: "binary (1-bit)",
    32: "complex64",
    128: "RGB24",
    1280: "uint64",
    1536: "float128",
    1792: "complex128",
    2048: "complex256",
    2304: "RGBA32",
}


def read_nifti(
    path: Path,
    sniffed: Sniffed,
    file_size: int,
    *,
    as_float: bool,
    max_bytes: int,
    volume_index: int | str | None,
    warnings: list[str],
    on_header: Callable[[VolumeHeader], None] | None = None,
) -> Volume:
    """Read a NIfTI file whose content :func:`~medseg.io.sniff.sniff` identified.

    Returns a Volume with ``array`` (X, Y, Z): float32 when ``as_float`` (scl_slope/inter applied)
    else the stored dtype (scaled values, so possibly float). Raises InputError; library errors
    escape only as the exception types that :func:`medseg.io.load.load_volume` wraps.
    """
    import nibabel as nib

    where = str(path)
    version = sniffed.nifti_version
    klass = nib.Nifti2Image if version == 2 else nib.Nifti1Image
    hdr_size = 540 if version == 2 else 348
    head = sniffed.head[:hdr_size]
    endian = _endianness(head, hdr_size)
    try:
        hdr = klass.header_class(head, endianness=endian, check=False)
    except (ValueError, TypeError, struct.error) as e:
        raise InputError(
            "invalid_header", "invalid header: cannot parse the NIfTI header", path=where
        ) from e

    shape, select = _check_dims(hdr, where, volume_index)
    itemsize = _check_datatype(hdr, where)
    check_size(shape[:4] if select == "all" else shape[:3], itemsize, max_bytes, where)
    n_spatial = min(int(hdr["dim"][0]), 3)
    check_spacing(hdr["pixdim"][1 : 1 + n_spatial], where, what="pixdim")
    _check_codes_and_offset(hdr, hdr_size, where)
    _fix_header(hdr, where, warnings)

    offset = int(hdr["vox_offset"])
    n_bytes = int(np.prod(shape, dtype=np.float64)) * itemsize
    if sniffed.kind == "nifti" and file_size < offset + n_bytes:
        raise InputError(
            "truncated",
            f"file is truncated or corrupt (voxel data needs {offset + n_bytes} bytes, "
            f"file has {file_size})",
            path=where,
        )

    qform, qcode = hdr.get_qform(coded=True)
    sform, scode = hdr.get_sform(coded=True)
    affine = np.asarray(hdr.get_best_affine(), dtype=np.float64)
    if qcode > 0 and scode > 0:
        gap = form_disagreement_mm(qform, sform, shape)
        if gap > FORM_TOL_MM:
            warnings.append(
                f"qform and sform disagree by up to {gap:.3g} mm; using the sform "
                f"(code {int(scode)}) as nibabel and MONAI do"
            )
    check_affine(affine, where)
    if on_header is not None:
        spacing = [float(v) for v in hdr["pixdim"][1 : 1 + n_spatial]] + [1.0] * 3
        channels = (shape[3] if len(shape) > 3 else 1) if select == "all" else 1
        on_header(VolumeHeader(where, tuple(shape[:3]), channels, tuple(spacing[:3]), itemsize))

    proxy = klass.ImageArrayProxy(where, hdr.copy(), mmap=False, keep_file_open=False)
    array = _read_voxels(proxy, shape, select, as_float)
    return Volume(
        array=array,
        affine=affine,
        qform=None if not qcode else np.asarray(qform, dtype=np.float64),
        qform_code=int(qcode),
        sform=None if not scode else np.asarray(sform, dtype=np.float64),
        sform_code=int(scode),
        meta={"nifti_version": version},
    )


class _Collect:
    """A ``logger`` for nibabel's ``check_fix``: keeps (level, message) instead of printing."""

    def __init__(self) -> None:
        self.records: list[tuple[int, str]] = []

    def log(self, level: int, message: str) -> None:
        if message:
            self.records.append((int(level or 0), message))


def _fix_header(hdr, where: str, warnings: list[str]) -> None:
    """nibabel's own header checks/fixes (qfac 0 -> 1, ...) without writing to its logger.

    Problems nibabel rates as errors become ``invalid_header``; fixes it rates as warnings are
    recorded in ``meta["warnings"]``.
    """
    from nibabel.spatialimages import HeaderDataError

    log = _Collect()
    try:
        hdr.check_fix(logger=log, error_level=40)
    except HeaderDataError as e:
        raise InputError("invalid_header", f"invalid header: {e}", path=where) from e
    warnings.extend(f"NIfTI header fixed: {msg}" for level, msg in log.records if level >= 30)


def _check_codes_and_offset(hdr, hdr_size: int, where: str) -> None:
    """xform codes must be known (nibabel would silently zero them); vox_offset must be sane."""
    from nibabel.nifti1 import xform_codes

    for name in ("qform_code", "sform_code"):
        code = int(hdr[name])
        if code not in xform_codes.value_set():
            raise InputError(
                "invalid_header",
                f"invalid header: {name}={code} is not a NIfTI xform code",
                path=where,
            )
    offset = float(hdr["vox_offset"])
    if not np.isfinite(offset) or offset < hdr_size + 4 or offset > 2**40:
        raise InputError("invalid_header", f"invalid header: vox_offset={offset:g}", path=where)


def _endianness(head: bytes, hdr_size: int) -> str | None:
    """'<' or '>' from ``sizeof_hdr``; None (let nibabel guess from dim[0]) if it is odd."""
    if struct.unpack("<i", head[:4])[0] == hdr_size:
        return "<"
    if struct.unpack(">i", head[:4])[0] == hdr_size:
        return ">"
    return None


def _check_dims(
    hdr, where: str, volume_index: int | str | None
) -> tuple[list[int], int | str | None]:
    """Validate ``dim``; return the full shape (padded to >= 3 dims) and the volume to select."""
    dim = [int(d) for d in np.asarray(hdr["dim"]).tolist()]
    ndim = dim[0]
    if ndim < 1 or ndim > 7:
        raise InputError(
            "invalid_header", f"invalid header: dim[0]={ndim} (must be 1-7)", path=where
        )
    shape = dim[1 : ndim + 1]
    for axis, size in enumerate(shape, start=1):
        if size < 1:
            raise InputError(
                "invalid_header", f"invalid header: dim[{axis}]={size} (must be >= 1)", path=where
            )
    if ndim == 1:
        raise InputError("invalid_header", "invalid header: 1-D data is not an image", path=where)
    shape = shape + [1] * (3 - len(shape)) if len(shape) < 3 else shape
    extra = shape[4:]
    if any(s > 1 for s in extra):
        raise InputError(
            "unsupported_dtype",
            f"unsupported voxel type: vector/tensor-valued voxels (shape {tuple(shape)}, "
            f"intent code {int(hdr['intent_code'])})",
            path=where,
        )
    t = shape[3] if len(shape) > 3 else 1
    return shape, select_volume(t, volume_index, where)


def select_volume(t: int, volume_index: int | str | None, where: str) -> int | str | None:
    """Which of ``t`` volumes to read (None = the only one, ``"all"`` = every one as channels);
    refuses ``multi_volume`` otherwise."""
    if volume_index == "all":
        return "all"
    if volume_index is None:
        if t > 1:
            raise InputError(
                "multi_volume",
                f"file holds {t} volumes (4-D); choose one with --volume N (0-{t - 1})",
                path=where,
            )
        return None
    if not 0 <= volume_index < t:
        raise InputError(
            "multi_volume",
            f"--volume {volume_index} is out of range: the file holds {t} volume(s) (0-{t - 1})",
            path=where,
        )
    return volume_index if t > 1 else None


def _check_datatype(hdr, where: str) -> int:
    """Refuse unknown/unsupported datatypes; return the stored item size in bytes."""
    from nibabel.nifti1 import data_type_codes

    code = int(hdr["datatype"])
    if code in UNSUPPORTED_DATATYPES:
        raise InputError(
            "unsupported_dtype",
            f"unsupported voxel type: {UNSUPPORTED_DATATYPES[code]} (datatype {code})",
            path=where,
        )
    if code == 0 or code not in data_type_codes.value_set():
        raise InputError(
            "invalid_header", f"invalid header: unknown datatype code {code}", path=where
        )
    return int(np.dtype(data_type_codes.dtype[code]).itemsize)


def _read_voxels(proxy, shape: list[int], select: int | str | None, as_float: bool) -> np.ndarray:
    """Read the (selected) volume as (X, Y, Z), or every volume as channels (C, X, Y, Z) when
    ``select == "all"``; float32 when ``as_float`` (scaling applied)."""
    if select == "all":
        t = shape[3] if len(shape) > 3 else 1
        data = np.asarray(proxy, dtype=np.float32) if as_float else np.asarray(proxy)
        data = data.reshape(tuple(shape[:3]) + (t,), order="A")
        return np.ascontiguousarray(np.moveaxis(data, 3, 0))
    if select is not None:
        slicer = (slice(None),) * 3 + (select,) + (0,) * (len(shape) - 4)
        data = proxy[slicer]
        return np.asarray(data, dtype=np.float32) if as_float else np.asarray(data)
    data = np.asarray(proxy, dtype=np.float32) if as_float else np.asarray(proxy)
    return data.reshape(tuple(shape[:3]), order="A")
