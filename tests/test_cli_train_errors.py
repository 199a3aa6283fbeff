"""``medseg fit`` with a shipped GPU experiment config on a machine without a GPU (issue 15,
item 8): one line naming the CPU overrides, exit 2, before anything is seeded or built (the data
need not exist). The GPU is hidden by patching Lightning's availability checks, so the test
means the same on a machine that has one. A few seconds (LightningCLI parses the real YAML)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

from medseg.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
CPU = "--trainer.accelerator=cpu --trainer.precision=32"


@pytest.fixture
def no_gpu(monkeypatch, tmp_path):
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: False))
    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: False))
    monkeypatch.setenv("MEDSEG_DATA_ROOT", str(tmp_path / "data"))  # nothing prepared there


@pytest.mark.parametrize(
    "extra,hint",
    [
        ([], CPU),
        (["--trainer", str(ROOT / "configs/trainer/ddp.yaml")],
         f"{CPU} --trainer.devices=1 --trainer.strategy=auto"),
    ],
)  # fmt: skip
def test_gpu_config_without_a_gpu_is_one_line_exit_2(no_gpu, tmp_path, capsys, extra, hint):
    run = tmp_path / "run"
    config = str(ROOT / "configs/experiments/wau_acdc.yaml")
    argv = ["fit", "--config", config, *extra, "--trainer.default_root_dir", str(run)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        "error: no GPU found (the config asks for trainer.accelerator: gpu); to train on the "
        f"CPU instead add {hint}"
    ]
    assert "Traceback" not in captured.out and not run.exists()


def test_the_named_overrides_get_past_the_check(no_gpu, tmp_path, capsys):
    """With the overrides the run goes on (here to the missing prepared data, exit 2)."""
    config = str(ROOT / "configs/experiments/sam2_sgp_acdc.yaml")  # accelerator in the file
    argv = ["fit", "--config", config, *CPU.split(), "--trainer.default_root_dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "no GPU found" not in err and "dataset.json not found" in err
