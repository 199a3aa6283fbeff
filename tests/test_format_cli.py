"""``--format`` end to end (issue 14): ``medseg segment`` on a DICOM series with the shipped
LiteMedSAM (one prompted slice: cheap), the refusals before any model work, ``medseg restore``
refusing segmentation formats, ``medseg evaluate`` and the viewer reading a DICOM SEG and a
``.seg.nrrd`` back, and the viewer's export in every format.
"""

from __future__ import annotations

import json
from pathlib import Path

import dicom_kit as dk
import nibabel as nib
import numpy as np
import pytest
from testkit import ellipsoid_volume

from medseg.cli.main import main
from medseg.io import load_volume

SHAPE = (48, 40, 5)


@pytest.fixture
def ct(tmp_path) -> tuple[Path, np.ndarray]:
    """A CT series (bright ellipsoid, HU) and the ellipsoid's mask, both (X, Y, Z)."""
    image, mask = ellipsoid_volume(SHAPE, radii=(12, 9, 3))
    folder = dk.write_ct_series(tmp_path / "ct", (image * 0.6 - 50).astype(np.int16), dk.AXIAL,
                                patient_name="Ærø^Zoë")  # fmt: skip
    return folder, mask


def one_error_line(capsys) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


def test_segment_writes_every_format_from_a_dicom_series(ct, tmp_path):
    import highdicom as hd
    import pydicom

    folder, mask = ct
    out = tmp_path / "out"
    rc = main(["segment", str(folder), "-o", str(out), "-q", "--box", "10,10,38,32", "--slice",
               "2", "--no-propagate", "--window", "40,400", "--name", "liver",
               "--format", "nifti,dicom-seg,rtstruct,seg-nrrd"])  # fmt: skip
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "ct_preview.png", "ct_rtstruct.dcm", "ct_seg.dcm", "ct_seg.nii.gz", "ct_seg.seg.nrrd",
        "ct_stats.json",
    ]  # fmt: skip
    nifti = load_volume(out / "ct_seg.nii.gz", role="label")
    assert nifti.array[:, :, 2].sum() > 50 and nifti.meta["label_names"] == {1: "liver"}
    source = load_volume(folder)
    for name in ("ct_seg.dcm", "ct_seg.seg.nrrd"):
        back = load_volume(out / name, role="label", grid=source)
        np.testing.assert_array_equal(back.array, nifti.array)
    seg = hd.seg.segread(out / "ct_seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.meta["series_uid"]
    assert seg.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"  # a prompted run
    assert str(seg.PatientName) == "Ærø^Zoë"
    rt = pydicom.dcmread(out / "ct_rtstruct.dcm")
    assert [r.ROIName for r in rt.StructureSetROISequence] == ["liver"]
    stats = json.loads((out / "ct_stats.json").read_text(encoding="utf-8"))
    assert stats["segmentation"] == "ct_seg.nii.gz"
    assert stats["files"]["dicom-seg"] == "ct_seg.dcm"


@pytest.mark.parametrize("fmt", ["dicom-seg", "rtstruct"])
def test_dicom_format_for_a_nifti_input_exits_2_before_any_work(tmp_path, capsys, fmt):
    image, _ = ellipsoid_volume(SHAPE)
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(image, np.eye(4)), scan)
    out = tmp_path / "new" / "out"
    rc = main(["segment", str(scan), "-o", str(out), "--box", "5,5,30,30", "--slice", "2",
               "--format", f"nifti,{fmt}"])  # fmt: skip
    assert rc == 2
    line = one_error_line(capsys)
    assert f"--format {fmt}" in line and "not a DICOM series" in line
    assert not (tmp_path / "new").exists()


def test_unknown_format_exits_2(ct, tmp_path, capsys):
    folder, _ = ct
    rc = main(["segment", str(folder), "-o", str(tmp_path / "o"), "--box", "5,5,30,30",
               "--slice", "2", "--format", "nifti,dicom"])  # fmt: skip
    assert rc == 2
    assert "unknown output format 'dicom'" in one_error_line(capsys)


@pytest.mark.parametrize("fmt", ["dicom-seg", "seg-nrrd", "nifti,rtstruct"])
def test_restore_refuses_segmentation_formats_before_the_checkpoint(tmp_path, capsys, fmt):
    image, _ = ellipsoid_volume(SHAPE)
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(image, np.eye(4)), scan)
    rc = main(["restore", str(scan), "-o", str(tmp_path / "out"), "--checkpoint",
               str(tmp_path / "missing.ckpt"), "--format", fmt])  # fmt: skip
    assert rc == 2  # not 4: the format is refused before the checkpoint is looked at
    line = one_error_line(capsys)
    assert "holds a segmentation" in line and "nifti" in line
    assert not (tmp_path / "out").exists()


# reading them back ------------------------------------------------------------------------------
def _written(tmp_path: Path, formats: list[str]) -> tuple[Path, dict[str, Path], np.ndarray]:
    """A series and a label map (slice 0 empty) saved through the API in ``formats``."""
    from medseg.api.results import Segmentation
    from medseg.inference.stats import label_statistics

    hu = np.random.default_rng(0).normal(0, 30, SHAPE).astype(np.int16)
    image = load_volume(dk.write_ct_series(tmp_path / "ct", hu, dk.oblique(10.0)))
    labels = dk.blobs(SHAPE, 2)
    labels[:, :, 0] = 0
    names = {1: "liver", 2: "spleen"}
    result = Segmentation(image.with_array(labels), image, names,
                          label_statistics(labels, image.affine, names), "litemedsam",
                          source=image.meta["path"])  # fmt: skip
    paths = result.save(tmp_path / "pred", formats=formats)
    return tmp_path / "ct", {p.name: p for p in paths}, labels


def test_evaluate_scores_a_seg_against_nifti_either_way(tmp_path, capsys):
    _, files, labels = _written(tmp_path, ["nifti", "dicom-seg", "seg-nrrd"])
    gt = tmp_path / "gt.nii.gz"
    gt.write_bytes(files["ct_seg.nii.gz"].read_bytes())
    for pred, truth in ((files["ct_seg.dcm"], gt), (gt, files["ct_seg.dcm"]),
                        (files["ct_seg.seg.nrrd"], files["ct_seg.dcm"])):  # fmt: skip
        assert main(["evaluate", str(pred), str(truth), "--no-hd95"]) == 0
        table = capsys.readouterr().out
        assert "| 1 liver | 1 | 1.0000" in table and "| 2 spleen | 1 | 1.0000" in table


def test_evaluate_folder_scores_a_case_once_whatever_its_formats(tmp_path, capsys):
    _, files, _ = _written(tmp_path, ["nifti", "dicom-seg", "seg-nrrd"])
    gts = tmp_path / "gts"
    gts.mkdir()
    (gts / "ct.nii.gz").write_bytes(files["ct_seg.nii.gz"].read_bytes())
    assert main(["evaluate", str(tmp_path / "pred"), str(gts), "--no-hd95", "-o",
                 str(tmp_path / "m.csv")]) == 0  # fmt: skip
    rows = (tmp_path / "m.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert len(rows) == 2 and all("ct_seg.nii.gz" in r for r in rows)


def test_viewer_opens_a_seg_and_exports_every_format(tmp_path):
    import gradio as gr
    import highdicom as hd

    from apps.viewer import callbacks as cb

    series, files, labels = _written(tmp_path, ["dicom-seg", "seg-nrrd"])
    session = cb.open_file(str(series), str(tmp_path / "work"))
    cb.open_label_file(session, str(files["ct_seg.dcm"]))
    np.testing.assert_array_equal(session.labels, labels)
    assert session.names == {1: "liver", 2: "spleen"}
    cb.open_label_file(session, str(files["ct_seg.seg.nrrd"]))
    np.testing.assert_array_equal(session.labels, labels)
    out = tmp_path / "exports"
    out.mkdir()
    paths = cb.export(session, str(out), ["nifti", "dicom-seg", "rtstruct", "seg-nrrd"])
    names = sorted(Path(p).name for p in paths)
    assert names == ["ct_labels.nii.gz", "ct_rtstruct.dcm", "ct_seg.dcm", "ct_seg.seg.nrrd",
                     "ct_stats.csv", "ct_stats.json"]  # fmt: skip
    seg = hd.seg.segread(next(p for p in paths if p.endswith("_seg.dcm")))
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "spleen"]
    nifti = load_volume(next(p for p in paths if p.endswith(".nii.gz")), role="label")
    np.testing.assert_array_equal(nifti.array, labels)

    image, _ = ellipsoid_volume(SHAPE)
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(image, np.eye(4)), scan)
    plain = cb.open_file(str(scan), str(tmp_path / "work"))
    with pytest.raises(gr.Error) as err:
        cb.export(plain, str(out), ["dicom-seg"])
    assert "not a DICOM series" in err.value.message and "\n" not in err.value.message


def test_automatic_run_writes_an_automatic_seg_and_refuses_nifti_cases_first(
    ct, tmp_path, monkeypatch, capsys
):
    """A ``medseg fit`` checkpoint (a threshold net behind a fake one) on a DICOM series: the
    SEG says AUTOMATIC; a folder of NIfTI cases with ``--format dicom-seg`` is refused before
    the model loads."""
    import highdicom as hd
    from testkit import load_test_module

    from medseg.inference.automatic import AutomaticSegmenter

    auto = load_test_module("test_inference_automatic")

    def threshold(cls, path, *, trusted=False, **kwargs):
        return cls(auto.ThresholdNet(), auto._pre(3), **kwargs)

    monkeypatch.setattr(AutomaticSegmenter, "from_checkpoint", classmethod(threshold))
    ckpt = auto._fake_lightning_ckpt(tmp_path / "run.ckpt")
    folder, mask = ct
    out = tmp_path / "out"
    rc = main(["segment", str(folder), "-o", str(out), "-q", "--checkpoint", str(ckpt),
               "--format", "dicom-seg,nifti"])  # fmt: skip
    assert rc == 0
    seg = hd.seg.segread(out / "ct_seg.dcm")
    (segment,) = seg.SegmentSequence
    assert segment.SegmentAlgorithmType == "AUTOMATIC" and segment.SegmentLabel == "object"
    back = load_volume(out / "ct_seg.dcm", role="label", grid=load_volume(folder))
    nifti = load_volume(out / "ct_seg.nii.gz", role="label")
    assert nifti.array.any()
    np.testing.assert_array_equal(back.array, nifti.array)

    cases = tmp_path / "cases"
    cases.mkdir()
    image, _ = ellipsoid_volume(SHAPE)
    nib.save(nib.Nifti1Image(image, np.eye(4)), cases / "a.nii.gz")
    loads = []
    monkeypatch.setattr(AutomaticSegmenter, "from_checkpoint", classmethod(
        lambda cls, *a, **k: loads.append(1)))  # fmt: skip
    rc = main(["segment", str(cases), "-o", str(tmp_path / "o2"), "--checkpoint", str(ckpt),
               "--format", "dicom-seg"])  # fmt: skip
    assert rc == 2 and not loads and not (tmp_path / "o2").exists()
    assert "not a DICOM series" in one_error_line(capsys)
