"""``medseg evaluate``: Dice/HD95 on masks with known answers, empty-label conventions, pairing,
grid mismatches, and ACDC clinical indices with known volumes (EF exact)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from testkit import write_nifti

from medseg.cli.main import main
from medseg.inference.evaluation import acdc_indices, agreement, label_metrics

SPACING = (1.5, 1.0, 4.0)
AFFINE = np.diag([*SPACING, 1.0])


def _cube(shape=(24, 20, 12), lo=(4, 4, 2), side=(10, 10, 5), value=1) -> np.ndarray:
    a = np.zeros(shape, np.uint8)
    a[tuple(slice(o, o + s) for o, s in zip(lo, side, strict=True))] = value
    return a


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open(encoding="utf-8")))


def test_two_cubes_known_dice_and_hd95():
    """A 10x10x5 cube shifted by 2 voxels along x (1.5 mm): overlap 8/10 -> Dice 0.8; a sixth
    of the surface sits exactly 2 x 1.5 = 3 mm from the other cube, none farther -> HD95 3 mm.
    Shifted by 1 slice along z (4 mm) instead: Dice 0.8, HD95 4 mm."""
    gt = _cube()
    (row,) = label_metrics(_cube(lo=(6, 4, 2)), gt, [1], SPACING)
    assert row["dice"] == pytest.approx(0.8)
    assert row["hd95"] == pytest.approx(3.0)
    assert row["gt_ml"] == pytest.approx(500 * 1.5 * 1.0 * 4.0 / 1000)
    (row,) = label_metrics(_cube(lo=(4, 4, 3)), gt, [1], SPACING)
    assert row["dice"] == pytest.approx(0.8) and row["hd95"] == pytest.approx(4.0)
    (row,) = label_metrics(gt, gt, [1], SPACING)
    assert row["dice"] == 1.0 and row["hd95"] == 0.0


def test_empty_label_conventions():
    gt = _cube()
    pred = np.zeros_like(gt)
    rows = {r["label"]: r for r in label_metrics(pred, gt, [1, 2], SPACING)}
    assert rows[1]["dice"] == 0.0 and math.isinf(rows[1]["hd95"])  # missed entirely
    assert math.isnan(rows[2]["dice"]) and math.isnan(rows[2]["hd95"])  # absent from both
    rows = {r["label"]: r for r in label_metrics(gt, pred, [1], SPACING)}
    assert rows[1]["dice"] == 0.0 and math.isinf(rows[1]["hd95"])  # false positive


def test_cli_pairs_folders_writes_csv_and_summary(tmp_path, capsys):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    gt2 = _cube() + _cube(lo=(16, 14, 8), side=(4, 4, 3), value=2)
    write_nifti(gt_dir / "a_gt.nii.gz", _cube(), AFFINE)
    write_nifti(gt_dir / "a.nii.gz", np.ones((24, 20, 12), np.float32), AFFINE)  # the image
    write_nifti(gt_dir / "b_gt.nii.gz", gt2, AFFINE)
    write_nifti(pred_dir / "a_seg.nii.gz", _cube(lo=(6, 4, 2)), AFFINE)
    write_nifti(pred_dir / "b_seg.nii.gz", gt2, AFFINE)
    stats = {"labels": [{"label": 1, "name": "liver"}, {"label": 2, "name": "tumour"}]}
    (pred_dir / "b_stats.json").write_text(json.dumps(stats))
    out = tmp_path / "metrics.csv"
    assert main(["evaluate", str(pred_dir), str(gt_dir), "-o", str(out)]) == 0
    rows = _rows(out)
    got = {(r["case"], r["name"]): (r["dice"], r["hd95"]) for r in rows}
    assert got == {
        ("a", "liver"): ("0.8", "3"),
        ("a", "tumour"): ("nan", "nan"),  # label 2 absent from both maps of case a
        ("b", "liver"): ("1", "0"),
        ("b", "tumour"): ("1", "0"),
    }
    table = capsys.readouterr().out
    assert "| 1 liver | 2 | 0.9000 +/- 0.1000 | 1.5000 +/- 1.5000 |" in table
    assert "| 2 tumour | 2 | 1.0000 +/- 0.0000 |" in table  # the NaN case is left out
    # an existing CSV is kept unless --overwrite
    assert main(["evaluate", str(pred_dir), str(gt_dir), "-o", str(out)]) == 2
    assert main(["evaluate", str(pred_dir), str(gt_dir), "--labels", "1", "-q"]) == 0


def test_grid_mismatch_exits_2_naming_the_file_missing_predictions_noted(tmp_path, capsys):
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    for case in ("a", "b", "c"):
        write_nifti(gt_dir / f"{case}.nii.gz", _cube(), AFFINE)
    write_nifti(pred_dir / "a_seg.nii.gz", _cube(), AFFINE)
    shifted = AFFINE.copy()
    shifted[0, 3] += 3.0
    write_nifti(pred_dir / "b_seg.nii.gz", _cube(), shifted)  # same shape, moved 3 mm
    out = tmp_path / "m.csv"
    assert main(["evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"error: {pred_dir / 'b_seg.nii.gz'}: prediction origin" in err
    assert "note: no prediction for 1 case(s) (not scored): c" in err
    assert "error: 1 case(s) failed: b" in err  # a missing prediction is no failure
    assert {r["case"] for r in _rows(out)} == {"a"}  # the good case is still scored
    # single files: a shape mismatch names the prediction
    write_nifti(tmp_path / "small.nii.gz", _cube(shape=(20, 20, 12)), AFFINE)
    args = ["evaluate", str(tmp_path / "small.nii.gz"), str(gt_dir / "a.nii.gz"), "-q"]
    assert main(args) == 2
    assert f"{tmp_path / 'small.nii.gz'}: prediction shape" in capsys.readouterr().err


def test_ground_truths_without_predictions_are_noted_once_and_the_rest_scored(tmp_path, capsys):
    """Issue 15, item 8: a GT folder with more cases than predictions (a partial run, a test
    split) scores what exists and exits 0; the unpredicted cases are counted in one note."""
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    pred_dir.mkdir()
    gt_dir.mkdir()
    cases = [f"case{i:02d}" for i in range(9)]
    for case in cases:
        write_nifti(gt_dir / f"{case}.nii.gz", _cube(), AFFINE)
    for case in cases[:2]:
        write_nifti(pred_dir / f"{case}_seg.nii.gz", _cube(), AFFINE)
    out = tmp_path / "m.csv"
    assert main(["evaluate", str(pred_dir), str(gt_dir), "-o", str(out), "-q"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "note: no prediction for 7 case(s) (not scored): case02, case03, case04, case05, "
        "case06, ... (7 in all)"
    ]
    assert {r["case"] for r in _rows(out)} == {"case00", "case01"}
    # no prediction pairs with any ground truth: nothing to score is an error
    other = tmp_path / "other"
    other.mkdir()
    write_nifti(other / "elsewhere_seg.nii.gz", _cube(), AFFINE)
    assert main(["evaluate", str(other), str(gt_dir), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no prediction matches a ground-truth case (1 prediction(s)" in err[0]


def _heart(lv: int, myo: int, rv: int, shape=(30, 30, 10)) -> np.ndarray:
    """A label map with exactly ``lv``/``myo``/``rv`` voxels of labels 3/2/1."""
    flat = np.zeros(int(np.prod(shape)), np.uint8)
    flat[:lv] = 3
    flat[lv : lv + myo] = 2
    flat[lv + myo : lv + myo + rv] = 1
    return flat.reshape(shape)


@pytest.mark.parametrize("phases_from", ["info_cfg", "phases_json", "lv_volume"])
def test_acdc_clinical_indices_are_exact(tmp_path, capsys, phases_from):
    """Voxels of 2x2x2.5 mm = 0.01 mL. patient001: ED LV 2000, RV 1500, MYO 1000 voxels; ES LV
    800, RV 900 -> LV EDV 20 mL, ESV 8 mL, EF 60 %; RV 15/9 mL, EF 40 %; mass 10 x 1.05 g."""
    aff = np.diag([2.0, 2.0, 2.5, 1.0])
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt" / "patient001"
    pred_dir.mkdir()
    gt_dir.mkdir(parents=True)
    ed, es = _heart(2000, 1000, 1500), _heart(800, 1100, 900)
    write_nifti(gt_dir / "patient001_frame01_gt.nii.gz", ed, aff)
    write_nifti(gt_dir / "patient001_frame12_gt.nii.gz", es, aff)
    write_nifti(pred_dir / "patient001_frame01_seg.nii.gz", _heart(1900, 1000, 1500), aff)
    write_nifti(pred_dir / "patient001_frame12_seg.nii.gz", es, aff)
    extra = []
    if phases_from == "info_cfg":
        (gt_dir / "Info.cfg").write_text("ED: 1\nES: 12\nGroup: NOR\nNbFrame: 30\n")
    elif phases_from == "phases_json":
        (tmp_path / "phases.json").write_text(json.dumps({"patient001": {"ED": 1, "ES": 12}}))
        extra = ["--phases", str(tmp_path / "phases.json")]
    out = tmp_path / "m.csv"
    args = ["evaluate", str(pred_dir), str(tmp_path / "gt"), "--acdc", "-o", str(out), *extra]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert ("taken from the LV volume" in captured.err) == (phases_from == "lv_volume")
    rows = {r["which"]: r for r in _rows(tmp_path / "m_acdc.csv")}
    gt = rows["gt"]
    assert (gt["ed"], gt["es"]) == ("1", "12")
    assert float(gt["lv_edv"]) == pytest.approx(20.0) and float(gt["lv_esv"]) == pytest.approx(8.0)
    assert float(gt["lv_ef"]) == pytest.approx(60.0)
    assert float(gt["rv_ef"]) == pytest.approx(40.0)
    assert float(gt["myo_mass_ed"]) == pytest.approx(10.5)
    assert float(rows["pred"]["lv_edv"]) == pytest.approx(19.0)
    assert float(rows["pred"]["lv_ef"]) == pytest.approx(100 * 11 / 19, rel=1e-5)
    assert "| lv_ef | 1 | 60.00 | 57.89 |" in captured.out
    names = {r["name"] for r in _rows(out)}
    assert names == {"RV", "MYO", "LV"}


def test_acdc_helpers():
    idx = acdc_indices(_heart(100, 50, 80), _heart(40, 60, 50), 0.01, 0.01)
    assert idx["lv_ef"] == pytest.approx(60.0) and idx["rv_ef"] == pytest.approx(37.5)
    assert math.isnan(acdc_indices(_heart(0, 5, 0), _heart(0, 5, 0), 1.0, 1.0)["lv_ef"])
    a = agreement([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])
    assert a["corr"] == pytest.approx(1.0) and a["mad"] == pytest.approx(0.5)
    assert a["bias"] == pytest.approx(-0.5)
