"""The real DB-SAM / SAM2-SGP experiment configs train on synthetic raw ACDC/MSD data prepared by
``data_prep`` (CPU smoke trainer, tiny widths), the 3-D SAM2-SGP config included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from test_promptable_task import TINY_DB_SAM, TINY_SGP
from training_kit import smoke_argv

from medseg.cli.main import main as medseg_main
from medseg.cli.train import main
from medseg.errors import ModelError


def _smoke(experiment: str, prep: Path, run: Path, net: dict, *extra: str) -> list[str]:
    sizes = [f"--model.init_args.net.init_args.{k}={json.dumps(v)}" for k, v in net.items()]
    return smoke_argv(
        experiment,
        prep,
        run,
        "--data.init_args.patch_size=[32,32]",
        "--model.init_args.val_batch_size=4",
        "--model.init_args.hd95=false",
        *sizes,
        *extra,
    )


def _msd(tmp: Path, **kw) -> Path:
    from data_prep import prepare
    from data_prep.synthetic import write_msd

    raw = write_msd(tmp / "raw", cases=4, test_cases=1, shape=(32, 32, 12), **kw)
    return prepare("msd", raw, tmp / "p", folds=2)


def _header(run: Path) -> set[str]:
    return set((run / "metrics.csv").read_text(encoding="utf-8").splitlines()[0].split(","))


def test_sam2_sgp_acdc_config_smoke(tmp_path):
    from data_prep import prepare
    from data_prep.synthetic import write_acdc

    raw = write_acdc(tmp_path / "raw", patients=4, test_patients=1, shape=(32, 32, 6))
    prep = prepare("acdc", raw, tmp_path / "p", folds=2)
    run = tmp_path / "run"
    args = _smoke("sam2_sgp_acdc", prep, run, TINY_SGP, "--data.init_args.batch_size=1")
    assert main(args) == 0
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert {"val/dice", "val/dice_RV", "val/dice_MYO", "val/dice_LV"} <= _header(run)


def test_db_sam_task04_config_smoke(tmp_path):
    prep = _msd(tmp_path)
    run = tmp_path / "run"
    args = _smoke("db_sam_task04", prep, run, TINY_DB_SAM, "--data.init_args.batch_size=1")
    assert main(args) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert cfg["model"]["init_args"]["net"]["init_args"]["channel_attention"] == "stage"
    assert {"val/dice", "val/dice_organ", "val/dice_lesion"} <= _header(run)


def test_sam2_sgp_task02_3d_config_trains_on_chunks_and_segments(tmp_path):
    prep = _msd(tmp_path)
    run = tmp_path / "run"
    extra = ["--data.init_args.video_length=3", "--model.init_args.bank_size=2"]
    args = _smoke("sam2_sgp_task02_3d", prep, run, {**TINY_SGP, "support_size": 2}, *extra)
    assert main(args) == 0
    ckpt = run / "checkpoints" / "last.ckpt"
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert cfg["data"]["class_path"] == "medseg.data.SliceChunkDataModule"
    assert {"val/dice", "val/dice_organ", "train/loss_epoch"} <= _header(run)
    task_folder = tmp_path / "raw" / "Task99_Synthetic"
    image = next((task_folder / "imagesTs").glob("*.nii.gz"))
    out = tmp_path / "seg"
    seg = ["segment", str(image), "-o", str(out), "--model", "sam2_sgp", "--checkpoint"]
    seg += [str(ckpt), "--support", str(task_folder), "--device", "cpu", "--quiet"]
    assert medseg_main([*seg, "--support-size", "3", "--bank-size", "2"]) == 0
    report = json.loads(next(out.glob("*_stats.json")).read_text(encoding="utf-8"))
    assert report["support"]["per_slice"] == 3 and report["support"]["slices"] >= 3
    assert medseg_main([*seg, "--support-size", "0", "--overwrite"]) == 2


def test_slice_chunk_data_module_yields_chunks_of_consecutive_slices(tmp_path):
    from training_kit import make_prepared

    from medseg.data import SliceChunkDataModule

    prep = make_prepared(tmp_path, n_cases=3, spatial_dims=2, patch_size=(24, 20))
    with pytest.raises(ValueError, match="video_length"):
        SliceChunkDataModule(str(prep), video_length=0)
    dm = SliceChunkDataModule(
        str(prep), video_length=4, patch_size=[24, 20], num_workers=0, augment=False
    )
    assert dm.preprocessing["spatial_dims"] == 2 and dm.preprocessing["slice_axis"] == 2
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 1, 24, 20, 4) and batch["label"].shape == (2, 1, 24, 20, 4)
    assert len(batch["case"]) == 2
    assert dm.val_dataloader().dataset[0]["image"].ndim == 4  # whole volumes, as in 2-D mode


def test_multi_channel_nets_are_refused_by_the_cli_predictors_with_the_reason():
    from medseg.inference.sam_family import check_single_channel
    from medseg.models.db_sam import tiny

    with pytest.raises(ModelError, match="takes 4 input channels.*one channel.*medseg test"):
        check_single_channel(tiny(in_channels=4, rgb_channels=(0, 2, 3)))
    check_single_channel(torch.nn.Linear(1, 1))  # no in_channels: single-channel
