"""Geometry round trips: what save_volume writes, load_volume reads back on the same grid."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.io import Volume, load_volume, save_volume

FORMATS = [".nii", ".nii.gz", ".nrrd", ".mha", ".mhd"]
F = np.diag([-1.0, -1.0, 1.0])  # RAS <-> LPS


def _catalogue():
    name = "medseg_tests_bad_inputs"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, Path(__file__).with_name("bad_inputs.py")
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


bad = _catalogue()


def _rot_z(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _affine(direction: np.ndarray, spacing, origin) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = direction @ np.diag(spacing)
    a[:3, 3] = origin
    return a


GEOMETRIES = {
    "ras": _affine(np.eye(3), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0)),
    "oblique30": _affine(
        _rot_z(30)
        @ np.array([[1, 0, 0], [0, 0.8660254037844387, -0.5], [0, 0.5, 0.8660254037844387]]),
        (0.9, 1.1, 2.5),
        (-12.5, 40.25, -7.0),
    ),
    "lps": _affine(F, (0.7, 0.7, 3.0), (100.0, 120.0, -50.0)),
    "aniso100": _affine(np.eye(3), (0.05, 0.05, 5.0), (1.0, -2.0, 3.0)),
}


def _volume(geometry: str, shape=(9, 8, 7), dtype=np.float32) -> Volume:
    rng = np.random.default_rng(0)
    return Volume(array=rng.normal(size=shape).astype(dtype), affine=GEOMETRIES[geometry])


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_image_round_trip(tmp_path, ext, geometry):
    vol = _volume(geometry)
    out = save_volume(vol, tmp_path / f"img{ext}")
    back = load_volume(out)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.array.shape == vol.array.shape
    assert not list(tmp_path.glob(".tmp_*"))


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize(("top", "dtype"), [(5, np.uint8), (1000, np.uint16)])
def test_label_round_trip(tmp_path, ext, top, dtype):
    src = _volume("oblique30")
    labels = np.zeros(src.spatial_shape, np.int64)  # argmax output: int64
    labels[2:5, 3:6, 1:4] = 1
    labels[0, 0, 0] = top
    out = save_volume(src.with_array(labels), tmp_path / f"seg{ext}", role="label")
    back = load_volume(out, role="label")
    assert back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, labels)
    np.testing.assert_allclose(back.affine, src.affine, atol=1e-5)


@pytest.mark.parametrize("ext", [".NII.GZ", ".NII", ".NRRD", ".MHA", ".MHD"])
def test_uppercase_extension(tmp_path, ext):
    vol = _volume("lps")
    back = load_volume(save_volume(vol, tmp_path / f"SCAN{ext}"))
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    np.testing.assert_array_equal(back.array, vol.array)


@pytest.mark.parametrize("ext", FORMATS)
def test_non_ascii_path_with_spaces(tmp_path, ext):
    folder = tmp_path / "ünïcødé 名前 dir"
    folder.mkdir()
    vol = _volume("oblique30")
    back = load_volume(save_volume(vol, folder / f"scan é{ext}"))
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    np.testing.assert_array_equal(back.array, vol.array)


def test_symlinked_input_reads_like_the_file(tmp_path):
    vol = _volume("oblique30")
    real = save_volume(vol, tmp_path / "real.nii.gz")
    (tmp_path / "link.nii.gz").symlink_to(real)
    back = load_volume(tmp_path / "link.nii.gz")
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    out = save_volume(back, tmp_path / "out.nii.gz", protect=[tmp_path / "link.nii.gz"])
    np.testing.assert_allclose(load_volume(out).affine, vol.affine, atol=1e-5)


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_nifti2_and_4d_t1_inputs(tmp_path, ext):
    aff = GEOMETRIES["oblique30"]
    data = bad.small_array((9, 8, 7, 1))
    nib.save(nib.Nifti2Image(data, aff), tmp_path / f"in2{ext}")
    vol = load_volume(tmp_path / f"in2{ext}")
    assert vol.array.shape == (9, 8, 7) and vol.meta["nifti_version"] == 2
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)
    back = load_volume(save_volume(vol, tmp_path / f"out{ext}"))
    np.testing.assert_allclose(back.affine, aff, atol=1e-5)
    np.testing.assert_array_equal(back.array, data[..., 0])


@pytest.mark.parametrize("ext", [".nrrd", ".mha", ".mhd"])
def test_itk_4d_t1_inputs(tmp_path, ext):
    """A 4-D (x, y, z, t=1) NRRD/MetaImage is squeezed on its 3-D grid and written back on it."""
    import SimpleITK as sitk

    aff = GEOMETRIES["oblique30"]
    data = bad.small_array((9, 8, 7))
    image = sitk.JoinSeries([sitk.GetImageFromArray(np.ascontiguousarray(data.T))])
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    direction = np.eye(4)
    direction[:3, :3] = F @ aff[:3, :3] / spacing  # RAS -> ITK's LPS
    image.SetSpacing((*spacing.tolist(), 1.0))
    image.SetOrigin((*(F @ aff[:3, 3]).tolist(), 0.0))
    image.SetDirection(tuple(direction.ravel().tolist()))
    sitk.WriteImage(image, str(tmp_path / f"t1{ext}"))
    assert sitk.ReadImage(str(tmp_path / f"t1{ext}")).GetSize() == (9, 8, 7, 1)

    vol = load_volume(tmp_path / f"t1{ext}")
    assert vol.array.shape == (9, 8, 7)
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)
    back = load_volume(save_volume(vol, tmp_path / f"out{ext}"))
    np.testing.assert_allclose(back.affine, aff, atol=1e-5)
    np.testing.assert_array_equal(back.array, data)


def test_qform_and_sform_both_survive(tmp_path):
    img = nib.Nifti1Image(bad.small_array(), None)
    qform = GEOMETRIES["oblique30"]
    sform = GEOMETRIES["lps"]
    img.header.set_qform(qform, code=1)
    img.header.set_sform(sform, code=4)
    nib.save(img, tmp_path / "forms.nii.gz")
    vol = load_volume(tmp_path / "forms.nii.gz")
    out = save_volume(
        vol.with_array((vol.array > 40).astype(np.uint8)), tmp_path / "seg.nii.gz", role="label"
    )
    hdr = nib.load(out).header
    q, qc = hdr.get_qform(coded=True)
    s, sc = hdr.get_sform(coded=True)
    assert (int(qc), int(sc)) == (1, 4)
    np.testing.assert_allclose(q, qform, atol=1e-5)
    np.testing.assert_allclose(s, sform, atol=1e-5)
    assert hdr.get_data_dtype() == np.uint8


def test_qform_only_input_keeps_sform_code_zero(tmp_path):
    img = nib.Nifti1Image(bad.small_array(), None)
    img.header.set_qform(GEOMETRIES["lps"], code=1)
    img.header.set_sform(None, code=0)
    nib.save(img, tmp_path / "q.nii")
    vol = load_volume(tmp_path / "q.nii")
    hdr = nib.load(save_volume(vol, tmp_path / "out.nii")).header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (1, 0)
    np.testing.assert_allclose(nib.load(tmp_path / "out.nii").affine, GEOMETRIES["lps"], atol=1e-5)


def test_new_volume_gets_both_forms_with_code_1(tmp_path):
    hdr = nib.load(save_volume(_volume("lps"), tmp_path / "new.nii.gz")).header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (1, 1)
    np.testing.assert_allclose(hdr.get_qform(), hdr.get_sform(), atol=1e-5)


def test_stale_forms_are_not_trusted(tmp_path):
    """A volume whose affine changed (e.g. resampled) must not keep the old forms."""
    vol = _volume("lps")
    vol.sform, vol.sform_code = GEOMETRIES["ras"], 2
    img = nib.load(save_volume(vol, tmp_path / "x.nii.gz"))
    np.testing.assert_allclose(img.affine, vol.affine, atol=1e-5)


@pytest.mark.parametrize("ext", [".nrrd", ".mha"])
def test_itk_files_we_write_place_voxels_like_the_affine(tmp_path, ext):
    """SimpleITK's own LPS view of our file agrees with the RAS affine, voxel for voxel."""
    import SimpleITK as sitk

    vol = _volume("oblique30")
    img = sitk.ReadImage(str(save_volume(vol, tmp_path / f"x{ext}")))
    for index in [(0, 0, 0), (8, 0, 0), (0, 7, 0), (0, 0, 6), (3, 5, 2)]:
        lps = np.array(img.TransformIndexToPhysicalPoint(index))
        ras = (vol.affine @ [*index, 1.0])[:3]
        np.testing.assert_allclose(F @ lps, ras, atol=1e-5)
        assert img.GetPixel(index) == pytest.approx(float(vol.array[index]))


def test_nifti_geometry_agrees_with_simpleitk_when_forms_agree(tmp_path):
    """Our NIfTI (nibabel) affine and SimpleITK's LPS geometry name the same points."""
    import SimpleITK as sitk

    vol = _volume("oblique30")
    path = save_volume(vol, tmp_path / "x.nii.gz")
    img = sitk.ReadImage(str(path))
    ours = load_volume(path)
    for index in [(0, 0, 0), (8, 7, 6), (2, 3, 4)]:
        lps = np.array(img.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(F @ lps, (ours.affine @ [*index, 1.0])[:3], atol=1e-4)


def test_dicom_ct5n_round_trip(tmp_path):
    import pydicom

    folder = bad.copy_series(tmp_path, "ct5n", bad.CT5N)
    vol = load_volume(folder)
    assert vol.array.shape == (16, 16, 5)
    np.testing.assert_allclose(vol.spacing, [0.488281, 0.488281, 2.5], atol=1e-5)
    assert vol.meta["modality"] == "CT" and vol.meta["n_slices"] == 5
    assert vol.meta["series_uid"] == "1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.6"
    # independent check with pydicom: position of voxel (0,0,k) and HU values
    slices = sorted(
        (pydicom.dcmread(f) for f in folder.iterdir()),
        key=lambda d: float(d.ImagePositionPatient[2]),
    )
    for k, ds in enumerate(slices):
        ipp = np.array([float(v) for v in ds.ImagePositionPatient])
        np.testing.assert_allclose((vol.affine @ [0, 0, k, 1.0])[:3], F @ ipp, atol=1e-4)
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(vol.array[:, :, k], hu.T)  # pixel_array is [row, col]
    back = load_volume(save_volume(vol, tmp_path / "ct.nii.gz"))
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.array.shape[2] == 5 and back.spacing[2] == pytest.approx(2.5)


def test_multichannel_nifti_round_trip(tmp_path):
    vol = _volume("lps", shape=(2, 9, 8, 7))
    out = save_volume(vol, tmp_path / "mc.nii.gz")
    for c in range(2):
        np.testing.assert_array_equal(load_volume(out, volume_index=c).array, vol.array[c])


@pytest.mark.parametrize("reverse", [False, True], ids=["normal_up", "normal_down"])
def test_oblique_dicom_series_round_trip(tmp_path, reverse):
    """A synthetic oblique (30 deg) MR series written with SimpleITK reads back on its grid.

    With ``reverse`` the source k axis points against row x col: the loader sorts slices along
    the normal, so k is flipped but every voxel keeps its physical position.
    """
    aff = GEOMETRIES["oblique30"].copy()
    if reverse:
        aff[:3, 2] *= -1
    data = bad.small_array((10, 12, 6), np.int16)
    folder = bad.write_dicom_series(tmp_path / "mr", data, aff)
    vol = load_volume(folder)
    expected = data[:, :, ::-1] if reverse else data
    np.testing.assert_array_equal(vol.array, expected)
    for idx in [(0, 0, 0), (9, 11, 5), (3, 4, 2)]:
        src_k = 5 - idx[2] if reverse else idx[2]
        np.testing.assert_allclose(
            vol.affine @ [*idx, 1.0], aff @ [idx[0], idx[1], src_k, 1.0], atol=1e-4
        )
    back = load_volume(save_volume(vol, tmp_path / "mr.nii.gz"))
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-5)
    assert vol.meta["modality"] == "MR" and vol.meta["slice_spacing_mm"] == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("folder", "geometry"),
    [
        ("aniso", "aniso100"),  # 0.05 mm pixels, 5 mm slices
        ("SERIES_UPPER", "oblique30"),
        ("ünïcødé 名前 dir/série 1", "oblique30"),
    ],
    ids=["aniso100", "uppercase_folder", "non_ascii_folder"],
)
def test_dicom_series_geometry_round_trip(tmp_path, folder, geometry):
    """A series written on a known grid reads back on it, and a NIfTI of it keeps that grid."""
    aff = GEOMETRIES[geometry]
    data = bad.small_array((10, 12, 6), np.int16)
    series = bad.write_dicom_series(tmp_path / folder, data, aff)
    vol = load_volume(series)
    np.testing.assert_array_equal(vol.array, data)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)
    assert vol.meta["slice_spacing_mm"] == pytest.approx(np.linalg.norm(aff[:3, 2]))
    back = load_volume(save_volume(vol, series.parent / f"{series.name}.nii.gz"))
    np.testing.assert_allclose(back.affine, aff, atol=1e-5)
    np.testing.assert_array_equal(back.array, data)
