"""configs/: every experiment resolves, fragments compose, and the real compositions train on
synthetic raw MSD/ACDC data prepared by ``data_prep`` (CPU smoke trainer, tiny widths)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from training_kit import smoke_argv

from medseg.cli.main import main as medseg_main
from medseg.cli.train import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
EXPERIMENTS = sorted((CONFIGS / "experiments").glob("*.yaml"))


def test_every_model_and_dataset_has_an_experiment():
    names = {p.stem for p in EXPERIMENTS}
    assert names == {
        f"{m}_{d}"
        for m in ("unet", "wau", "db_sam", "sam2_sgp")
        for d in ("acdc", "task01", "task02", "task04")
    } | {
        "her_seg_task02",
        "her_seg_task09",
        "rat_acdc",
        "rat_task02",
        "rat_task09_lowdose",
        "disgan_task01",
        "disgan_task02",
        "sam2_sgp_task02_3d",
    }


def test_shipped_configs_are_ascii():
    """jsonargparse reads configs in the locale's encoding: under an ASCII locale (CI, many
    containers) one non-ASCII character makes a shipped config unreadable."""
    for path in sorted(Path(CONFIGS).rglob("*.yaml")):
        text = path.read_bytes()
        assert text.isascii(), f"{path}: byte {next(b for b in text if b > 127):#x} is not ASCII"


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.stem)
def test_print_config(path, capsys):
    assert main(["fit", "--config", str(path), "--print_config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    pairs = {
        "medseg.engine.SegmentationTask": "medseg.data.SegmentationDataModule",
        "medseg.engine.PromptableSegmentationTask": "medseg.data.SegmentationDataModule",
        "medseg.engine.RestorationTask": "medseg.data.RestorationDataModule",
        "medseg.engine.AdversarialRestorationTask": "medseg.data.RestorationDataModule",
    }
    data = cfg["data"]["class_path"].replace("SliceChunkDataModule", "SegmentationDataModule")
    assert pairs[cfg["model"]["class_path"]] == data
    assert not Path(cfg["data"]["init_args"]["prep_dir"]).is_absolute()  # no hard-coded paths
    assert cfg["trainer"]["accelerator"] == "gpu"
    if cfg["model"]["class_path"] == "medseg.engine.AdversarialRestorationTask":
        assert cfg["trainer"]["gradient_clip_val"] is None  # manual optimisation refuses it


def test_group_files_and_overrides_compose(capsys):
    args = [
        "fit",
        "--trainer",
        str(CONFIGS / "trainer/ddp.yaml"),
        "--model",
        str(CONFIGS / "model/wau.yaml"),
        "--data",
        str(CONFIGS / "data/acdc.yaml"),
        "--data.init_args.fold=2",
        "--trainer.num_nodes=2",
        "--print_config",
    ]
    assert medseg_main(args) == 0  # through the `medseg` entry point
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["trainer"]["strategy"] == "ddp" and cfg["trainer"]["sync_batchnorm"] is True
    assert cfg["trainer"]["num_nodes"] == 2 and cfg["data"]["init_args"]["fold"] == 2
    assert cfg["model"]["init_args"]["net"]["class_path"] == "medseg.models.wau.WAU"


def _smoke(experiment: str, prep: Path, run: Path, channels: str, *extra: str) -> list[str]:
    return smoke_argv(
        experiment,
        prep,
        run,
        "--data.init_args.batch_size=1",
        "--data.init_args.samples_per_volume=2",
        f"--model.init_args.net.init_args.channels={channels}",
        "--model.init_args.sw_batch_size=1",
        *extra,
    )


def test_unet_acdc_2d_smoke(tmp_path):
    from data_prep import prepare
    from data_prep.synthetic import write_acdc

    prep = prepare(
        "acdc", write_acdc(tmp_path / "raw", patients=5, test_patients=1), tmp_path / "p"
    )
    run = tmp_path / "run"
    args = _smoke(
        "unet_acdc", prep, run, "[8,16,32]", "--model.init_args.net.init_args.strides=[2,2]"
    )
    assert main(args) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert cfg["trainer"]["accelerator"] == "cpu"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    header = (run / "metrics.csv").read_text(encoding="utf-8").splitlines()[0]
    assert {"val/dice", "val/dice_RV", "val/dice_MYO", "val/dice_LV"} <= set(header.split(","))


def test_wau_msd_3d_deep_supervision_smoke(tmp_path):
    from data_prep import prepare
    from data_prep.synthetic import write_msd

    raw = write_msd(tmp_path / "raw", cases=4, test_cases=1, shape=(32, 32, 16))
    prep = prepare("msd", raw, tmp_path / "p", folds=2)
    run = tmp_path / "run"
    assert main(_smoke("wau_task04", prep, run, "[8,16,32]")) == 0
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert "val/dice_lesion" in (run / "metrics.csv").read_text(encoding="utf-8").splitlines()[0]
