"""ACDC raw layout: headerless Info.cfg, ED/ES frames, labels 1=RV 2=MYO 3=LV, folder forms."""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from data_prep.acdc import LABELS, index_acdc
from data_prep.synthetic import write_acdc
from medseg.data.acdc import parse_info_cfg
from medseg.errors import InputError
from medseg.io import load_volume


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return write_acdc(tmp_path_factory.mktemp("acdc"), patients=5, test_patients=1, seed=7)


def test_info_cfg_without_section_header(tmp_path):
    cfg = tmp_path / "Info.cfg"
    cfg.write_text("ED: 1\nES: 12\n\nGroup: DCM\nHeight: 184.0\nNbFrame: 30\nWeight: 95.0\n")
    assert parse_info_cfg(cfg) == {
        "ED": 1, "ES": 12, "Group": "DCM", "Height": 184.0, "NbFrame": 30, "Weight": 95.0,
    }  # fmt: skip
    cfg.write_text("[info]\nED = 1\nES: 12.0\nNbFrame: 30\n")  # configparser-style also fine
    info = parse_info_cfg(cfg)
    assert (info["ED"], info["ES"], info["Group"], info["Height"]) == (1, 12, None, None)


@pytest.mark.parametrize(
    "text,needle",
    [
        ("ES: 12\nNbFrame: 30\n", "'ED'"),
        ("ED: one\nES: 12\nNbFrame: 30\n", "ED='one'"),
        ("ED: 1\nES: 31\nNbFrame: 30\n", "ES=31"),
        ("ED 1\n", "not 'Key: value'"),
    ],
)
def test_bad_info_cfg_names_the_key(tmp_path, text, needle):
    cfg = tmp_path / "Info.cfg"
    cfg.write_text(text)
    with pytest.raises(InputError) as info:
        parse_info_cfg(cfg)
    assert info.value.code == "bad_info_cfg" and needle in info.value.message


def test_synthetic_tree_is_the_raw_acdc_layout(raw):
    base = raw / "database"
    assert (base / "MANDATORY_CITATION.md").is_file()
    assert sorted(p.name for p in (base / "training").iterdir()) == [
        f"patient{i:03d}" for i in range(1, 6)
    ]
    assert [p.name for p in (base / "testing").iterdir()] == ["patient101"]
    p1 = base / "training" / "patient001"
    info = parse_info_cfg(p1 / "Info.cfg")
    assert not (p1 / "Info.cfg").read_text(encoding="utf-8").startswith("[")
    names = {p.name for p in p1.iterdir()}
    ed, es = info["ED"], info["ES"]
    assert names == {
        "Info.cfg", "MANDATORY_CITATION.md", "patient001_4d.nii.gz",
        f"patient001_frame{ed:02d}.nii.gz", f"patient001_frame{ed:02d}_gt.nii.gz",
        f"patient001_frame{es:02d}.nii.gz", f"patient001_frame{es:02d}_gt.nii.gz",
    }  # fmt: skip
    cine = load_volume(p1 / "patient001_4d.nii.gz", volume_index="all")
    assert cine.array.shape == (info["NbFrame"], 64, 64, 8)
    frame = load_volume(p1 / f"patient001_frame{es:02d}.nii.gz")
    np.testing.assert_array_equal(frame.array, cine.array[es - 1])
    np.testing.assert_allclose(frame.spacing, (1.5, 1.5, 10.0))


def test_ed_and_es_cases_map_to_the_right_frames(raw):
    ds = index_acdc(raw)
    assert ds["labels"] == LABELS == {"0": "background", "1": "RV", "2": "MYO", "3": "LV"}
    assert ds["channel_names"] == ["cineMRI"] and ds["layout"] == "acdc"
    assert [e["case"] for e in ds["training"][:2]] == ["patient001_ED", "patient001_ES"]
    assert ds["numTraining"] == 10 and ds["numTest"] == 2
    root = Path(ds["root"])
    for e in ds["training"] + ds["test"]:
        pid = e["patient"]
        info = parse_info_cfg(root / Path(e["image"]).parent / "Info.cfg")
        frame = info[e["phase"]]
        assert e["case"] == f"{pid}_{e['phase']}" and e["frame"] == frame
        assert e["image"].endswith(f"{pid}/{pid}_frame{frame:02d}.nii.gz")
        assert e["label"].endswith(f"{pid}/{pid}_frame{frame:02d}_gt.nii.gz")
        assert (root / e["image"]).is_file() and (root / e["label"]).is_file()
        assert e["group"] == info["Group"] and e["nb_frames"] == info["NbFrame"]
        assert isinstance(e["height"], float) and isinstance(e["weight"], float)
    assert {e["patient"] for e in ds["test"]} == {"patient101"}
    assert all(e["image"].startswith("database/testing/") for e in ds["test"])


def test_labels_are_rv_myo_lv_and_lv_is_larger_at_ed(raw):
    ds = index_acdc(raw)
    root = Path(ds["root"])
    by_case = {e["case"]: e for e in ds["training"]}
    for pid in ("patient001", "patient003"):
        ed = load_volume(root / by_case[f"{pid}_ED"]["label"], role="label").array
        es = load_volume(root / by_case[f"{pid}_ES"]["label"], role="label").array
        assert set(np.unique(ed)) == {0, 1, 2, 3}
        assert (ed == 3).sum() > 1.2 * (es == 3).sum()  # LV blood pool contracts
        lv = ed == 3  # the LV cavity is enclosed by myocardium: no RV/background neighbour
        for axis in (0, 1):
            for shift in (1, -1):
                assert np.isin(np.roll(ed, shift, axis=axis)[lv], (2, 3)).all()
        rv_touch_lv = (np.roll(ed, 1, axis=0) == 1) & lv
        assert not rv_touch_lv.any()
    image = load_volume(root / by_case["patient001_ED"]["image"]).array
    label = load_volume(root / by_case["patient001_ED"]["label"], role="label").array
    assert image[label == 3].mean() > 2 * image[label == 2].mean()  # bright blood, dark wall


@pytest.mark.parametrize("form", ["database", "training_testing", "patients_only"])
def test_accepted_folder_forms(raw, tmp_path, form):
    if form == "database":
        src = raw / "database"
    elif form == "training_testing":
        src = tmp_path / "acdc"
        shutil.copytree(raw / "database" / "training", src / "training")
        shutil.copytree(raw / "database" / "testing", src / "testing")
    else:
        src = raw / "database" / "training"
    ds = index_acdc(src)
    assert ds["numTraining"] == 10
    assert ds["numTest"] == (0 if form == "patients_only" else 2)
    assert all((Path(ds["root"]) / e["image"]).is_file() for e in ds["training"])


def test_hidden_entries_ignored_and_empty_folder_refused(raw, tmp_path):
    src = tmp_path / "acdc"
    shutil.copytree(raw / "database" / "training" / "patient002", src / "patient002")
    (src / "._patient001").mkdir()
    (src / "patient_notes").mkdir()
    ds = index_acdc(src)
    assert [e["case"] for e in ds["training"]] == ["patient002_ED", "patient002_ES"]
    with pytest.raises(InputError, match="no ACDC patient folders") as info:
        index_acdc(tmp_path / "acdc" / "patient002")
    assert info.value.code == "not_found"


def test_synthetic_acdc_is_fast_and_deterministic(tmp_path):
    import nibabel  # noqa: F401  (import time is not the generator's)

    started = time.perf_counter()
    write_acdc(tmp_path / "a", patients=10, seed=5)
    elapsed = time.perf_counter() - started
    assert elapsed < 2.0, f"10-patient synthetic ACDC took {elapsed:.2f} s"
    write_acdc(tmp_path / "b", patients=10, seed=5)
    write_acdc(tmp_path / "c", patients=1, test_patients=0, seed=6)

    def digest(root: Path, rel: str) -> str:
        arr = load_volume(root / rel, role="label").array
        return hashlib.sha256(arr.tobytes()).hexdigest()

    rel = "database/training/patient001/patient001_frame01_gt.nii.gz"
    assert digest(tmp_path / "a", rel) == digest(tmp_path / "b", rel)
    assert digest(tmp_path / "a", rel) != digest(tmp_path / "c", rel)
