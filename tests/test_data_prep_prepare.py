"""``prepare`` / ``load_prepared`` / ``medseg prepare``: the three JSON files and their schemas."""

from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from data_prep import prepare, write_synthetic
from medseg.cli.main import main
from medseg.data.prepared_files import case_paths, load_prepared
from medseg.errors import InputError
from medseg.io import load_volume

ROOT = Path(__file__).resolve().parents[1]
DATASET_KEYS = {
    "name", "layout", "root", "release", "modality", "channel_names", "labels",
    "tensorImageSize", "numTraining", "numTest", "training", "test", "skipped", "warnings",
}  # fmt: skip
SPLITS_KEYS = {"seed", "group_by", "stratify_by", "num_folds", "folds"}
FINGERPRINT_KEYS = {
    "spatial_dims", "modality_kind", "num_channels", "num_classes", "spacing_median",
    "target_spacing", "shape_median", "slice_axis", "patch_size", "normalisation", "cases",
}  # fmt: skip
ACDC_ENTRY_KEYS = {
    "case", "patient", "image", "label", "phase", "frame", "group", "height", "weight", "nb_frames",
}  # fmt: skip


@pytest.fixture(scope="module")
def acdc_raw(tmp_path_factory) -> Path:
    return write_synthetic("acdc", tmp_path_factory.mktemp("raw"), cases=5, test_cases=1, seed=1)


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_prepare_writes_the_three_files_with_the_documented_keys(acdc_raw, tmp_path):
    before = _tree_digest(acdc_raw)
    out = prepare("acdc", acdc_raw, tmp_path / "prep", seed=99)
    assert _tree_digest(acdc_raw) == before  # raw data untouched
    assert sorted(p.name for p in out.iterdir()) == [
        "dataset.json",
        "fingerprint.json",
        "splits.json",
    ]  # fmt: skip  (no temporary files left)
    dataset, splits, fp = load_prepared(out)
    assert set(dataset) == DATASET_KEYS and set(splits) == SPLITS_KEYS
    assert set(fp) == FINGERPRINT_KEYS
    assert dataset["root"] == str(acdc_raw.resolve()) and dataset["skipped"] == []
    assert all(set(e) == ACDC_ENTRY_KEYS for e in dataset["training"] + dataset["test"])
    assert splits["seed"] == 99 and len(splits["folds"]) == 5
    entry = dataset["training"][0]
    image, label = case_paths(dataset, entry)
    assert not Path(entry["image"]).is_absolute() and image.is_file() and label.is_file()
    assert load_volume(label, role="label").array.max() == 3


def test_load_prepared_errors_say_what_to_run(acdc_raw, tmp_path):
    with pytest.raises(InputError, match="run `medseg prepare") as info:
        load_prepared(tmp_path / "nowhere")
    assert info.value.code == "not_prepared"
    out = prepare("acdc", acdc_raw, tmp_path / "prep")
    (out / "splits.json").write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        load_prepared(out)
    (out / "splits.json").write_text('{"folds": []}')
    with pytest.raises(InputError, match="seed"):
        load_prepared(out)


def test_load_prepared_root_override(acdc_raw, tmp_path):
    out = prepare("acdc", acdc_raw, tmp_path / "prep")
    ds_path = out / "dataset.json"
    ds = json.loads(ds_path.read_text(encoding="utf-8"))
    ds["root"] = str(tmp_path / "moved")
    ds_path.write_text(json.dumps(ds))
    with pytest.raises(InputError, match="not found") as info:
        load_prepared(out)
    assert info.value.code == "not_found"
    dataset, _, _ = load_prepared(out, root=acdc_raw)
    assert case_paths(dataset, dataset["test"][0])[1].is_file()


def test_refuses_to_write_into_the_raw_folder_or_over_results(acdc_raw, tmp_path):
    for out in (acdc_raw, acdc_raw / "database" / "prep"):
        with pytest.raises(InputError, match="outside the raw folder") as info:
            prepare("acdc", acdc_raw, out)
        assert info.value.code == "would_modify_raw"
    assert not (acdc_raw / "database" / "prep").exists()
    out = prepare("acdc", acdc_raw, tmp_path / "prep")
    with pytest.raises(InputError, match="--overwrite") as info:
        prepare("acdc", acdc_raw, out)
    assert info.value.code == "exists"
    prepare("acdc", acdc_raw, out, overwrite=True, seed=5)
    assert load_prepared(out)[1]["seed"] == 5


def test_cli_synthetic_then_prepare(tmp_path, capsys):
    raw = tmp_path / "raw"
    assert main(["prepare", "synthetic", "--layout", "msd", "--out", str(raw), "--cases", "5"]) == 0
    task = raw / "Task99_Synthetic"
    assert (task / "dataset.json").is_file()
    assert "medseg prepare msd --src" in capsys.readouterr().out
    prep = tmp_path / "prep"
    argv = ["prepare", "msd", "--src", str(task), "--out", str(prep), "--seed", "3"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for needle in ("5 training", "1 organ", "2 lesion", "target spacing: 1 x 1 x 1.5 mm", "patch"):
        assert needle in out
    assert {p.name for p in prep.iterdir()} == {"dataset.json", "splits.json", "fingerprint.json"}
    assert json.loads((prep / "splits.json").read_text(encoding="utf-8"))["seed"] == 3
    assert main(argv) == 2  # exists without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite", "-q"]) == 0
    assert capsys.readouterr().out == ""


def test_cli_bad_tree_exits_2_naming_the_case(acdc_raw, tmp_path, capsys):
    import shutil

    import nibabel as nib

    src = tmp_path / "acdc"
    shutil.copytree(acdc_raw / "database", src / "database")
    gt = src / "database/training/patient002/patient002_frame01_gt.nii.gz"
    img = nib.load(str(gt))
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(gt))
    prep = tmp_path / "prep"
    assert main(["prepare", "acdc", "--src", str(src), "--out", str(prep), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    assert "case patient002_ED: label: unexpected label values {7}" in err[0]
    assert not prep.exists()
    assert main(["prepare", "acdc", "--src", str(src), "--out", str(prep), "--skip-bad"]) == 0
    assert "skipped patient002_ED" in capsys.readouterr().out
    ds = json.loads((prep / "dataset.json").read_text(encoding="utf-8"))
    assert [s["case"] for s in ds["skipped"]] == ["patient002_ED"]


def test_cli_argument_errors_exit_2(tmp_path, capsys):
    assert main(["prepare"]) == 2
    (tmp_path / "empty").mkdir()
    assert (
        main(["prepare", "msd", "--src", str(tmp_path / "empty"), "--out", str(tmp_path / "p")])
        == 2
    )
    assert "no dataset.json here" in capsys.readouterr().err
    assert main(["prepare", "synthetic", "--layout", "acdc", "--out", str(tmp_path), "--ct"]) == 2


def test_data_prep_imports_only_medseg_io_data_and_errors():
    """``data_prep`` writes the prepared format; the library's readers (``medseg.data``) and
    ``medseg.io`` are all it takes from medseg (tests/test_architecture.py: never the CLI)."""
    for path in sorted((ROOT / "data_prep").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")
                if top[0] == "medseg":
                    assert top[1] in {"io", "data", "errors"}, f"{path.name} imports {name}"
                assert top[0] not in {"torch", "monai", "lightning"}, f"{path.name}: {name}"
