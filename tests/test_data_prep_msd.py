"""MSD raw layout: ``._`` junk, Task04 ``relase``, flat test list, 4-D channels, label maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_prep import prepare
from data_prep.checks import check_dataset
from data_prep.msd import case_id, index_msd
from data_prep.synthetic import write_msd
from medseg.errors import InputError
from medseg.io import load_volume

SMALL = {"shape": (16, 16, 8), "spacing": (1.0, 1.0, 1.5)}


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    return write_msd(tmp_path_factory.mktemp("msd"), cases=5, test_cases=2, **SMALL)


def _edit_json(root: Path, **changes) -> None:
    path = root / "dataset.json"
    meta = json.loads(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    path.write_text(json.dumps(meta))


def test_synthetic_tree_is_the_raw_msd_layout(task):
    meta = json.loads((task / "dataset.json").read_text(encoding="utf-8"))
    assert task.name.startswith("Task") and task.name.endswith("_Synthetic")
    assert set(meta) == {
        "name", "description", "reference", "licence", "release", "tensorImageSize",
        "modality", "labels", "numTraining", "numTest", "training", "test",
    }  # fmt: skip
    assert all(isinstance(t, str) and t.startswith("./imagesTs/") for t in meta["test"])
    assert meta["training"][0]["image"].startswith("./imagesTr/")
    assert list((task / "imagesTr").glob("._*")) and list((task / "labelsTr").glob("._*"))
    assert list((task / "imagesTs").glob("._*"))


def test_index_filters_junk_and_reads_the_flat_test_list(task):
    ds = index_msd(task)
    cases = [e["case"] for e in ds["training"]]
    assert cases == [f"synthetic_{i:03d}" for i in range(1, 6)]
    assert [e["case"] for e in ds["test"]] == ["synthetic_006", "synthetic_007"]
    assert all("label" not in e for e in ds["test"])
    for e in ds["training"] + ds["test"]:
        assert not e["image"].startswith("./") and "._" not in e["image"]
        assert e["patient"] == e["case"]
        assert (Path(ds["root"]) / e["image"]).is_file()
    assert ds["labels"] == {"0": "background", "1": "organ", "2": "lesion"}
    assert ds["modality"] == {"0": "MRI"} and ds["channel_names"] == ["MRI"]
    assert ds["tensorImageSize"] == "3D" and ds["numTraining"] == 5 and ds["numTest"] == 2
    assert ds["release"] == "1.0 synthetic" and ds["layout"] == "msd"
    assert Path(ds["root"]).is_absolute()


def test_relase_typo_junk_entries_and_nnunet_labels(tmp_path):
    root = write_msd(tmp_path, cases=2, test_cases=1, **SMALL)
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    meta["relase"] = meta.pop("release")  # Task04_Hippocampus
    meta["training"].append({"image": "./imagesTr/._synthetic_001.nii.gz", "label": "./x"})
    meta["test"].append("./imagesTs/._synthetic_003.nii.gz")
    meta["labels"] = {"background": 0, "organ": 1, "lesion": 2}  # nnU-Net v2 orientation
    (root / "dataset.json").write_text(json.dumps(meta))
    ds = index_msd(root)
    assert ds["release"] == "1.0 synthetic"
    assert [e["case"] for e in ds["training"]] == ["synthetic_001", "synthetic_002"]
    assert [e["case"] for e in ds["test"]] == ["synthetic_003"]
    assert ds["labels"] == {"0": "background", "1": "organ", "2": "lesion"}


def test_without_training_list_the_folders_are_scanned(tmp_path):
    root = write_msd(tmp_path, cases=3, test_cases=0, **SMALL)
    _edit_json(root, training=None)
    ds = index_msd(root)
    assert [e["case"] for e in ds["training"]] == [f"synthetic_{i:03d}" for i in (1, 2, 3)]
    assert ds["training"][0]["label"] == "labelsTr/synthetic_001.nii.gz"


@pytest.mark.parametrize(
    "change,needle",
    [
        ({"labels": {"0": "background", "2": "lesion"}}, "consecutive"),
        ({"modality": None}, "modality"),
        ({"training": [{"image": "../outside.nii.gz", "label": "./labelsTr/x"}]}, "relative"),
        ({"training": [{"image": "./imagesTr/synthetic_001.nii.gz"}]}, "training[0]"),
    ],
)
def test_bad_dataset_json_is_named(tmp_path, change, needle):
    root = write_msd(tmp_path, cases=1, test_cases=0, **SMALL)
    _edit_json(root, **change)
    with pytest.raises(InputError) as info:
        index_msd(root)
    assert info.value.code == "bad_dataset_json" and needle in info.value.message
    assert info.value.path.endswith("dataset.json")


def test_not_a_task_folder(tmp_path):
    with pytest.raises(InputError, match="dataset.json") as info:
        index_msd(tmp_path)
    assert info.value.code == "not_found"
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        index_msd(tmp_path)


def test_case_id_strips_volume_extensions():
    assert case_id("./imagesTr/spleen_10.nii.gz") == "spleen_10"
    assert case_id("imagesTr/BRATS_001.nii") == "BRATS_001"
    assert case_id("a/b/prostate_00.mha") == "prostate_00"


def test_four_d_multichannel_images(tmp_path):
    root = write_msd(tmp_path, cases=5, test_cases=1, channels=2, **SMALL)
    ds = index_msd(root)
    assert ds["channel_names"] == ["T2", "ADC"] and ds["tensorImageSize"] == "4D"
    import nibabel as nib

    first = root / ds["training"][0]["image"]
    assert nib.load(str(first)).shape == (16, 16, 8, 2)  # on disk: channels last (MSD)
    vol = load_volume(first, volume_index="all")
    assert vol.array.shape == (2, 16, 16, 8)
    assert not np.allclose(vol.array[0], vol.array[1])  # the channels differ in contrast
    report = check_dataset(ds)
    assert len(report.good) == 5 and not report.skipped
    out = prepare("msd", root, tmp_path / "prep", seed=1)
    fp = json.loads((out / "fingerprint.json").read_text(encoding="utf-8"))
    assert fp["num_channels"] == 2 and fp["modality_kind"] == "mr"
    assert fp["normalisation"] == [{"scheme": "zscore"}, {"scheme": "zscore"}]


def test_channel_count_must_match_modality(tmp_path):
    root = write_msd(tmp_path, cases=2, test_cases=0, channels=2, **SMALL)
    _edit_json(root, modality={"0": "FLAIR", "1": "T1w", "2": "T2w"})
    with pytest.raises(InputError) as info:
        check_dataset(index_msd(root))
    msg = info.value.message
    assert msg.startswith("case synthetic_001: image channels") and "3 modality" in msg


def test_ct_fingerprint_uses_foreground_hu_statistics(tmp_path):
    root = write_msd(tmp_path, cases=5, test_cases=0, ct=True, **SMALL)
    out = prepare("msd", root, tmp_path / "prep", seed=3)
    fp = json.loads((out / "fingerprint.json").read_text(encoding="utf-8"))
    ds = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert ds["channel_names"] == ["CT"] and fp["modality_kind"] == "ct"
    (norm,) = fp["normalisation"]
    assert norm["scheme"] == "ct"
    lo, hi = norm["clip"]
    # foreground = organ (~110 HU) + lesion (~55 HU) + noise: never air, never bone
    assert -50 < lo < norm["mean"] < hi < 250
    assert 40 < norm["mean"] < 130 and 5 < norm["std"] < 60
    assert fp["target_spacing"] == [1.0, 1.0, 1.5] and fp["spatial_dims"] == 3
    assert fp["patch_size"] == [16, 16, 16] and fp["shape_median"] == [16, 16, 8]
