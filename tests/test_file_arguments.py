"""Every file argument refuses FIFOs, devices and folders in seconds, before any model work.

A FIFO would block the first ``open`` forever and ``/dev/zero`` would be read until memory runs
out; each argument goes through ``medseg.files`` before anything is opened or loaded. The model
files named here are never loaded: every case must be refused before that.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from testkit import ellipsoid_volume

from medseg.cli.main import main


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _dev_zero(path: Path) -> Path:
    path.symlink_to("/dev/zero")
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    (path / "notes.txt").write_text("not an image\n")
    return path


KINDS = {"fifo": _fifo, "dev_zero": _dev_zero, "folder": _folder}


@pytest.fixture(autouse=True)
def _no_hang():
    def fail(signum, frame):  # noqa: ARG001
        raise TimeoutError("a file argument blocked (FIFO or device read)")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture()
def scan(tmp_path: Path) -> Path:
    image, _ = ellipsoid_volume((20, 18, 6), radii=(5, 4, 2))
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(tmp_path / "scan.nii.gz"))
    return tmp_path / "scan.nii.gz"


@pytest.fixture()
def dummy_ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "never_loaded.ckpt"
    path.write_bytes(b"a regular file the refusals must come before")
    return path


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_prompts_file(tmp_path, scan, capsys, kind):
    bad = KINDS[kind](tmp_path / "prompts.json")
    code, err = _run(["segment", scan, "-o", tmp_path / "out", "--prompts", bad], capsys)
    assert code == 2 and "prompts file" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_segmentation_checkpoint_of_a_restore(tmp_path, scan, dummy_ckpt, capsys, kind):
    bad = KINDS[kind](tmp_path / "seg.ckpt")
    code, err = _run(["restore", scan, "-o", tmp_path / "out", "--checkpoint", dummy_ckpt,
                      "--seg-checkpoint", bad, "--reference", scan], capsys)  # fmt: skip
    assert code == 4 and "seg.ckpt" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_reference_of_a_restore(tmp_path, scan, dummy_ckpt, capsys, kind):
    bad = KINDS[kind](tmp_path / "reference.nii.gz")
    code, err = _run(["restore", scan, "-o", tmp_path / "out", "--checkpoint", dummy_ckpt,
                      "--seg-checkpoint", dummy_ckpt, "--reference", bad], capsys)  # fmt: skip
    assert code == 2 and "reference.nii.gz" in err, err


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_restoration_checkpoint(tmp_path, scan, capsys, kind):
    bad = KINDS[kind](tmp_path / "rat.ckpt")
    code, err = _run(["restore", scan, "-o", tmp_path / "out", "--checkpoint", bad], capsys)
    assert code == 4 and "rat.ckpt" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_support_files_of_sam2_sgp(tmp_path, scan, dummy_ckpt, capsys, kind):
    support = tmp_path / "support"
    support.mkdir()
    KINDS[kind](support / "case.nii.gz")
    nib.save(nib.load(str(scan)), str(support / "case_label.nii.gz"))
    code, err = _run(["segment", scan, "-o", tmp_path / "out", "--model", "sam2_sgp",
                      "--checkpoint", dummy_ckpt, "--support", support], capsys)  # fmt: skip
    # a support image that is not a regular file is no pair: refused, nothing opened
    assert code == 2 and "support: no image/label pairs" in err, err
