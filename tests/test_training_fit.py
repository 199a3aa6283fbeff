"""Tiny end-to-end runs of ``medseg fit|validate|predict`` (in-process, CPU, seconds each)."""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
import time

import nibabel as nib
import numpy as np
import pytest
import torch
from training_kit import make_prepared, tiny_config

from medseg.cli.train import main
from medseg.engine import SegmentationTask


def _ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _finite(ckpt) -> bool:
    return all(v.isfinite().all() for v in ckpt["state_dict"].values() if v.is_floating_point())


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fit")
    prep = make_prepared(tmp, n_cases=3)
    cfg = tiny_config(tmp, prep)
    assert main(["fit", "--config", str(cfg)]) == 0
    return tmp, cfg


def test_fit_writes_checkpoints_config_and_metrics(fitted):
    tmp, _ = fitted
    run = tmp / "run"
    ckpts = run / "checkpoints"
    assert (ckpts / "last.ckpt").is_file()
    best = sorted(ckpts.glob("epoch=*-dice=*.ckpt"))
    assert len(best) == 1
    assert "medseg.engine.SegmentationTask" in (run / "config.yaml").read_text(encoding="utf-8")
    rows = list(csv.DictReader((run / "metrics.csv").open(encoding="utf-8")))
    dice = [float(r["val/dice"]) for r in rows if r.get("val/dice")]
    assert len(dice) == 2, (run / "metrics.csv").read_text(encoding="utf-8")
    assert all(0.0 <= d <= 1.0 for d in dice)
    assert {"val/dice_shell", "val/dice_core", "val/hd95", "val/loss"} <= set(rows[0])
    last = _ckpt(ckpts / "last.ckpt")
    assert last["epoch"] == 1 and last["global_step"] == 4  # saved at the end of epoch index 1


def test_load_from_checkpoint_rebuilds_net_and_preprocessing(fitted):
    from monai.networks.nets import UNet

    tmp, _ = fitted
    path = tmp / "run" / "checkpoints" / "last.ckpt"
    task = SegmentationTask.load_from_checkpoint(path, map_location="cpu")
    assert type(task.net) is UNet and task.net.out_channels == 3
    hparams = _ckpt(path)["hyper_parameters"]  # the net is stored as class_path + init_args
    assert hparams["net"]["class_path"] == "monai.networks.nets.UNet"
    assert hparams["net"]["init_args"]["out_channels"] == 3  # linked from the data module
    pre = task.preprocessing
    assert pre["labels"]["2"] == "core" and pre["patch_size"] == [16, 16, 8]
    saved = _ckpt(path)["state_dict"]
    for k, v in task.state_dict().items():
        assert torch.equal(v, saved[k])
    logits = task.eval().predict_logits(torch.randn(1, 1, 24, 20, 8))
    assert tuple(logits.shape) == (1, 3, 24, 20, 8)


def test_resume_continues_and_extends(fitted, tmp_path):
    src, cfg = fitted
    run = tmp_path / "run"
    shutil.copytree(src / "run", run)
    orphan = run / ".tmp" / "tmpdeadbeef"
    orphan.write_bytes(b"x" * 100)
    os.utime(orphan, (time.time() - 3600, time.time() - 3600))
    stale = run / "checkpoints" / "epoch=99-step=999-dice=0.0000.ckpt"
    shutil.copy(run / "checkpoints" / "last.ckpt", stale)
    before = os.environ.get("TMPDIR"), tempfile.tempdir
    args = ["fit", "--config", str(cfg), f"--trainer.default_root_dir={run}"]
    assert main([*args, "--trainer.max_epochs=3", "--ckpt_path", "last"]) == 0
    last = _ckpt(run / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 6  # 2 more steps, not 6
    assert last["lr_schedulers"][0]["last_epoch"] == 3  # the schedule continued
    assert int(last["optimizer_states"][0]["state"][0]["step"]) == 6  # AdamW moments kept
    assert not orphan.exists() and not stale.exists()
    assert len(list((run / "checkpoints").glob("epoch=*.ckpt"))) == 1
    assert (os.environ.get("TMPDIR"), tempfile.tempdir) == before
    epochs = {r["epoch"] for r in csv.DictReader((run / "metrics.csv").open()) if r["epoch"]}
    assert epochs == {"0", "1", "2"}  # the history survives the resume


def test_fresh_fit_refuses_a_used_run_folder(fitted, capsys):
    _, cfg = fitted
    assert main(["fit", "--config", str(cfg)]) == 2
    assert "resume with --ckpt_path last" in capsys.readouterr().err


def test_validate_and_predict_on_the_input_grid(fitted):
    tmp, cfg = fitted
    run = tmp / "run"
    assert main(["validate", "--config", str(cfg), "--ckpt_path", "last"]) == 0
    assert (run / "config_validate.yaml").is_file()
    assert main(["predict", "--config", str(cfg), "--ckpt_path", "last"]) == 0
    out = nib.load(run / "predictions" / "case_000.nii.gz")
    ref = nib.load(tmp / "raw" / "imagesTr" / "case_000.nii.gz")
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-6)
    assert set(np.unique(np.asarray(out.dataobj)).tolist()) <= {0, 1, 2}


def test_nan_loss_stops_with_step_and_keeps_good_checkpoint(tmp_path, capsys):
    prep = make_prepared(tmp_path, n_cases=3)
    cfg = tiny_config(tmp_path, prep, net="training_kit.PoisonAfter", net_args={"after": 3})
    tmp_before = (os.environ.get("TMPDIR"), tempfile.tempdir)
    assert main(["fit", "--config", str(cfg)]) == 4
    # the run's temp folder setting does not outlive the failed run
    assert (os.environ.get("TMPDIR"), tempfile.tempdir) == tmp_before
    assert "non-finite loss at step 3" in capsys.readouterr().err
    ckpts = tmp_path / "run" / "checkpoints"
    last = _ckpt(ckpts / "last.ckpt")  # end of epoch 0, before the poisoned step
    assert last["global_step"] == 2 and _finite(last)
    assert _finite(_ckpt(ckpts / "on_exception.ckpt"))


def test_unreadable_case_exits_2_naming_the_file(tmp_path, capsys):
    prep = make_prepared(tmp_path, n_cases=3, bad_case=1)
    cfg = tiny_config(tmp_path, prep)
    assert main(["fit", "--config", str(cfg)]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "case_001.nii.gz" in err[0] and "truncated" in err[0]
