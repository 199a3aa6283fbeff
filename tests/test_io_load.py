"""load_volume: the bad-input catalogue, resource limits, labels, NaN policy, 4-D, forms."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import InputError
from medseg.io import Volume, check_same_grid, load_volume

ROOT = Path(__file__).resolve().parents[1]


def _load_catalogue():
    name = "medseg_tests_bad_inputs"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("bad_inputs.py")
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


bad = _load_catalogue()
AFFINE = np.array([[-2.0, 0, 0, 30], [0, 2.0, 0, -20], [0, 0, 3.0, 10], [0, 0, 0, 1]])


def _save_nifti(path: Path, data: np.ndarray, affine=AFFINE, **header) -> Path:
    img = nib.Nifti1Image(data, affine, dtype=data.dtype)
    for key, value in header.items():
        img.header[key] = value
    nib.save(img, path)
    return path


# --- the catalogue ----------------------------------------------------------------------------
@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("case_id", "make", "code", "needle"), bad.CASES, ids=[c[0] for c in bad.CASES]
)
def test_catalogue_case_raises_its_code(tmp_path, capfd, case_id, make, code, needle):
    path = make(tmp_path)
    capfd.readouterr()
    start = time.monotonic()
    with pytest.raises(InputError) as info:
        load_volume(path)
    assert time.monotonic() - start < 5
    err = info.value
    assert err.code == code, str(err)
    assert needle in err.message, (needle, err.message)
    assert err.exit_code == 2
    assert err.path == str(path)
    text = str(err)
    assert "\n" not in text and "Traceback" not in text and "sitk::ERROR" not in text
    assert len(text) < 400 + len(str(path))
    assert capfd.readouterr() == ("", ""), "a library printed to stdout/stderr"


def test_catalogue_covers_the_reliability_rows():
    ids = {c[0] for c in bad.CASES}
    assert len(ids) == len(bad.CASES)
    for needed in (
        "missing",
        "fifo",
        "dev_zero",
        "gzip_bomb_1gib",
        "header_30000_cubed",
        "broken_magic",
        "dicom_two_series",
        "dicom_missing_slice",
        "rgb24",
        "mgz",
        "analyze_pair",
        "analyze_img_missing",
        "mhd_dimsize_lies",
        "one_voxel",
        "dicom_rtstruct_only",
        "dicom_no_meta",
        "dicom_text_named_dcm",
    ):
        assert needed in ids


def test_make_all_builds_every_case(tmp_path):
    built = bad.make_all(tmp_path)
    assert set(built) == {c[0] for c in bad.CASES}
    assert all(isinstance(p, Path) for p, _ in built.values())
    assert (tmp_path / "gzip_bomb_1gib" / "bomb.nii.gz").stat().st_size < 2_000_000


def test_mode_000_is_permission_denied(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads mode-000 files")
    p = _save_nifti(tmp_path / "locked.nii.gz", bad.small_array())
    p.chmod(0)
    with pytest.raises(InputError) as info:
        load_volume(p)
    assert info.value.code == "permission"


def test_permission_error_on_open_is_reported(tmp_path, monkeypatch):
    """Runs as root too: the mapping of EACCES on open (the mode-000 case) to ``permission``."""
    p = _save_nifti(tmp_path / "locked.nii.gz", bad.small_array())
    real_open = os.open

    def deny(path, *args, **kwargs):
        if Path(path) == p:
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(InputError, match="permission denied") as info:
        load_volume(p)
    assert info.value.code == "permission"


_CHILD = """
import os, resource, sys, time
kind = sys.argv[1]
if kind == "as":
    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))
from medseg.errors import InputError
from medseg.io import Volume, check_same_grid, load_volume
for path in sys.argv[2:]:
    t = time.monotonic()
    try:
        load_volume(path, max_bytes=int(os.environ.get("MAX_BYTES", 2**31)))
        print("OK", path)
    except InputError as e:
        print(e.code, round(time.monotonic() - t, 2))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so it would report the
# peak of the (large) pytest parent that forked this child.
with open("/proc/self/status", encoding="ascii") as f:
    hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print("RSS", hwm_kb // 1024)
"""


def _child(kind: str, *paths: Path, env=None, timeout=60) -> list[str]:
    run = subprocess.run(
        [sys.executable, "-c", _CHILD, kind, *map(str, paths)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.split("\n")


def test_bomb_and_huge_header_refused_under_rlimit_as(tmp_path):
    bomb = bad._gzip_bomb(tmp_path)
    huge = bad._huge_header(tmp_path)
    lines = _child("as", bomb, huge)
    assert lines[0].startswith("too_large") and lines[1].startswith("too_large"), lines
    assert float(lines[0].split()[1]) < 2 and float(lines[1].split()[1]) < 2
    rss = int(lines[2].split()[1])
    assert rss < 500, f"peak RSS {rss} MB"


def test_bomb_with_a_high_limit_fails_cleanly_on_memory_error(tmp_path):
    """max_bytes raised past RAM: the MemoryError of the allocation becomes too_large."""
    bomb = bad._gzip_bomb(tmp_path)
    lines = _child("as", bomb, env={"MAX_BYTES": str(2**40)}, timeout=120)
    assert lines[0].startswith("too_large"), lines


@pytest.mark.parametrize("case", ["fifo", "dev_zero_symlink"])
def test_fifo_and_device_return_within_2s(tmp_path, case):
    path = dict((c[0], c[1]) for c in bad.CASES)[case](tmp_path)
    start = time.monotonic()
    lines = _child("plain", path, timeout=10)
    assert lines[0].startswith("not_regular_file"), lines
    assert float(lines[0].split()[1]) < 2
    assert time.monotonic() - start < 10


def test_import_is_light_and_nifti_never_touches_simpleitk(tmp_path):
    p = _save_nifti(tmp_path / "ok.nii.gz", bad.small_array())
    code = (
        "import sys, medseg.io; print('SimpleITK' in sys.modules, 'torch' in sys.modules); "
        f"medseg.io.load_volume({str(p)!r}); print('SimpleITK' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        cwd=ROOT,
    )
    assert out.stdout.split() == ["False", "False", "False"], out.stderr


# --- good NIfTI -------------------------------------------------------------------------------
def test_plain_nifti_loads_as_float32_with_meta(tmp_path):
    data = bad.small_array(dtype=np.int16)
    p = _save_nifti(tmp_path / "ok.nii.gz", data)
    vol = load_volume(p)
    assert vol.array.dtype == np.float32 and vol.array.shape == data.shape
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_allclose(vol.affine, AFFINE)
    assert vol.meta["format"] == "nifti-gz" and vol.meta["reader"] == "nibabel"
    assert vol.meta["path"] == str(p) and vol.meta["warnings"] == []


def test_uppercase_extension_and_big_endian(tmp_path):
    data = bad.small_array(dtype=np.dtype(">i2"))
    p = _save_nifti(tmp_path / "SCAN.NII.GZ", data)
    np.testing.assert_array_equal(load_volume(p).array, data.astype(np.float32))


def test_nan_policy_zero_replaces_and_warns(tmp_path):
    p = bad._nifti_of("nan.nii.gz", bad._with_nans)(tmp_path)
    vol = load_volume(p, nan_policy="zero")
    assert np.isfinite(vol.array).all()
    assert vol.array[0, 0, 0] == 0 and vol.array[1, 1, 1] == 0
    assert any("3 non-finite" in w for w in vol.meta["warnings"])


def test_nan_policy_zero_still_refuses_all_nan(tmp_path):
    p = bad._nifti_of("allnan.nii.gz", lambda: np.full((4, 4, 4), np.nan, np.float32))(tmp_path)
    with pytest.raises(InputError, match="non-finite") as info:
        load_volume(p, nan_policy="zero")
    assert info.value.code == "non_finite"


@pytest.mark.parametrize("slope", [1e6, 0.0, float("nan"), float("inf")])
def test_scl_slope(tmp_path, slope):
    data = bad.small_array(dtype=np.int16)
    p = _save_nifti(tmp_path / "slope.nii", data)
    raw = bytearray(p.read_bytes())
    raw[112:120] = np.array([slope, 0.0], dtype="<f4").tobytes()  # scl_slope, scl_inter
    p.write_bytes(bytes(raw))
    vol = load_volume(p)
    expected = data * np.float32(slope) if slope == 1e6 else data
    np.testing.assert_allclose(vol.array, expected, rtol=1e-6)


def test_4d_with_t1_is_squeezed(tmp_path):
    data = bad.small_array((8, 7, 6, 1))
    vol = load_volume(_save_nifti(tmp_path / "t1.nii.gz", data))
    assert vol.array.shape == (8, 7, 6)


def test_volume_index_selects_one_volume(tmp_path):
    data = bad.small_array((8, 7, 6, 5))
    p = _save_nifti(tmp_path / "t5.nii.gz", data)
    vol = load_volume(p, volume_index=3)
    np.testing.assert_array_equal(vol.array, data[..., 3])
    with pytest.raises(InputError, match="--volume") as info:
        load_volume(p, volume_index=5)
    assert info.value.code == "multi_volume"
    assert load_volume(_save_nifti(tmp_path / "3d.nii", data[..., 0]), volume_index=0)


def test_2d_nifti_is_a_single_slice(tmp_path):
    data = bad.small_array((8, 7))
    vol = load_volume(_save_nifti(tmp_path / "slice.nii.gz", data))
    assert vol.array.shape == (8, 7, 1)
    np.testing.assert_array_equal(vol.array[..., 0], data)


_FMAX = np.finfo(np.float32).max


@pytest.mark.parametrize(
    ("case", "patch", "data", "warning"),
    [
        ("sizeof_hdr_999", {"sizeof_hdr": 999}, None, "sizeof_hdr should be 348"),
        ("bitpix_mismatch", {"bitpix": 8}, None, None),  # nibabel ignores bitpix; so do we
        ("float32_max", {}, np.where(bad.small_array() > 50, _FMAX, -_FMAX), None),
        ("z_1_volume", {}, bad.small_array((8, 7, 1)), None),
    ],
)
@pytest.mark.parametrize("gz", [True, False], ids=["nii_gz", "nii"])
def test_odd_but_valid_headers_load(tmp_path, case, patch, data, warning, gz):
    """RELIABILITY B.1 rows that every library loads: so do we, with the same voxels."""
    data = bad.small_array() if data is None else data.astype(np.float32)
    path = bad.nifti_file(tmp_path, case + (".nii.gz" if gz else ".nii"), gz=gz, data=data,
                          patch=patch)  # fmt: skip
    vol = load_volume(path)
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_allclose(vol.affine, AFFINE)
    if warning is None:
        assert vol.meta["warnings"] == []
    else:
        assert any(warning in w for w in vol.meta["warnings"]), vol.meta["warnings"]


def test_jpeg2000_dicom_loads_like_the_uncompressed_file(tmp_path):
    """pydicom's lossless JPEG 2000 copy of MR_small decodes (GDCM) to the same voxels/grid."""
    folders = {}
    for name in ("MR_small.dcm", "MR_small_jp2klossless.dcm"):
        folders[name] = tmp_path / name.removesuffix(".dcm")
        folders[name].mkdir()
        (folders[name] / name).write_bytes(bad.pydicom_file(name).read_bytes())
    plain = load_volume(folders["MR_small.dcm"])
    j2k = load_volume(folders["MR_small_jp2klossless.dcm"])
    assert j2k.array.shape == (64, 64, 1)
    np.testing.assert_array_equal(j2k.array, plain.array)
    np.testing.assert_allclose(j2k.affine, plain.affine)
    assert float(j2k.array.max()) > float(j2k.array.min())


def test_nifti2_loads(tmp_path):
    data = bad.small_array()
    p = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti2Image(data, AFFINE), p)
    vol = load_volume(p)
    assert vol.meta["nifti_version"] == 2
    np.testing.assert_allclose(vol.affine, AFFINE)


def test_qform_differs_from_sform_uses_sform_warns_and_keeps_both(tmp_path):
    data = bad.small_array()
    img = nib.Nifti1Image(data, None)
    qform = np.diag([2.0, 2.0, 3.0, 1.0])
    sform = np.array([[-2.0, 0, 0, 10], [0, -2.0, 0, 20], [0, 0, 3.0, 30], [0, 0, 0, 1]])
    img.header.set_qform(qform, code=1)
    img.header.set_sform(sform, code=2)
    p = tmp_path / "forms.nii.gz"
    nib.save(img, p)
    vol = load_volume(p)
    np.testing.assert_allclose(vol.affine, sform)
    np.testing.assert_allclose(vol.qform, qform, atol=1e-6)
    np.testing.assert_allclose(vol.sform, sform)
    assert (vol.qform_code, vol.sform_code) == (1, 2)
    assert any("using the sform" in w for w in vol.meta["warnings"])


def test_codes_zero_keep_no_forms(tmp_path):
    img = nib.Nifti1Image(bad.small_array(), None)
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    p = tmp_path / "noforms.nii"
    nib.save(img, p)
    vol = load_volume(p)
    assert vol.qform is None and vol.sform is None and vol.qform_code == vol.sform_code == 0
    assert np.isfinite(vol.affine).all()


# --- labels -----------------------------------------------------------------------------------
def _label_file(tmp_path, values, dtype=np.float32) -> Path:
    data = np.zeros((6, 5, 4), dtype=dtype)
    data.flat[: len(values)] = values
    return _save_nifti(tmp_path / "label.nii.gz", data)


@pytest.mark.parametrize(
    ("values", "dtype", "classes", "listed"),
    [
        ([1, 0.5, 2.25], np.float32, None, ["0.5", "2.25"]),
        ([1, -1, -3], np.int16, None, ["-3", "-1"]),
        ([1, 2, 41, 255], np.uint8, [0, 1, 2], ["41", "255"]),
        ([1, np.nan], np.float32, None, ["non-finite"]),
    ],
)
def test_bad_labels_list_the_values(tmp_path, values, dtype, classes, listed):
    with pytest.raises(InputError) as info:
        load_volume(_label_file(tmp_path, values, dtype), role="label", classes=classes)
    assert info.value.code == "bad_labels"
    for text in listed:
        assert text in info.value.message


@pytest.mark.parametrize(("top", "dtype"), [(3, np.uint8), (300, np.uint16), (70000, np.int32)])
def test_label_dtype_fits_the_values(tmp_path, top, dtype):
    vol = load_volume(_label_file(tmp_path, [1, top], np.float64), role="label")
    assert vol.array.dtype == dtype and vol.array.max() == top
    assert vol.meta["warnings"] == []


def test_empty_and_constant_labels_are_fine(tmp_path):
    vol = load_volume(_label_file(tmp_path, [], np.uint8), role="label", classes=[0, 1])
    assert any("empty" in w for w in vol.meta["warnings"])
    assert vol.array.dtype == np.uint8


def test_int64_labels_load(tmp_path):
    data = np.zeros((6, 5, 4), np.int64)
    data[1, 1, 1] = 2
    p = tmp_path / "i64.nii.gz"
    nib.save(nib.Nifti1Image(data, AFFINE, dtype=np.int64), p)
    vol = load_volume(p, role="label", classes=range(3))
    assert vol.array.dtype == np.uint8 and vol.array[1, 1, 1] == 2


# --- other formats, the mismatch rule, DICOM choice -------------------------------------------
@pytest.mark.parametrize(
    ("written", "named", "suggest"), [(".mha", ".nrrd", "*.mha"), (".nrrd", ".mha", "*.nrrd")]
)
def test_itk_extension_mismatch(tmp_path, written, named, suggest):
    p = bad._itk_file(tmp_path, "x" + written)
    q = p.rename(tmp_path / ("y" + named))
    with pytest.raises(InputError, match=suggest.replace("*", r"\*")) as info:
        load_volume(q)
    assert info.value.code == "extension_mismatch"


def test_single_dicom_file_points_to_the_folder(tmp_path):
    with pytest.raises(InputError, match="folder") as info:
        load_volume(bad.pydicom_file("CT_small.dcm"))
    assert info.value.code == "unknown_format"


def test_dicom_series_choice(tmp_path):
    folder = bad.copy_series(tmp_path, "two", bad.CT5N, bad.CT2)
    with pytest.raises(InputError) as info:
        load_volume(folder)
    uids = info.value.message
    assert "--series-uid" in uids and "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.6" in uids
    vol = load_volume(folder, series_uid="1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.6")
    assert vol.array.shape == (16, 16, 5) and vol.meta["modality"] == "CT"
    with pytest.raises(InputError) as info:
        load_volume(folder, series_uid="1.2.3")
    assert info.value.code == "dicom_no_series"


def test_bad_arguments_are_value_errors(tmp_path):
    with pytest.raises(ValueError):
        load_volume(tmp_path, role="mask")
    with pytest.raises(ValueError):
        load_volume(tmp_path, nan_policy="ignore")


# --- label vs image grid ----------------------------------------------------------------------
def test_check_same_grid_names_the_field():
    image = Volume(array=np.zeros((8, 7, 6), np.float32), affine=AFFINE, meta={"path": "img"})
    check_same_grid(image, image.with_array(np.zeros((8, 7, 6), np.uint8)))
    nudged = AFFINE.copy()
    nudged[0, 3] += 1e-5
    check_same_grid(image, Volume(array=np.zeros((8, 7, 6)), affine=nudged))
    cases = {
        "shape": (np.zeros((8, 7, 5)), AFFINE),
        "spacing": (np.zeros((8, 7, 6)), AFFINE @ np.diag([1.01, 1, 1, 1])),
        "origin": (np.zeros((8, 7, 6)), AFFINE + np.array([[0, 0, 0, 0.01]] + [[0] * 4] * 3)),
        "direction": (np.zeros((8, 7, 6)), np.diag([-1.0, -1, 1, 1]) @ AFFINE),
    }
    for field, (array, affine) in cases.items():
        if field == "direction":  # keep the origin, flip the axes
            affine = affine.copy()
            affine[:3, 3] = AFFINE[:3, 3]
        other = Volume(array=array, affine=affine, meta={"path": "seg.nii.gz"})
        with pytest.raises(InputError, match=field) as info:
            check_same_grid(image, other)
        assert info.value.code == "grid_mismatch" and info.value.path == "seg.nii.gz"


@pytest.mark.parametrize("ext", [".mha", ".mhd", ".nrrd"])
def test_truncated_compressed_itk_files_we_wrote(tmp_path, capfd, ext):
    from medseg.io import Volume, save_volume

    vol = Volume(array=np.random.default_rng(3).normal(size=(20, 20, 20)), affine=AFFINE)
    out = save_volume(vol, tmp_path / f"x{ext}")
    data = out.with_suffix(".zraw") if ext == ".mhd" else out
    data.write_bytes(data.read_bytes()[:-500])
    capfd.readouterr()
    with pytest.raises(InputError) as info:
        load_volume(out)
    assert info.value.code == "truncated"
    assert capfd.readouterr() == ("", "")


def test_itk_2d_and_4d(tmp_path):
    import SimpleITK as sitk

    plane = bad.small_array((7, 8), np.int16)  # numpy [y, x] -> ITK size (8, 7)
    sitk.WriteImage(sitk.GetImageFromArray(plane), str(tmp_path / "plane.mha"))
    vol = load_volume(tmp_path / "plane.mha")
    assert vol.array.shape == (8, 7, 1)
    np.testing.assert_array_equal(vol.array[..., 0], plane.T)

    frames = [sitk.GetImageFromArray(bad.small_array((4, 5, 6), np.int16) + t) for t in range(3)]
    sitk.WriteImage(sitk.JoinSeries(frames), str(tmp_path / "t3.nrrd"))
    with pytest.raises(InputError, match="--volume") as info:
        load_volume(tmp_path / "t3.nrrd")
    assert info.value.code == "multi_volume"
    vol = load_volume(tmp_path / "t3.nrrd", volume_index=2)
    np.testing.assert_array_equal(vol.array, (bad.small_array((4, 5, 6), np.int16) + 2).T)


def test_io_imports_only_what_design_allows():
    import ast

    allowed_third_party = {"numpy", "nibabel", "SimpleITK"}
    # the segmentation formats (issue 14), each library in its own module only
    format_modules = {
        "dicom_seg.py": {"pydicom", "highdicom"},
        "rtstruct.py": {"pydicom", "rt_utils"},
        "seg_nrrd.py": {"slicerio", "scipy"},
        "label_names.py": {"pydicom"},
    }
    for path in (ROOT / "medseg" / "io").glob("*.py"):
        allowed = allowed_third_party | format_modules.get(path.name, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top == "medseg":
                    leaves = ("medseg.errors", "medseg.files")
                    assert name in leaves or name.startswith("medseg.io"), (path, name)
                else:
                    assert top in allowed or top in sys.stdlib_module_names, (
                        path,
                        name,
                    )


def test_all_volumes_as_channels(tmp_path):
    """MSD multi-modal cases are 4-D NIfTI: ``volume_index="all"`` gives (C, X, Y, Z)."""
    import nibabel as nib

    data = np.random.default_rng(0).normal(size=(6, 5, 4, 3)).astype(np.float32)
    aff = np.diag([2.0, 2.0, 3.0, 1.0])
    path = tmp_path / "brats.nii.gz"
    nib.save(nib.Nifti1Image(data, aff), str(path))
    vol = load_volume(path, volume_index="all")
    assert vol.array.shape == (3, 6, 5, 4) and vol.num_channels == 3
    np.testing.assert_array_equal(vol.array[2], data[..., 2])
    np.testing.assert_allclose(vol.affine, aff)
    single = load_volume(path, volume_index=1)
    np.testing.assert_array_equal(single.array, data[..., 1])
    three_d = load_volume(nifti_path_3d(tmp_path), volume_index="all")
    assert three_d.array.shape[0] == 1


def nifti_path_3d(tmp_path):
    import nibabel as nib

    data = np.arange(60, dtype=np.float32).reshape(5, 4, 3)
    path = tmp_path / "one.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path
