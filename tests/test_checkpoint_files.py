"""Checkpoints that are not regular files (issue 15, items 3-4): a FIFO would block the open
forever, ``/dev/zero`` would be read as a zip until memory runs out. Every path that opens a
user-named checkpoint or weights file refuses them first, in seconds, with exit 4 and one
``error:`` line naming what the file is.

Each kind runs in a child process with a timeout, so a regression (a hang, an endless read)
fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

CHILD_TIMEOUT_S = 120
PROBE_LIMIT_S = 30.0  # generous for a busy 2-core CPU; a refusal takes well under a second
BOX = ["--box", "1,1,6,6", "--slice", "2"]

# Runs in the child: every probe named in PROBES, against the bad checkpoint argv[1]; prints
# one JSON line per probe.
CHILD = r"""
import contextlib, io, json, sys, time
from pathlib import Path

from torch import nn

bad, work = sys.argv[1], Path(sys.argv[2])
image, reference, dummy = work / "scan.nii.gz", work / "ref.nii.gz", work / "dummy.ckpt"


class Identity2D(nn.Module):
    spatial_dims, scale = 2, 1

    def forward(self, x):
        return x.clone()


def cli(name, argv, fake_restorer=False):
    from medseg.cli.main import main
    from medseg.inference.restoration import Restorer

    saved = Restorer.__dict__["from_checkpoint"]
    if fake_restorer:  # a known restorer, so the run reaches --seg-checkpoint
        restoration = {"spatial_dims": 2, "scale": 1, "intensity": {"scheme": "zscore"},
                       "channel": 0, "patch_size": [16, 16]}
        Restorer.from_checkpoint = classmethod(
            lambda cls, path, **kw: cls(Identity2D(), restoration, device="cpu"))
    err = io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
    finally:
        Restorer.from_checkpoint = saved
    return {"probe": name, "rc": rc, "stderr": err.getvalue(),
            "seconds": time.perf_counter() - start}


def call(name, fn):
    from medseg.errors import MedsegError

    start = time.perf_counter()
    try:
        value = fn()
    except MedsegError as e:
        return {"probe": name, "rc": e.exit_code, "stderr": f"error: {e}\n",
                "seconds": time.perf_counter() - start}
    return {"probe": name, "value": repr(value), "seconds": time.perf_counter() - start}


def out(n):
    return str(work / f"out{n}")


def db_sam_with_sam_weights():
    from medseg.models.db_sam import tiny

    return tiny(sam_checkpoint=bad)


def sam2_sgp_with_sam2_weights():
    from medseg.models.sam2_sgp import tiny

    return tiny(sam2_checkpoint=bad)


def feature_extractor():
    from medseg.models.disgan import ResNet10Features

    return ResNet10Features(widths=(4, 4, 8, 8), weights=bad)


def viewer_hub():
    from apps.viewer.models import hub_from_checkpoints

    return hub_from_checkpoints([bad], device="cpu")


def promptable(model):
    from medseg.inference.sam_family import load_promptable_net

    return lambda: load_promptable_net(model, bad, device="cpu")


def kind():
    from medseg.inference.checkpoints import checkpoint_kind

    return checkpoint_kind(bad)


def state_dict():
    from medseg.models.weights import read_state_dict

    return read_state_dict(bad)


probes = [
    lambda: cli("segment_box", ["segment", str(image), "-o", out(1), "--checkpoint", bad,
                                "--box", "1,1,6,6", "--slice", "2"]),
    lambda: cli("segment_automatic", ["segment", str(image), "-o", out(2), "--checkpoint", bad]),
    lambda: cli("segment_db_sam", ["segment", str(image), "-o", out(3), "--model", "db_sam",
                                   "--checkpoint", bad, "--box", "1,1,6,6", "--slice", "2"]),
    lambda: cli("restore", ["restore", str(image), "-o", out(4), "--checkpoint", bad]),
    lambda: cli("restore_seg_checkpoint",
                ["restore", str(image), "-o", out(5), "--checkpoint", str(dummy),
                 "--seg-checkpoint", bad, "--reference", str(reference)], fake_restorer=True),
    lambda: call("checkpoint_kind", kind),
    lambda: call("read_state_dict", state_dict),
    lambda: call("load_promptable_net_db_sam", promptable("db_sam")),
    lambda: call("load_promptable_net_sam2_sgp", promptable("sam2_sgp")),
    lambda: call("db_sam_sam_checkpoint", db_sam_with_sam_weights),
    lambda: call("sam2_sgp_sam2_checkpoint", sam2_sgp_with_sam2_weights),
    lambda: call("disgan_feature_weights", feature_extractor),
    lambda: call("viewer_hub", viewer_hub),
]
for probe in probes:
    print(json.dumps(probe()), flush=True)
"""

CLI_PROBES = {
    "segment_box",
    "segment_automatic",
    "segment_db_sam",
    "restore",
    "restore_seg_checkpoint",
}
WHAT = {"fifo": "a FIFO/pipe", "dev_zero": "a device", "link": "a device", "folder": "a folder"}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A small scan, a label map on its grid and a stand-in restoration checkpoint file."""
    work = tmp_path_factory.mktemp("ckpt_files")
    rng = np.random.default_rng(0)
    scan = rng.normal(100, 20, (12, 12, 6)).astype(np.float32)
    nib.save(nib.Nifti1Image(scan, np.eye(4)), str(work / "scan.nii.gz"))
    ref = np.zeros((12, 12, 6), np.uint8)
    ref[3:8, 3:8, 1:4] = 1
    nib.save(nib.Nifti1Image(ref, np.eye(4)), str(work / "ref.nii.gz"))
    (work / "dummy.ckpt").write_bytes(b"stand-in: Restorer.from_checkpoint is replaced")
    return work


def _bad_checkpoint(kind: str, folder: Path) -> str:
    if kind == "fifo":
        path = folder / "pipe.ckpt"
        os.mkfifo(path)
    elif kind == "dev_zero":
        return "/dev/zero"
    elif kind == "link":
        path = folder / "weights.pth"
        path.symlink_to("/dev/zero")
    else:
        path = folder / "run.ckpt"
        path.mkdir()
    return str(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="POSIX")
@pytest.mark.parametrize("kind", sorted(WHAT))
def test_non_regular_checkpoints_are_refused_in_seconds(kind, work, tmp_path):
    bad = _bad_checkpoint(kind, tmp_path)
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, bad, str(work)],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            cwd=Path(__file__).resolve().parents[1],
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{kind}: hung; probes done: {e.stdout!r}")
    assert done.returncode == 0, done.stderr[-2000:]
    results = {r["probe"]: r for r in map(json.loads, done.stdout.splitlines())}
    assert len(results) == 13, sorted(results)
    expected = f"checkpoint: not a regular file (it is {WHAT[kind]})"
    assert results.pop("checkpoint_kind")["value"] == "'unknown'"
    for name, result in results.items():
        assert result["seconds"] < PROBE_LIMIT_S, (name, result)
        assert result.get("rc") == 4, (name, result)
        lines = result["stderr"].strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: "), (name, lines)
        assert "not a regular file" in lines[0] and f"(it is {WHAT[kind]})" in lines[0], name
        if name in CLI_PROBES or name.startswith(("load_promptable", "viewer")):
            assert expected in lines[0], (name, lines)
    for n in range(1, 6):  # nothing written
        folder = work / f"out{n}"
        assert not folder.exists() or not any(folder.glob("*.nii.gz")), n
