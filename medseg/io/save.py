"""``save_volume``: write a Volume atomically, on its own grid, never over an input.

Atomic write (RELIABILITY.md B.4, :mod:`medseg.io.atomic`): a temp file ``.tmp_<random><ext>`` in
the **target folder**, written, flushed and fsynced, then ``os.replace``-d onto the target and the
folder fsynced. On any failure the temp file is removed and :class:`~medseg.errors.OutputError`
(exit 3) says ``could not write output: <strerror>``; the previous output is untouched. A SIGKILL
can only leave an orphan ``.tmp_*`` file, which :func:`cleanup_orphan_temps` removes later.
:func:`stage_volume` does the same checks and write into a
:class:`~medseg.io.atomic.StagedWrites`, so a volume and other files can be written
all-or-nothing.

- NIfTI (``.nii``, ``.nii.gz``) through nibabel with an explicit header dtype. Both forms and codes
  of the source are copied when the Volume carries them and they agree with its affine; otherwise
  both are set to the affine with code 1. NIfTI-2 only when a dimension exceeds 32767.
  A ``(C, X, Y, Z)`` volume is stored as ``(X, Y, Z, C)``.
- ``.nrrd`` / ``.mha`` through SimpleITK (RAS -> LPS, gzip-compressed). SimpleITK reports success
  on a full disk, so the temp file is **read back** (geometry and every voxel) before the rename.
- ``.mhd`` writes two files (header + ``.zraw``) into a temp sub-folder of the target folder, then
  moves the data file and then the header into place: between those two renames a reader could
  see the new data file beside the old header (a window of one rename).
- A Volume whose ``meta["label_table"]`` lists :class:`~medseg.io.label_names.LabelInfo` s gets
  the label names and colours in a NIfTI header extension (:mod:`medseg.io.label_names`).
- ``role="label"``: stored as uint8, or uint16 when the maximum exceeds 255; negative, fractional,
  non-finite or > 65535 values are refused (InputError ``bad_labels``). int64 arrays are fine.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from medseg.errors import InputError, OutputError
from medseg.io.atomic import (
    TEMP_PREFIX,
    StagedWrites,
    default_mode,
    fsync_path,
    output_errors,
)
from medseg.io.checks import check_affine, to_label_array
from medseg.io.sniff import extension_kind
from medseg.io.volume import Volume

_CANONICAL_EXT = {"nifti-gz": ".nii.gz", "nifti": ".nii", "nrrd": ".nrrd"}
_FORM_ATOL = 1e-5


def save_volume(
    vol: Volume,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    role: str = "image",
    protect: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Write ``vol`` to ``path`` (format from the extension, any case); return the path written.

    Raises:
        InputError: ``exists`` (target exists and not ``overwrite``), ``would_overwrite_input``
            (target resolves, symlinks followed, to a path in ``protect``; even with overwrite),
            ``not_regular_file`` (target is a folder/device), ``unknown_format`` (extension),
            ``bad_labels``, ``invalid_geometry``, ``unsupported_dtype``.
        OutputError: ``no_folder``, ``permission``, ``disk_full``, ``write_failed``.
    """
    with StagedWrites() as staged:
        written = stage_volume(staged, vol, path, overwrite=overwrite, role=role, protect=protect)
    return written


def stage_volume(
    staged: StagedWrites,
    vol: Volume,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    role: str = "image",
    protect: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """:func:`save_volume`'s checks and write into ``staged``: ``path`` gets its new content
    when ``staged`` commits. Returns the path; raises what :func:`save_volume` raises."""
    if role not in ("image", "label"):
        raise ValueError(f"role must be 'image' or 'label', got {role!r}")
    p = Path(path)
    where = str(p)
    ext, kind = extension_kind(p)
    if kind is None:
        raise InputError(
            "unknown_format",
            f"cannot write {ext or 'a file without extension'!s}: use .nii.gz, .nii, .nrrd, "
            ".mha or .mhd",
            path=where,
        )
    companions = [p.with_name(p.name[: -len(ext)] + ".zraw")] if ext.lower() == ".mhd" else []
    _check_target(p, companions, overwrite, protect)
    check_affine(vol.affine, where)
    array = _prepare(vol.array, role, where)

    if kind.startswith("nifti"):
        img = _nifti_image(vol, array)
        staged.stage(p, lambda tmp: img.to_filename(tmp), suffix=_CANONICAL_EXT[kind])
    elif ext.lower() == ".mhd":
        _stage_mhd(staged, p, vol.affine, array)
    else:
        suffix = _CANONICAL_EXT.get(kind, ".mha")
        staged.stage(p, lambda tmp: _write_itk(tmp, kind, vol.affine, array), suffix=suffix)
    return p


def cleanup_orphan_temps(folder: str | os.PathLike[str], older_than_s: float = 3600) -> int:
    """Remove ``.tmp_*`` files/folders (left by killed writers) older than ``older_than_s``.

    Only entries whose name starts with ``.tmp_`` are touched; returns how many were removed.
    A missing folder counts as clean (returns 0).
    """
    now = time.time()
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        if not entry.name.startswith(TEMP_PREFIX):
            continue
        try:
            if now - entry.stat(follow_symlinks=False).st_mtime < older_than_s:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except FileNotFoundError:  # another process cleaned it first
            continue
        removed += 1
    return removed


# checks ------------------------------------------------------------------------------------
def _check_target(
    p: Path, companions: list[Path], overwrite: bool, protect: Iterable[str | os.PathLike[str]]
) -> None:
    where = str(p)
    for q in protect:
        for target in [p, *companions]:
            if _same_file(target, Path(q)):
                raise InputError(
                    "would_overwrite_input",
                    f"would overwrite the input {q}; choose another output path",
                    path=where,
                )
    for target in [p, *companions]:
        if os.path.isdir(target) or (os.path.exists(target) and not os.path.isfile(target)):
            raise InputError(
                "not_regular_file", "output path exists and is not a regular file", path=str(target)
            )
        if os.path.lexists(target) and not overwrite:
            raise InputError(
                "exists", "already exists; pass --overwrite to replace it", path=str(target)
            )
    folder = p.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise OutputError(
            "no_folder", f"could not write output: folder {folder} {what}", path=where
        )


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


def _prepare(array: np.ndarray, role: str, where: str) -> np.ndarray:
    """Array with an explicit on-disk dtype (labels uint8/uint16; no int64 reaches nibabel)."""
    arr = np.asarray(array)
    if role == "label":
        return to_label_array(arr, where, max_value=65535)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    if arr.dtype in (np.int64, np.uint64):
        info = np.iinfo(np.int32)
        fits = arr.size == 0 or (arr.min() >= info.min and arr.max() <= info.max)
        return arr.astype(np.int32 if fits else np.float64)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError("unsupported_dtype", f"cannot write voxel type {arr.dtype}", path=where)
    return arr


# writers -----------------------------------------------------------------------------------
def _nifti_image(vol: Volume, array: np.ndarray):
    """A Nifti1Image (Nifti2Image for dims > 32767) with explicit dtype, forms and codes."""
    import nibabel as nib

    data = np.moveaxis(array, 0, -1) if array.ndim == 4 else array
    klass = nib.Nifti2Image if max(data.shape) > 32767 else nib.Nifti1Image
    hdr = klass.header_class()
    hdr.set_data_shape(data.shape)
    hdr.set_data_dtype(data.dtype)
    qform, qcode, sform, scode = _forms(vol)
    hdr.set_qform(qform, code=qcode)
    hdr.set_sform(sform, code=scode)
    hdr.set_xyzt_units("mm", "sec")
    table = vol.meta.get("label_table")
    if table:  # label names/colours (medseg.io.label_names): TotalSegmentator's extension
        from medseg.io.label_names import NIFTI_LABEL_ECODE, label_table_xml

        hdr.extensions.append(nib.nifti1.Nifti1Extension(NIFTI_LABEL_ECODE, label_table_xml(table)))
    return klass(data, None, header=hdr)


def _forms(vol: Volume) -> tuple[np.ndarray, int, np.ndarray, int]:
    """Source forms/codes when they agree with ``vol.affine``, else the affine with code 1."""
    q = vol.qform if vol.qform_code > 0 and vol.qform is not None else None
    s = vol.sform if vol.sform_code > 0 and vol.sform is not None else None
    chosen = s if s is not None else q
    if chosen is not None and np.allclose(chosen, vol.affine, atol=_FORM_ATOL):
        return (
            vol.affine if q is None else q,
            vol.qform_code if q is not None else 0,
            vol.affine if s is None else s,
            vol.sform_code if s is not None else 0,
        )
    return vol.affine, 1, vol.affine, 1


def _itk_image(affine: np.ndarray, array: np.ndarray):
    from medseg.io.itk import affine_to_lps, sitk_module

    sitk = sitk_module()
    if array.ndim != 3:
        raise InputError(
            "unsupported_dtype",
            "multi-channel volumes can only be written as NIfTI (.nii/.nii.gz)",
        )
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.T))
    spacing, origin, direction = affine_to_lps(affine)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def _write_itk(tmp: str, kind: str, affine: np.ndarray, array: np.ndarray) -> None:
    """Write with SimpleITK, then read it back: SimpleITK reports success on a full disk."""
    from medseg.io.itk import IMAGE_IO, quiet_itk, sitk_module

    sitk = sitk_module()
    image = _itk_image(affine, array)
    writer = sitk.ImageFileWriter()
    writer.SetImageIO(IMAGE_IO[kind])
    writer.SetFileName(tmp)
    writer.UseCompressionOn()
    reader = sitk.ImageFileReader()
    reader.SetImageIO(IMAGE_IO[kind])
    reader.SetFileName(tmp)
    try:
        with quiet_itk():
            writer.Execute(image)
            back = reader.Execute()
        same = back.GetSize() == image.GetSize() and np.array_equal(
            sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image)
        )
    except RuntimeError as e:
        raise OutputError(
            "write_failed",
            "could not write output: SimpleITK failed to write or re-read the file (disk full?)",
        ) from e
    if not same:
        raise OutputError("write_failed", "could not write output: the file read back differs")


def _stage_mhd(staged: StagedWrites, target: Path, affine: np.ndarray, array: np.ndarray) -> None:
    """Header + data file written in a staging folder; at commit the data file moves first,
    then the header.

    ITK always names the header ``<stem>.mhd`` (lower case) and the data ``<stem>.zraw``; the
    header is renamed to the requested name (``SCAN.MHD`` stays ``SCAN.MHD``).
    """
    folder = target.parent
    stem = target.name[: -len(".mhd")]
    tmpdir = staged.staging_folder(target)
    with output_errors(target):
        header = tmpdir / f"{stem}.mhd"
        _write_itk(str(header), "metaimage", affine, array)
        data = [f for f in tmpdir.iterdir() if f != header]
        for f in [*data, header]:
            fsync_path(f)
            os.chmod(f, default_mode())
    for f in data:
        staged.add(f, folder / f.name)
    staged.add(header, target)
