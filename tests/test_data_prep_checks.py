"""Dataset checks before training (RELIABILITY.md §C.2 rows 21-23): case id + field named."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from data_prep import prepare
from data_prep.checks import check_dataset
from data_prep.msd import index_msd
from data_prep.synthetic import write_msd
from medseg.errors import InputError

BAD = "synthetic_003"


@pytest.fixture
def task(tmp_path) -> Path:
    return write_msd(tmp_path / "raw", cases=6, test_cases=1, shape=(16, 16, 8), seed=4)


def _label_path(task: Path, case: str = BAD) -> Path:
    return task / "labelsTr" / f"{case}.nii.gz"


def _rewrite(path: Path, *, array=None, affine=None, dtype=None) -> None:
    old = nib.load(str(path))
    data = np.asarray(old.dataobj) if array is None else array
    img = nib.Nifti1Image(
        data.astype(dtype or data.dtype), old.affine if affine is None else affine
    )
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(path))


def _shifted(task: Path, d_origin=(0, 0, 0), scale=(1, 1, 1), flip_x=False) -> np.ndarray:
    aff = nib.load(str(_label_path(task))).affine.copy()
    aff[:3, :3] = aff[:3, :3] * np.asarray(scale)[None, :]
    aff[:3, 3] += np.asarray(d_origin)
    if flip_x:
        aff[:, 0] *= -1
        aff[0, 3] = -aff[0, 3]
    return aff


def _corrupt(task: Path, kind: str) -> None:
    label = _label_path(task)
    data = np.asarray(nib.load(str(label)).dataobj)
    if kind == "shape":
        _rewrite(label, array=data[:, :, :6])
    elif kind == "spacing":
        _rewrite(label, affine=_shifted(task, scale=(1, 1, 2.0 / 1.5)))
    elif kind == "origin":
        _rewrite(label, affine=_shifted(task, d_origin=(0.5, 0, 0)))
    elif kind == "flipped":
        _rewrite(label, affine=_shifted(task, flip_x=True))
    elif kind in ("value5", "value255"):
        bad = data.copy()
        bad[0, 0, 0] = 5 if kind == "value5" else 255
        _rewrite(label, array=bad)
    elif kind == "fractional":
        _rewrite(label, array=data.astype(np.float32) * 0.5)
    elif kind == "truncated_image":
        image = task / "imagesTr" / f"{BAD}.nii.gz"
        image.write_bytes(image.read_bytes()[:200])
    elif kind == "missing_label":
        label.unlink()
    elif kind == "not_gzip_image":
        image = task / "imagesTr" / f"{BAD}.nii.gz"
        image.write_bytes(gzip.decompress(image.read_bytes()))


CASES = [
    ("shape", "grid_mismatch", "label shape"),
    ("spacing", "grid_mismatch", "label spacing"),
    ("origin", "grid_mismatch", "label origin"),
    ("flipped", "grid_mismatch", "label "),
    ("value5", "bad_labels", "label: unexpected label values {5}"),
    ("value255", "bad_labels", "label: unexpected label values {255}"),
    ("fractional", "bad_labels", "label: labels must be whole numbers"),
    ("truncated_image", "truncated", "image: "),
    ("missing_label", "not_found", "label: not found"),
    ("not_gzip_image", "extension_mismatch", "image: "),
]


@pytest.mark.parametrize("kind,code,field", CASES, ids=[c[0] for c in CASES])
def test_bad_case_fails_naming_case_and_field(task, kind, code, field):
    _corrupt(task, kind)
    with pytest.raises(InputError) as info:
        check_dataset(index_msd(task))
    err = info.value
    assert err.code == code, err
    assert err.message.startswith(f"case {BAD}: {field}"), err.message
    assert BAD in err.path


@pytest.mark.parametrize("kind", ["spacing", "value255", "truncated_image"])
def test_skip_bad_records_the_case_and_goes_on(task, kind):
    _corrupt(task, kind)
    report = check_dataset(index_msd(task), skip_bad=True)
    assert [s["case"] for s in report.skipped] == [BAD]
    assert f"case {BAD}:" in report.skipped[0]["reason"]
    assert [e["case"] for e in report.good] == [f"synthetic_{i:03d}" for i in (1, 2, 4, 5, 6)]


def test_prepare_with_skip_bad_drops_the_case_everywhere(task, tmp_path):
    _corrupt(task, "origin")
    with pytest.raises(InputError, match=f"case {BAD}: label origin"):
        prepare("msd", task, tmp_path / "prep")
    assert not (tmp_path / "prep").exists()  # nothing written on failure
    out = prepare("msd", task, tmp_path / "prep", skip_bad=True)
    ds = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    splits = json.loads((out / "splits.json").read_text(encoding="utf-8"))
    fp = json.loads((out / "fingerprint.json").read_text(encoding="utf-8"))
    assert ds["skipped"][0]["case"] == BAD and "label origin" in ds["skipped"][0]["reason"]
    assert ds["numTraining"] == 5 and BAD not in {e["case"] for e in ds["training"]}
    assert BAD not in {c for f in splits["folds"] for c in f["train"] + f["val"]}
    assert BAD not in fp["cases"]


def test_empty_label_is_a_warning_and_the_case_is_kept(task):
    label = _label_path(task)
    _rewrite(label, array=np.zeros(nib.load(str(label)).shape, np.uint8))
    report = check_dataset(index_msd(task))
    assert BAD in {e["case"] for e in report.good}
    assert any(w["case"] == BAD and "empty" in w["warning"] for w in report.warnings)


def test_missing_test_image_is_named(task):
    (task / "imagesTs" / "synthetic_007.nii.gz").unlink()
    with pytest.raises(InputError, match="case synthetic_007: test image"):
        check_dataset(index_msd(task))
    report = check_dataset(index_msd(task), skip_bad=True)
    assert report.skipped[0]["case"] == "synthetic_007" and not report.test


def test_every_case_bad_is_an_error_even_with_skip_bad(tmp_path):
    task = write_msd(tmp_path, cases=2, test_cases=0, shape=(16, 16, 8))
    for case in ("synthetic_001", "synthetic_002"):
        _label_path(task, case).unlink()
    with pytest.raises(InputError, match="no usable training case") as info:
        check_dataset(index_msd(task), skip_bad=True)
    assert info.value.code == "no_training_cases"
