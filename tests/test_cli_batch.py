"""Folders of inputs never lose an input (issue 15.2): every input of a run is protected.

``medseg segment cases/ -o cases/ --checkpoint ... --overwrite`` over a folder holding ``a.nii.gz``
and ``a_seg.nii.gz`` (a ground truth named the usual way) used to write case ``a``'s result over
the input ``a_seg.nii.gz``; ``medseg restore`` likewise with ``a_restored.nii.gz``. The run is now
refused before any model work (exit 2), with every input byte-identical and nothing written.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from testkit import write_nifti

from medseg.cli.main import main


def _fake_lightning_ckpt(path: Path, restoration: bool = False) -> Path:
    hparams = {"restoration": {"scale": 1}} if restoration else {"preprocessing": None}
    torch.save({"state_dict": {}, "hyper_parameters": hparams}, path)
    return path


def _cases(folder: Path, names: list[str]) -> dict[Path, str]:
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    digests = {}
    for name in names:
        path = write_nifti(folder / name, rng.normal(size=(8, 8, 4)).astype(np.float32))
        digests[path] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def _unchanged(digests: dict[Path, str]) -> bool:
    return all(hashlib.sha256(p.read_bytes()).hexdigest() == d for p, d in digests.items())


SEGMENT_COLLISIONS = [
    (["a.nii.gz", "a_seg.nii.gz"], [], "a_seg.nii.gz"),
    (["a.nii.gz", "a_probabilities.nii.gz"], ["--save-probabilities"], "a_probabilities.nii.gz"),
    (["b.nii.gz", "scan.nii.gz", "scan_seg.nii.gz"], [], "scan_seg.nii.gz"),
]


@pytest.mark.parametrize("names,extra,victim", SEGMENT_COLLISIONS)
def test_segment_folder_into_itself_never_replaces_an_input(tmp_path, capsys, names, extra, victim):
    cases = tmp_path / "cases"
    digests = _cases(cases, names)
    ckpt = _fake_lightning_ckpt(tmp_path / "run.ckpt")
    argv = ["segment", str(cases), "-o", str(cases), "--checkpoint", str(ckpt), "--overwrite"]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {cases / victim}: ") and "replace the input" in err[-1]
    assert "another folder with -o" in err[-1]
    assert _unchanged(digests)
    assert sorted(p.name for p in cases.iterdir()) == sorted(p.name for p in digests)


def test_segment_output_symlinked_to_another_input_is_refused(tmp_path, capsys):
    """An output folder whose ``a_seg.nii.gz`` is a link to an input of the run."""
    cases = tmp_path / "cases"
    digests = _cases(cases, ["a.nii.gz", "gt.nii.gz"])
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_seg.nii.gz").symlink_to(cases / "gt.nii.gz")
    ckpt = _fake_lightning_ckpt(tmp_path / "run.ckpt")
    argv = ["segment", str(cases), "-o", str(out), "--checkpoint", str(ckpt), "--overwrite"]
    assert main(argv) == 2
    assert "replace the input gt.nii.gz" in capsys.readouterr().err
    assert _unchanged(digests)


@pytest.mark.parametrize("victim", ["a_restored.nii.gz", "b_restored.nii.gz"])
def test_restore_folder_into_itself_never_replaces_an_input(tmp_path, capsys, victim):
    cases = tmp_path / "cases"
    digests = _cases(cases, ["a.nii.gz", "b.nii.gz", victim])
    ckpt = _fake_lightning_ckpt(tmp_path / "rat.ckpt", restoration=True)
    argv = ["restore", str(cases), "-o", str(cases), "--checkpoint", str(ckpt), "--overwrite"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {cases / victim}: ") and "replace the input" in err[-1]
    assert _unchanged(digests)
    assert sorted(p.name for p in cases.iterdir()) == sorted(p.name for p in digests)


def test_folder_without_collisions_is_not_refused_for_them(tmp_path, capsys):
    """The check names only real collisions: a clean folder reaches the checkpoint loader."""
    cases = tmp_path / "cases"
    _cases(cases, ["a.nii.gz", "b.nii.gz"])
    ckpt = _fake_lightning_ckpt(tmp_path / "run.ckpt")
    argv = ["segment", str(cases), "-o", str(cases), "--checkpoint", str(ckpt), "--overwrite"]
    assert main(argv) == 4  # the fake checkpoint holds no network
    assert "replace the input" not in capsys.readouterr().err
