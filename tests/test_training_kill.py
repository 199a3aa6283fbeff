"""Kill and resume (RELIABILITY.md C.2 #30-31): SIGTERM mid-epoch exits 143 with loadable
checkpoints, and ``--ckpt_path last`` continues from the interruption."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from training_kit import make_prepared, tiny_config

from medseg.cli.train import main

TESTS = Path(__file__).resolve().parent


def _ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_sigterm_mid_epoch_exits_143_and_resumes(tmp_path):
    prep = make_prepared(tmp_path, n_cases=3)
    marker = tmp_path / "marker"
    cfg = tiny_config(
        tmp_path,
        prep,
        net="training_kit.SlowMarker",
        net_args={"after": 6, "marker": str(marker), "delay": 0.1},
        **{"trainer.max_epochs": 3, "data.iterations_per_epoch": 4},
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "medseg.cli.main", "fit", "--config", str(cfg)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    try:
        deadline = time.time() + 240
        while not marker.exists():  # the 6th training step: epoch 1, batch 1 of 4
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "training never reached step 6"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "terminated (SIGTERM)" in err
    ckpts = tmp_path / "run" / "checkpoints"
    last, interrupted = _ckpt(ckpts / "last.ckpt"), _ckpt(ckpts / "on_exception.ckpt")
    assert last["global_step"] == 4  # end of epoch 0
    assert 5 <= interrupted["global_step"] < 8  # mid epoch 1
    assert main(["fit", "--config", str(cfg), "--ckpt_path", "last"]) == 0
    final = _ckpt(ckpts / "last.ckpt")
    assert final["global_step"] == 12  # 3 epochs x 4 steps: nothing repeated, nothing skipped
