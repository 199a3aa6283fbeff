"""Catalogue of bad input files (RELIABILITY.md B.1, B.3, C.2 rows 4-20), generated on demand.

Every case is ``(case_id, make, expected_code, needle)``: ``make(tmp_dir) -> Path`` builds the
input inside ``tmp_dir`` (nothing is downloaded; DICOM cases copy pydicom's shipped test files),
``expected_code`` is the :class:`medseg.errors.InputError` code ``load_volume`` must raise (so the
CLI must exit 2 and write nothing) and ``needle`` a fragment of the documented message (C.2: "not
found", "not a regular file", "volume too large", "non-finite voxels (3)", ...) that the error must
contain. The module is self-contained so it can be loaded by file path::

    spec = importlib.util.spec_from_file_location("bad_inputs", "tests/bad_inputs.py")
    bad_inputs = importlib.util.module_from_spec(spec); spec.loader.exec_module(bad_inputs)
    for case_id, make, code, needle in bad_inputs.CASES: ...

Cases that depend on the user (a mode-000 file reads fine as root) are not in ``CASES``; see
``tests/test_io_load.py``. ``make_all(tmp_dir)`` builds every case: ``{case_id: (path, code)}``.
The biggest file is the 1 GiB gzip bomb, ~1 MB on disk, built in ~0.4 s without holding it in RAM.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

Make = Callable[[Path], Path]

# --- NIfTI builders ---------------------------------------------------------------------------
_AFFINE = np.array([[-2.0, 0, 0, 30], [0, 2.0, 0, -20], [0, 0, 3.0, 10], [0, 0, 0, 1]])


def small_array(shape=(8, 7, 6), dtype=np.float32) -> np.ndarray:
    """A non-constant, finite test array."""
    return (np.arange(int(np.prod(shape))) % 97).reshape(shape).astype(dtype)


def nifti_bytes(data=None, affine=_AFFINE, patch=None, nifti2=False) -> bytes:
    """Bytes of a single-file NIfTI (header + 4-byte extension flag + voxels).

    ``patch``: header fields set *after* nibabel built the header (e.g. ``{"dim": [...]}``), so
    impossible values reach the file exactly as written.
    """
    data = small_array() if data is None else data
    klass = nib.Nifti2Image if nifti2 else nib.Nifti1Image
    hdr = klass(data, affine, dtype=data.dtype).header
    for key, value in (patch or {}).items():
        hdr[key] = value
    offset = 544 if nifti2 else 352
    hdr["vox_offset"] = offset
    block = hdr.binaryblock
    voxels = np.asarray(data).tobytes(order="F")
    return block + b"\x00" * (offset - len(block)) + voxels


def _write(path: Path, payload: bytes, gz: bool) -> Path:
    if gz:
        payload = gzip.compress(payload, compresslevel=1)
    path.write_bytes(payload)
    return path


def nifti_file(tmp: Path, name: str, gz: bool = True, **kw) -> Path:
    """Write :func:`nifti_bytes` to ``tmp/name`` (gzipped when ``gz``)."""
    return _write(tmp / name, nifti_bytes(**kw), gz)


def gzip_zeros(path: Path, prefix: bytes, n_zero: int, chunk: int = 1 << 20) -> Path:
    """A valid gzip of ``prefix`` + ``n_zero`` zero bytes, built in O(chunk) memory.

    One raw-deflate block of ``chunk`` zeros (from a fresh compressor, full flush, so it refers to
    nothing before it) is repeated; the CRC is computed by streaming zeros.
    """
    assert n_zero % chunk == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    cz = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = cz.compress(bytes(chunk)) + cz.flush(zlib.Z_FULL_FLUSH)
    tail = zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_FINISH)
    crc, zeros = zlib.crc32(prefix), bytes(chunk)
    for _ in range(n_zero // chunk):
        crc = zlib.crc32(zeros, crc)
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + head)
        for _ in range(n_zero // chunk):
            f.write(block)
        f.write(tail + struct.pack("<II", crc, (len(prefix) + n_zero) & 0xFFFFFFFF))
    return path


# --- file-system cases ------------------------------------------------------------------------
def _missing(t: Path) -> Path:
    return t / "missing.nii.gz"


def _dangling(t: Path) -> Path:
    (t / "dangling.nii.gz").symlink_to(t / "nowhere.nii.gz")
    return t / "dangling.nii.gz"


def _loop(t: Path) -> Path:
    (t / "loop_a.nii.gz").symlink_to(t / "loop_b.nii.gz")
    (t / "loop_b.nii.gz").symlink_to(t / "loop_a.nii.gz")
    return t / "loop_a.nii.gz"


def _directory(t: Path) -> Path:
    d = t / "folder.nii.gz"
    d.mkdir()
    (d / "notes.txt").write_text("not an image\n")
    return d


def _non_dicom_dir(t: Path) -> Path:
    d = t / "just_notes"
    d.mkdir()
    (d / "notes.txt").write_text("not an image\n")
    return d


def _fifo(t: Path) -> Path:
    os.mkfifo(t / "pipe.nii.gz")
    return t / "pipe.nii.gz"


def _dev_zero_link(t: Path) -> Path:
    (t / "zero.nii.gz").symlink_to("/dev/zero")
    return t / "zero.nii.gz"


def _empty(t: Path) -> Path:
    (t / "empty.nii.gz").write_bytes(b"")
    return t / "empty.nii.gz"


# --- content cases ----------------------------------------------------------------------------
def _random(t: Path) -> Path:
    return _write(t / "random.nii.gz", np.random.default_rng(0).bytes(4096), gz=False)


def _png(t: Path) -> Path:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(200)
    return _write(t / "picture.nii.gz", png, gz=False)


def _text_gz(t: Path) -> Path:
    return _write(t / "text.nii.gz", b"hello, this is a text file\n" * 40, gz=True)


def _header_only_gz(t: Path) -> Path:
    return _write(t / "header_only.nii.gz", nifti_bytes()[:200], gz=True)


def _truncated_gz(t: Path) -> Path:
    full = gzip.compress(nifti_bytes(small_array((32, 32, 16))), compresslevel=1)
    return _write(t / "truncated.nii.gz", full[: len(full) // 2], gz=False)


def _truncated_nii(t: Path) -> Path:
    return _write(t / "truncated.nii", nifti_bytes()[:1000], gz=False)


def _vox_offset_eof(t: Path) -> Path:
    return _write(t / "offset.nii", nifti_bytes()[:352], gz=False)


def _plain_as_gz(t: Path) -> Path:
    return nifti_file(t, "plain.nii.gz", gz=False)


def _gz_as_nii(t: Path) -> Path:
    return nifti_file(t, "gzipped.nii", gz=True)


def _no_extension(t: Path) -> Path:
    return nifti_file(t, "scan_without_extension", gz=True)


def _broken_magic(t: Path) -> Path:
    return nifti_file(t, "broken_magic.nii.gz", patch={"magic": b"xxx"})


def _huge_header(t: Path) -> Path:
    raw = nifti_bytes(
        small_array((2, 2, 2), np.int16), patch={"dim": [3, 30000, 30000, 30000, 1, 1, 1, 1]}
    )
    return _write(t / "huge.nii.gz", raw, gz=True)


def _gzip_bomb(t: Path) -> Path:
    """1 MB on disk, 1 GiB of uint8 zeros once decompressed (1024^3 voxels)."""
    header = nifti_bytes(
        np.zeros((1, 1, 1), np.uint8), patch={"dim": [3, 1024, 1024, 1024, 1, 1, 1, 1]}
    )
    return gzip_zeros(t / "bomb.nii.gz", header[:352], 1 << 30)


def _dim_patch(name: str, dim: list[int]) -> Make:
    return lambda t: nifti_file(t, name, patch={"dim": dim})


def _datatype_9999(t: Path) -> Path:
    return nifti_file(t, "datatype9999.nii.gz", patch={"datatype": 9999})


def _nifti_of(name: str, data_fn: Callable[[], np.ndarray], **kw) -> Make:
    return lambda t: nifti_file(t, name, data=data_fn(), **kw)


def _full(value: float) -> Callable[[], np.ndarray]:
    return lambda: np.full((8, 7, 6), value, np.float32)


def _typed(dtype) -> Callable[[], np.ndarray]:
    return lambda: small_array(dtype=dtype)


_vector_5d = _nifti_of(
    "vec.nii.gz", lambda: small_array((8, 7, 6, 1, 3)), patch={"intent_code": 1007}
)


def _with_nans() -> np.ndarray:
    a = small_array()
    a[0, 0, 0], a[1, 1, 1], a[2, 2, 2] = np.nan, np.inf, -np.inf
    return a


def _rgb24(t: Path) -> Path:
    rgb = np.zeros((6, 5, 4), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = 7
    return _write(t / "rgb.nii.gz", nifti_bytes(rgb), gz=True)


def _sform(name: str, affine: np.ndarray, **extra) -> Make:
    """Codes 0 for the qform and 2 for the sform, so ``affine`` is what readers use."""
    srows = {"srow_x": affine[0], "srow_y": affine[1], "srow_z": affine[2]}
    patch = {"qform_code": 0, "sform_code": 2, **srows, **extra}
    return lambda t: nifti_file(t, name, patch=patch)


_SHEARED = np.array([[2.0, 0.8, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])
_SINGULAR = np.array([[2.0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])
_FAR = np.array([[2.0, 0, 0, 1e20], [0, 2.0, 0, 0], [0, 0, 2.0, 0], [0, 0, 0, 1]])


def _pixdim(name: str, value: float) -> Make:
    patch = {"qform_code": 0, "sform_code": 0, "pixdim": [1, 2, value, 2, 1, 1, 1, 1]}
    return lambda t: nifti_file(t, name, patch=patch)


# --- NRRD / MetaImage -------------------------------------------------------------------------
def _itk_file(t: Path, name: str, compress: bool = False, vector: bool = False) -> Path:
    import SimpleITK as sitk

    arr = small_array((6, 7, 8), np.int16)
    if vector:
        arr = np.stack([arr] * 3, axis=-1)
    img = sitk.GetImageFromArray(arr, isVector=vector)
    img.SetSpacing((1.0, 2.0, 3.0))
    sitk.WriteImage(img, str(t / name), compress)
    return t / name


def _nrrd_truncated(t: Path) -> Path:
    p = _itk_file(t, "truncated.nrrd")
    p.write_bytes(p.read_bytes()[:-200])
    return p


def _nrrd_bad_type(t: Path) -> Path:
    p = _itk_file(t, "badtype.nrrd")
    p.write_bytes(p.read_bytes().replace(b"type: short", b"type: banana", 1))
    return p


def _nrrd_bad_magic(t: Path) -> Path:
    p = _itk_file(t, "badmagic.nrrd")
    p.write_bytes(b"NRDD" + p.read_bytes()[4:])
    return p


def _mha_truncated(t: Path) -> Path:
    p = _itk_file(t, "truncated.mha")
    p.write_bytes(p.read_bytes()[:-100])
    return p


def _mha_vector(t: Path) -> Path:
    return _itk_file(t, "vector.mha", vector=True)


def _mhd_missing_raw(t: Path) -> Path:
    p = _itk_file(t, "lonely.mhd")
    (t / "lonely.raw").unlink()
    return p


# --- DICOM (pydicom's shipped files) ----------------------------------------------------------
def pydicom_file(rel: str) -> Path:
    """Path of a file or folder shipped in ``pydicom/data/test_files``."""
    from pydicom.data import get_testdata_file

    return Path(get_testdata_file("CT_small.dcm")).parent / rel


CT5N = "dicomdirtests/98892001/CT5N"  # clean 5-slice CT, 2.5 mm
CT2 = "dicomdirtests/77654033/CT2"  # 4 slices, one 102 mm gap
MR700 = "dicomdirtests/98892003/MR700"  # 7 slices, rotating orientation


def copy_series(t: Path, name: str, *sources: str, skip: tuple[str, ...] = ()) -> Path:
    """Copy the files of pydicom test series into ``t/name`` (minus ``skip``)."""
    d = t / name
    d.mkdir()
    for rel in sources:
        for f in sorted(pydicom_file(rel).iterdir()):
            if f.name not in skip:
                shutil.copy(f, d / f.name)
    return d


def write_dicom_series(
    folder: Path,
    array: np.ndarray,
    affine: np.ndarray,
    positions: np.ndarray | None = None,
    series_uid: str = "1.2.826.0.1.3680043.2.1125.1.1",
    modality: str = "MR",
) -> Path:
    """Write ``array`` (X, Y, Z) int16 on the RAS ``affine`` as one DICOM file per slice.

    ``positions``: optional (Z, 3) LPS ImagePositionPatient per slice (to build bad stacks).
    """
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    flip = np.diag([-1.0, -1.0, 1.0])
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = flip @ (affine[:3, :3] / spacing)
    for k in range(array.shape[2]):
        img = sitk.GetImageFromArray(np.ascontiguousarray(array[:, :, k].T)[None].astype(np.int16))
        img.SetSpacing(tuple(spacing.tolist()))
        img.SetDirection(tuple(direction.ravel().tolist()))
        pos = flip @ (affine @ [0, 0, k, 1.0])[:3] if positions is None else positions[k]
        img.SetOrigin(tuple(float(v) for v in pos))
        tags = {
            "0020|000e": series_uid,
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1.2",
            "0008|0060": modality,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in pos),
            "0020|0037": "\\".join(f"{v:.6f}" for v in [*direction[:, 0], *direction[:, 1]]),
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0008|0018": f"{series_uid}.{k + 1}",
        }
        for key, value in tags.items():
            img.SetMetaData(key, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(img)
    return folder


def _dicom_bad_stack(name: str, shift_mm: float, duplicate: bool) -> Make:
    """A synthetic 4-slice series: slice 2 at slice 1's position, or slices shifted in-plane."""

    def make(t: Path) -> Path:
        affine = np.diag([0.8, 0.8, 2.0, 1.0])
        pos = np.array([[0.0, 0.0, 2.0 * k] for k in range(4)])
        pos[:, 0] += shift_mm * np.arange(4)
        if duplicate:
            pos[2] = pos[1]
        return write_dicom_series(t / name, small_array((6, 5, 4), np.int16), affine, pos)

    return make


def _dicom_empty(t: Path) -> Path:
    (t / "empty_dicom").mkdir()
    return t / "empty_dicom"


def _dicom_truncated(t: Path) -> Path:
    d = t / "truncated_dicom"
    d.mkdir()
    shutil.copy(pydicom_file("MR_truncated.dcm"), d / "MR_truncated.dcm")
    return d


def _dicom_gap(t: Path) -> Path:
    return copy_series(t, "ct5n_gap", CT5N, skip=("2693",))


def _dicom_cut_slice(t: Path) -> Path:
    d = copy_series(t, "ct5n_cut", CT5N)
    raw = (d / "2693").read_bytes()
    (d / "2693").write_bytes(raw[: len(raw) // 2])
    return d


def _dicom_with(name: str, source: str | None = None, text: bytes | None = None) -> Make:
    """A folder holding one non-image file: a shipped pydicom file or ``text`` named ``.dcm``."""

    def make(t: Path) -> Path:
        d = t / name
        d.mkdir()
        if source is not None:
            shutil.copy(pydicom_file(source), d / source)
        else:
            (d / "slice001.dcm").write_bytes(text or b"")
        return d

    return make


# --- other formats nibabel reads but we refuse ------------------------------------------------
def _mgz(t: Path) -> Path:
    nib.save(nib.MGHImage(small_array(), _AFFINE), t / "brain.mgz")
    return t / "brain.mgz"


def _pair(klass, name: str, drop_img: bool = False) -> Make:
    """An Analyze / NIfTI ``.hdr`` + ``.img`` pair; returns the ``.hdr`` (``.img`` deleted when
    ``drop_img``)."""

    def make(t: Path) -> Path:
        nib.save(klass(small_array(), _AFFINE), t / f"{name}.hdr")
        if drop_img:
            (t / f"{name}.img").unlink()
        return t / f"{name}.hdr"

    return make


# --- detached headers: the voxel file a header names (issue 15: server file disclosure) -------
_RAW = small_array((8, 7, 6), np.int16).tobytes(order="F")


def _secret(t: Path) -> Path:
    """A readable file outside the case folder: what a hostile header tries to show."""
    secret = t.parent / f"{t.name}_secret.raw"
    secret.write_bytes(_RAW)
    return secret


def _mhd_naming(name: str, data: Callable[[Path], str], header_size: bool = False) -> Make:
    """A ``name`` (.mhd or .mha) header whose ``ElementDataFile`` is ``data(t)``."""

    def make(t: Path) -> Path:
        extra = "HeaderSize = -1\n" if header_size else ""
        text = (
            "ObjectType = Image\nNDims = 3\nDimSize = 8 7 6\nElementSpacing = 1 2 3\n"
            f"ElementType = MET_SHORT\n{extra}ElementDataFile = {data(t)}\n"
        )
        (t / name).write_text(text, encoding="ascii")
        return t / name

    return make


def _nrrd_naming(name: str, data: Callable[[Path], str]) -> Make:
    """A detached NRRD header ``name`` whose ``data file:`` field is ``data(t)``."""

    def make(t: Path) -> Path:
        text = (
            "NRRD0004\ntype: short\ndimension: 3\nsizes: 8 7 6\nspacings: 1 2 3\n"
            f"endian: little\nencoding: raw\ndata file: {data(t)}\n\n"
        )
        (t / name).write_text(text, encoding="ascii")
        return t / name

    return make


def _outside_absolute(t: Path) -> str:
    return str(_secret(t))


def _outside_climbing(t: Path) -> str:
    return f"../{_secret(t).name}"


def _link_leading_out(t: Path) -> str:
    (t / "data.raw").symlink_to(_secret(t))
    return "data.raw"


def _fifo_data(t: Path) -> str:
    os.mkfifo(t / "data.raw")
    return "data.raw"


def _urandom_link(t: Path) -> str:
    (t / "data.raw").symlink_to("/dev/urandom")
    return "data.raw"


def _long_header(t: Path) -> Path:
    """An NRRD whose text header does not end in the first 64 KiB (it could hide a data file)."""
    head = "NRRD0004\ntype: short\ndimension: 3\nsizes: 8 7 6\n"
    (t / "long.nrrd").write_text(head + "# padding\n" * 8000, encoding="ascii")
    return t / "long.nrrd"


DETACHED_CASES: list[tuple[str, Make, str, str]] = [
    (f"{kind}_{case}", maker(f"hostile.{ext}", data), code, needle)
    for kind, ext, maker in (("mhd", "mhd", _mhd_naming), ("nrrd", "nrrd", _nrrd_naming))
    for case, data, code, needle in (
        ("data_absolute", _outside_absolute, "not_allowed", "lies outside the header's folder"),
        ("data_climbing", _outside_climbing, "not_allowed", "lies outside the header's folder"),
        ("data_link_out", _link_leading_out, "not_allowed", "lies outside the header's folder"),
        ("data_fifo", _fifo_data, "not_regular_file", "not a regular file (it is a FIFO"),
        ("data_urandom", _urandom_link, "not_allowed", "lies outside the header's folder"),
        ("data_dev_absolute", lambda t: "/dev/urandom", "not_allowed", "outside the header's"),
        ("data_list", lambda t: "LIST", "unsupported_format", "split over several files"),
        ("data_pattern", lambda t: "s%03d.raw 1 6 1", "unsupported_format", "several files"),
    )
] + [
    (
        "mha_headersize_absolute",
        _mhd_naming("sized.mha", _outside_absolute, header_size=True),
        "not_allowed",
        "lies outside the header's folder",
    ),
    ("nrrd_header_over_64k", _long_header, "invalid_header", "no end of the text header"),
]


def _mhd_dimsize_lies(t: Path) -> Path:
    """A valid ``.mhd`` whose header claims 10x more slices than its ``.raw`` holds."""
    p = _itk_file(t, "lies.mhd")
    text = p.read_text(encoding="ascii")
    assert "DimSize = 8 7 6" in text
    p.write_text(text.replace("DimSize = 8 7 6", "DimSize = 8 7 60"), encoding="ascii")
    return p


CASES: list[tuple[str, Make, str, str]] = [
    ("missing", _missing, "not_found", "not found"),
    ("dangling_symlink", _dangling, "not_found", "not found (dangling symlink"),
    ("symlink_loop", _loop, "not_found", "not found (symlink loop)"),
    (
        "directory_named_nii_gz",
        _directory,
        "not_regular_file",
        "not a regular file (it is a folder)",
    ),
    ("directory_not_dicom", _non_dicom_dir, "dicom_no_series", "no DICOM series found"),
    ("fifo", _fifo, "not_regular_file", "not a regular file (it is a FIFO"),
    ("dev_zero_symlink", _dev_zero_link, "not_regular_file", "not a regular file (it is a device)"),
    (
        "dev_zero",
        lambda t: Path("/dev/zero"),
        "not_regular_file",
        "not a regular file (it is a device)",
    ),
    ("empty_file", _empty, "empty_file", "empty file (0 bytes)"),
    ("random_bytes", _random, "unknown_format", "not a NIfTI file"),
    ("png_renamed", _png, "unknown_format", "not a NIfTI file (content: a PNG image)"),
    ("text_in_gzip", _text_gz, "unknown_format", "not a NIfTI file (content: gzip-compressed text"),
    ("header_only_gz", _header_only_gz, "truncated", "file is truncated or corrupt"),
    ("truncated_nii_gz", _truncated_gz, "truncated", "file is truncated or corrupt"),
    ("truncated_nii", _truncated_nii, "truncated", "file is truncated or corrupt"),
    ("vox_offset_past_eof", _vox_offset_eof, "truncated", "file is truncated or corrupt"),
    ("plain_named_nii_gz", _plain_as_gz, "extension_mismatch", "rename it to *.nii"),
    ("gzip_named_nii", _gz_as_nii, "extension_mismatch", "rename it to *.nii.gz"),
    ("no_extension", _no_extension, "extension_mismatch", "rename it to *.nii.gz"),
    ("broken_magic", _broken_magic, "invalid_header", "refusing to read it as Analyze"),
    ("header_30000_cubed", _huge_header, "too_large", "volume too large"),
    ("gzip_bomb_1gib", _gzip_bomb, "too_large", "volume too large (4 GiB > limit 2 GiB"),
    (
        "dim0_zero",
        _dim_patch("dim0.nii.gz", [0, 8, 7, 6, 1, 1, 1, 1]),
        "invalid_header",
        "invalid header: dim[0]=0",
    ),
    (
        "dim1_zero",
        _dim_patch("dim1.nii.gz", [3, 0, 7, 6, 1, 1, 1, 1]),
        "invalid_header",
        "invalid header: dim[1]=0",
    ),
    (
        "negative_dim",
        _dim_patch("negdim.nii.gz", [3, 8, -7, 6, 1, 1, 1, 1]),
        "invalid_header",
        "invalid header: dim[2]=-7",
    ),
    (
        "dim0_eight",
        _dim_patch("dim8.nii.gz", [8, 8, 7, 6, 1, 1, 1, 1]),
        "invalid_header",
        "invalid header: dim[0]=8",
    ),
    (
        "datatype_9999",
        _datatype_9999,
        "invalid_header",
        "invalid header: unknown datatype code 9999",
    ),
    (
        "4d_t5",
        _nifti_of("t5.nii.gz", lambda: small_array((8, 7, 6, 5))),
        "multi_volume",
        "choose one with --volume N",
    ),
    ("5d_vector", _vector_5d, "unsupported_dtype", "unsupported voxel type"),
    ("nan_inf", _nifti_of("nan.nii.gz", _with_nans), "non_finite", "non-finite voxels (3)"),
    ("all_nan", _nifti_of("allnan.nii.gz", _full(np.nan)), "non_finite", "non-finite"),
    ("constant", _nifti_of("constant.nii.gz", _full(5.0)), "constant_image", "image is constant"),
    ("rgb24", _rgb24, "unsupported_dtype", "unsupported voxel type: RGB24"),
    (
        "complex64",
        _nifti_of("complex.nii.gz", _typed(np.complex64)),
        "unsupported_dtype",
        "unsupported voxel type: complex64",
    ),
    (
        "uint64",
        _nifti_of("u64.nii.gz", _typed(np.uint64)),
        "unsupported_dtype",
        "unsupported voxel type: uint64",
    ),
    (
        "sheared_affine",
        _sform("sheared.nii.gz", _SHEARED),
        "invalid_geometry",
        "invalid geometry: voxel axes are sheared",
    ),
    (
        "singular_affine",
        _sform("singular.nii.gz", _SINGULAR),
        "invalid_geometry",
        "invalid geometry: singular affine",
    ),
    ("origin_1e20", _sform("far.nii.gz", _FAR), "invalid_geometry", "invalid geometry: origin"),
    (
        "pixdim_nan",
        _pixdim("pixnan.nii.gz", float("nan")),
        "invalid_geometry",
        "invalid geometry: pixdim",
    ),
    ("pixdim_zero", _pixdim("pixzero.nii.gz", 0.0), "invalid_geometry", "invalid geometry: pixdim"),
    (
        "pixdim_negative",
        _pixdim("pixneg.nii.gz", -2.0),
        "invalid_geometry",
        "invalid geometry: pixdim",
    ),
    ("nrrd_truncated", _nrrd_truncated, "truncated", "file is truncated or corrupt"),
    ("nrrd_bad_type", _nrrd_bad_type, "invalid_header", "invalid header"),
    ("nrrd_bad_magic", _nrrd_bad_magic, "unknown_format", "not an NRRD file"),
    ("mha_truncated", _mha_truncated, "truncated", "file is truncated or corrupt"),
    ("mha_vector", _mha_vector, "unsupported_dtype", "unsupported voxel type"),
    ("mhd_missing_raw", _mhd_missing_raw, "not_found", "not found: voxel data file 'lonely.raw'"),
    ("dicom_empty_dir", _dicom_empty, "dicom_no_series", "no DICOM series found"),
    ("dicom_missing_slice", _dicom_gap, "dicom_nonuniform", "non-uniform slice spacing"),
    (
        "dicom_nonuniform_ct2",
        lambda t: copy_series(t, "ct2", CT2),
        "dicom_nonuniform",
        "non-uniform slice spacing",
    ),
    (
        "dicom_nonuniform_mr700",
        lambda t: copy_series(t, "mr700", MR700),
        "dicom_nonuniform",
        "non-uniform slice orientation",
    ),
    (
        "dicom_two_series",
        lambda t: copy_series(t, "two", CT5N, CT2),
        "dicom_multiple_series",
        "choose one with --series-uid",
    ),
    (
        "dicom_duplicate_positions",
        _dicom_bad_stack("dup", 0.0, True),
        "dicom_nonuniform",
        "duplicate slice positions",
    ),
    (
        "dicom_gantry_tilt",
        _dicom_bad_stack("tilt", 0.7, False),
        "dicom_nonuniform",
        "shifted in-plane",
    ),
    (
        "dicom_truncated_file",
        _dicom_truncated,
        "dicom_corrupt",
        "truncated or corrupt: MR_truncated.dcm",
    ),
    ("dicom_truncated_slice", _dicom_cut_slice, "dicom_corrupt", "truncated or corrupt: 2693"),
    # formats nibabel reads but we refuse, header lies, degenerate images (B.1, B.3)
    ("mgz", _mgz, "unknown_format", "not a NIfTI/NRRD/MetaImage file"),
    ("analyze_pair", _pair(nib.AnalyzeImage, "analyze"), "invalid_header", "as Analyze"),
    (
        "analyze_img_missing",
        _pair(nib.AnalyzeImage, "lonely", drop_img=True),
        "invalid_header",
        "as Analyze",
    ),
    ("nifti_pair", _pair(nib.Nifti1Pair, "pair"), "unknown_format", "convert it to .nii.gz"),
    ("mhd_dimsize_lies", _mhd_dimsize_lies, "truncated", "file is truncated or corrupt"),
    (
        "one_voxel",
        _nifti_of("voxel.nii.gz", lambda: np.ones((1, 1, 1), np.float32)),
        "constant_image",
        "image is constant",
    ),
    (
        "dicom_rtstruct_only",
        _dicom_with("rt", "rtstruct.dcm"),
        "dicom_no_series",
        "no DICOM series",
    ),
    ("dicom_no_meta", _dicom_with("nometa", "no_meta.dcm"), "dicom_no_series", "no DICOM series"),
    (
        "dicom_text_named_dcm",
        _dicom_with("textdcm", text=b"this is a text file, not DICOM\n" * 20),
        "dicom_no_series",
        "no DICOM series",
    ),
] + DETACHED_CASES


def make_all(tmp_dir: str | os.PathLike[str]) -> dict[str, tuple[Path, str]]:
    """Build every case under ``tmp_dir`` (one sub-folder each): ``{case_id: (path, code)}``."""
    out = {}
    for case_id, make, code, _ in CASES:
        sub = Path(tmp_dir) / case_id
        sub.mkdir(parents=True, exist_ok=True)
        out[case_id] = (make(sub), code)
    return out


# --- memory bombs: what the memory limit refuses from the header (issue 15, item 3) -----------
# Each ``(case_id, make, expected_code, needle)`` is loaded with ``MEDSEG_MAX_MEMORY=4G`` and
# ``on_header=medseg.inference.memory.prompted_guard()``: under the 2 GiB loader guard the
# prompted pipeline would need ~6 GiB (12 bytes per voxel), so it is refused before a byte is
# decompressed (``not_enough_memory``); over the guard the loader's ``too_large`` comes first.
_UNDER_GUARD = [3, 1024, 1024, 511, 1, 1, 1, 1]  # 2 GiB - 4 MiB as float32
_AT_GUARD = [3, 1024, 1024, 512, 1, 1, 1, 1]  # exactly 2 GiB as float32: not over the guard
_OVER_GUARD = [3, 1024, 1024, 513, 1, 1, 1, 1]


def _header(dtype, dim: list[int]) -> bytes:
    return nifti_bytes(np.zeros((1, 1, 1), dtype), patch={"dim": dim})[:352]


def _bomb(name: str, dtype, dim: list[int]) -> Make:
    """A real gzip bomb: ~1 KB per MiB of zeros (2 GiB of float32 in ~2 MB, as reported)."""
    n_bytes = int(np.prod(dim[1:4])) * np.dtype(dtype).itemsize
    return lambda t: gzip_zeros(t / name, _header(dtype, dim), n_bytes)


def _promise(name: str, dtype, dim: list[int]) -> Make:
    """A header that promises ``dim`` over 4 KiB of voxels: only a header check can see it."""
    return lambda t: _write(t / name, _header(dtype, dim) + bytes(4096), gz=True)


def _nrrd_promise(t: Path) -> Path:
    head = b"NRRD0004\ntype: float\ndimension: 3\nsizes: 1024 1024 511\nencoding: gzip\n"
    (t / "bomb.nrrd").write_bytes(head + b"endian: little\n\n" + gzip.compress(bytes(4096)))
    return t / "bomb.nrrd"


_REFUSED = "not enough memory: prompted segmentation needs about"
MEMORY_BOMBS: list[tuple[str, Make, str, str]] = [
    ("bomb_float32_under_guard", _bomb("f32.nii.gz", np.float32, _UNDER_GUARD),
     "not_enough_memory", f"{_REFUSED} 6.99 GiB"),  # 12 B/voxel + 1 GiB embedding cache
    ("bomb_uint8_at_guard", _bomb("u8.nii.gz", np.uint8, _AT_GUARD),
     "not_enough_memory", f"{_REFUSED} 7.00 GiB"),
    ("bomb_int16_promise_under_guard", _promise("i16.nii.gz", np.int16, _UNDER_GUARD),
     "not_enough_memory", "4.00 GiB available (MEDSEG_MAX_MEMORY); crop or downsample"),
    ("bomb_nrrd_promise_under_guard", _nrrd_promise, "not_enough_memory", _REFUSED),
    ("bomb_float32_over_guard", _promise("over.nii.gz", np.float32, _OVER_GUARD),
     "too_large", "volume too large (2 GiB > limit 2 GiB"),
]  # fmt: skip
