"""``load_volume``: the one way any file becomes a :class:`~medseg.io.volume.Volume`.

The loader contract (RELIABILITY.md C.1), checked in this order; every refusal is an
:class:`~medseg.errors.InputError` (CLI exit 2) with a stable ``code`` and one human line:

===================== =====================================================================
code                  meaning
===================== =====================================================================
not_found             missing path, dangling symlink, symlink loop, missing .mhd data file
not_regular_file      FIFO, device (``/dev/zero``), socket, or a folder named like a file
permission            the file (or a folder on its path) cannot be read
empty_file            0 bytes
unknown_format        content is no NIfTI/NRRD/MetaImage (PNG, text, random bytes, ...)
extension_mismatch    readable content under the wrong extension (message names the right one)
truncated             data ends early or the compressed stream is damaged
corrupt               any other library failure while reading (type named, chained for --debug)
invalid_header        impossible header fields (dim[0], dims < 1, datatype code, broken magic)
unsupported_dtype     RGB, complex, binary, uint64, float128, vector/multi-component voxels
too_large             prod(shape) * max(itemsize, 4) > max_bytes, refused before allocating
invalid_geometry      voxel size <= 0/NaN, singular or sheared affine, non-finite/far origin
non_finite            NaN/Inf voxels (nan_policy="error"), or every voxel non-finite
constant_image        every voxel equal (images only: cannot be normalised)
multi_volume          4-D with t > 1 and no volume_index (or the index is out of range)
bad_labels            label values fractional, negative, non-finite or outside ``classes``
dicom_no_series       folder holds no DICOM series (or not the requested series_uid)
dicom_multiple_series several series and no series_uid (the UIDs are listed)
dicom_nonuniform      missing slice, uneven spacing, duplicate positions, tilted/rotated slices
dicom_corrupt         a slice of the series is truncated/unreadable or lacks position tags
dicom_unsupported     multi-frame (enhanced) DICOM
grid_mismatch         (``check_same_grid``) label/second image not on the image's grid
not_enough_memory     (an ``on_header`` guard, :mod:`medseg.inference.memory`) the work planned
                      on this volume does not fit in memory; decided from the header, before
                      any voxel is decompressed
===================== =====================================================================

:func:`~medseg.io.save.save_volume` adds ``exists``, ``would_overwrite_input`` (InputError) and
``no_folder``, ``permission``, ``disk_full``, ``write_failed`` (OutputError, exit 3).

**Extension/content mismatch (one rule, everywhere):** the content decides what the file is, and a
file whose extension promises something else is refused with ``extension_mismatch`` naming the
actual content and the extension to rename it to (plain NIfTI named ``.nii.gz``, gzip named
``.nii``, a NIfTI with no extension, ...). Nothing is ever read "by guess".

``load_volume`` always returns a 3-D ``(X, Y, Z)`` array (2-D files become ``Z = 1``).
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path

from medseg.errors import InputError
from medseg.files import describe_mode, open_regular, stat_path
from medseg.io.checks import finish_image, to_label_array
from medseg.io.sniff import READABLE, SUGGESTED_EXTENSION, Sniffed, extension_kind, sniff
from medseg.io.volume import Volume, VolumeHeader

HeaderCheck = Callable[[VolumeHeader], None]
ROLES = ("image", "label")
NAN_POLICIES = ("error", "zero")


def load_volume(
    path: str | os.PathLike[str],
    *,
    role: str = "image",
    max_bytes: int = 2**31,
    nan_policy: str = "error",
    volume_index: int | str | None = None,
    series_uid: str | None = None,
    classes: Iterable[int] | None = None,
    on_header: HeaderCheck | None = None,
    grid: Volume | None = None,
) -> Volume:
    """Read a volume file or a DICOM series folder, or raise InputError (see the module table).

    Args:
        path: ``.nii``, ``.nii.gz`` (NIfTI-1/2), ``.nrrd``, ``.mha``, ``.mhd`` (+ data file), any
            case; or a folder holding a DICOM series.
        role: ``"image"`` -> float32 array, scl_slope/inter applied, finite, not constant.
            ``"label"`` -> uint8/uint16/int32 array of whole numbers >= 0 (subset of ``classes``
            when given); an all-zero label gives a warning, not an error.
        max_bytes: refuse volumes needing more than this many bytes (at >= 4 bytes/voxel).
        nan_policy: ``"error"`` refuses NaN/Inf voxels; ``"zero"`` replaces them with 0 and warns.
        volume_index: which volume of a 4-D file to read (required when t > 1), or ``"all"``
            to read every volume as channels: ``array`` is then ``(C, X, Y, Z)`` (NIfTI only;
            this is how MSD stores multi-modal cases).
        series_uid: which DICOM series to read when the folder holds several.
        classes: allowed label values (``role="label"`` only).
        on_header: called with the :class:`~medseg.io.volume.VolumeHeader` after every header
            check and before any voxel is read or decompressed; raise (an ``InputError``, e.g.
            :func:`medseg.inference.memory.check_memory`'s ``not_enough_memory``) to refuse.
        grid: ``role="label"`` only: the image grid a DICOM SEG file or a ``.seg.nrrd`` is put
            on (they may hold only the slices or the box their segments cover;
            :func:`medseg.io.placement.place_on_grid`, never resampled). Without it they come
            on their own grid.

    A DICOM SEG file (``role="label"``, :mod:`medseg.io.dicom_seg`) and a 3D Slicer
    ``.seg.nrrd`` (:mod:`medseg.io.seg_nrrd`) are label maps; ``meta`` then also has
    ``label_names`` and ``label_colors`` (as has a NIfTI with a label table).

    Returns:
        Volume with ``array`` (X, Y, Z), ``affine`` voxel -> RAS+ mm, the NIfTI forms when the
        source has them, and ``meta`` with ``path``, ``format``, ``reader``, ``warnings`` (plus
        ``series_uid``, ``modality``, ... for DICOM).
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    p = Path(path)
    where = str(p)
    st = stat_path(p)
    as_float = role == "image"
    warnings: list[str] = []

    if stat.S_ISDIR(st.st_mode):
        if extension_kind(p)[1] is not None:
            raise InputError("not_regular_file", "not a regular file (it is a folder)", path=where)
        from medseg.io.dicom import read_dicom_series

        with _library_errors(where, "dicom_corrupt"):
            vol = read_dicom_series(
                p,
                series_uid=series_uid,
                as_float=as_float,
                max_bytes=max_bytes,
                warnings=warnings,
                on_header=on_header,
            )
        fmt, reader = "dicom", "SimpleITK-GDCM"
    else:
        if not stat.S_ISREG(st.st_mode):
            raise InputError(
                "not_regular_file",
                f"not a regular file (it is {describe_mode(st.st_mode)})",
                path=where,
            )
        if st.st_size == 0:
            raise InputError("empty_file", "empty file (0 bytes)", path=where)
        sniffed = _sniff(p)
        if sniffed.kind == "dicom" and role == "label":
            fmt = "dicom-seg"
        elif role == "label" and where.lower().endswith(".seg.nrrd") and sniffed.kind == "nrrd":
            fmt = "seg-nrrd"
        else:
            fmt = _resolve_format(p, sniffed)
        with _library_errors(where, "truncated"):
            if fmt in ("dicom-seg", "seg-nrrd"):
                vol = _read_segmentation(p, fmt, grid, max_bytes, on_header, warnings)
                reader = "pydicom" if fmt == "dicom-seg" else "slicerio"
            elif fmt in ("nifti", "nifti-gz"):
                from medseg.io.nifti import read_nifti

                vol = read_nifti(
                    p,
                    sniffed,
                    st.st_size,
                    as_float=as_float,
                    max_bytes=max_bytes,
                    volume_index=volume_index,
                    warnings=warnings,
                    on_header=on_header,
                )
                reader = "nibabel"
                if role == "label":
                    from medseg.io.label_names import nifti_label_table

                    table = nifti_label_table(p)
                    if table:
                        vol.meta["label_names"] = {i.value: i.name for i in table}
                        vol.meta["label_colors"] = {i.value: i.color for i in table}
            else:
                from medseg.io.itk import read_itk

                vol = read_itk(
                    p,
                    head=sniffed.head,
                    kind=fmt,
                    as_float=as_float,
                    max_bytes=max_bytes,
                    volume_index=volume_index,
                    on_header=on_header,
                )
                reader = "SimpleITK"

    if as_float:
        vol.array = finish_image(vol.array, nan_policy, where, warnings)
    else:
        vol.array = to_label_array(vol.array, where, classes=classes)
        if not vol.array.any():
            warnings.append("label is empty (every voxel is 0)")
    vol.meta.update(path=where, format=fmt, reader=reader, role=role)
    vol.meta["warnings"] = warnings
    return vol


def _read_segmentation(p: Path, fmt: str, grid, max_bytes, on_header, warnings) -> Volume:
    """A DICOM SEG or a ``.seg.nrrd`` as a label Volume (optionally on ``grid``)."""
    from medseg.io.checks import check_size

    if fmt == "dicom-seg":
        from medseg.io.dicom_seg import read_seg as read
    else:
        from medseg.io.seg_nrrd import read_seg_nrrd as read
    vol = read(p, grid=grid, warnings=warnings)
    check_size(vol.spatial_shape, vol.array.itemsize, max_bytes, str(p))
    if on_header is not None:
        spacing = tuple(float(v) for v in vol.spacing)
        on_header(VolumeHeader(str(p), vol.spatial_shape, 1, spacing, vol.array.itemsize))
    return vol


def _sniff(p: Path) -> Sniffed:
    """Open without blocking, re-check it is regular (:func:`medseg.files.open_regular`), sniff."""
    fd = open_regular(p)
    try:
        return sniff(fd)
    except OSError as e:
        raise InputError("truncated", f"cannot read the file ({e.strerror})", path=str(p)) from None
    finally:
        os.close(fd)


def _resolve_format(p: Path, sniffed: Sniffed) -> str:
    """The one mismatch rule: content decides; the extension must agree or we refuse."""
    where = str(p)
    ext, promised = extension_kind(p)
    named = f"'{ext}'" if ext else "no extension"
    if sniffed.kind in READABLE:
        if promised == sniffed.kind or (promised == "metaimage" == sniffed.kind):
            return sniffed.kind
        raise InputError(
            "extension_mismatch",
            f"content is {sniffed.description} but the name has {named}; rename it to "
            f"*{SUGGESTED_EXTENSION[sniffed.kind]}",
            path=where,
        )
    what = {
        "nifti": "a NIfTI",
        "nifti-gz": "a NIfTI",
        "nrrd": "an NRRD",
        "metaimage": "a MetaImage",
    }.get(promised or "", "a NIfTI/NRRD/MetaImage")
    if sniffed.kind == "broken-nifti":
        raise InputError(
            "invalid_header",
            "invalid header: NIfTI magic is missing or broken; refusing to read it as Analyze "
            "(orientation would be ambiguous)",
            path=where,
        )
    if sniffed.kind == "short-nifti":
        raise InputError("truncated", "file is truncated or corrupt (header cut off)", path=where)
    if sniffed.kind == "gzip" and sniffed.description.startswith("a damaged"):
        raise InputError(
            "truncated", "file is truncated or corrupt (damaged gzip stream)", path=where
        )
    if sniffed.kind == "dicom":
        raise InputError(
            "unknown_format",
            "a single DICOM file: pass the folder holding the whole series",
            path=where,
        )
    if sniffed.kind == "nifti-pair":
        raise InputError(
            "unknown_format",
            f"{sniffed.description} is not supported; convert it to .nii.gz",
            path=where,
        )
    raise InputError(
        "unknown_format", f"not {what} file (content: {sniffed.description})", path=where
    )


class _library_errors:
    """Turn exceptions raised inside third-party readers into a catalogued InputError.

    ``MemoryError`` -> ``too_large``; EOF/zlib/OSError -> ``default`` ("truncated or corrupt");
    nibabel header errors and anything else a library raises -> ``corrupt`` naming only the
    exception type (the original is chained as ``__cause__`` for ``--debug``).
    """

    def __init__(self, where: str, default: str) -> None:
        self.where, self.default = where, default

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or isinstance(exc, (InputError, *_BUGS)) or not isinstance(exc, Exception):
            return False
        if isinstance(exc, MemoryError):
            raise InputError(
                "too_large", "not enough memory to load this volume", path=self.where
            ) from exc
        if isinstance(exc, (EOFError, zlib.error, OSError, struct.error)):
            raise InputError(self.default, "file is truncated or corrupt", path=self.where) from exc
        if isinstance(exc, RuntimeError):  # SimpleITK reports every failure this way
            raise InputError(
                self.default,
                "file is truncated or corrupt (SimpleITK could not read it)",
                path=self.where,
            ) from exc
        code = "invalid_header" if type(exc).__name__ in _HEADER_ERRORS else "corrupt"
        raise InputError(
            code, f"file is corrupt or unreadable ({type(exc).__name__})", path=self.where
        ) from exc


_BUGS = (NameError, ImportError, AssertionError, SyntaxError)  # ours, never the file's fault
_HEADER_ERRORS = {"HeaderDataError", "ImageFileError", "HeaderTypeError", "OverflowError"}
