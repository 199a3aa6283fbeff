"""bench/gpu_check.sh (issue 18) without a GPU: every section SKIP with the reason and exit 0;
the CPU dry run runs a section's code (Triton interpreted) in its child process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = [
    "pytest_gpu",
    "triton_parity",
    "bench_kernels",
    "her_seg",
    "litemedsam",
    "sliding_window",
    "fit",
    "segment_restore",
]


def _run(
    tmp_path: Path, *args: str, timeout: float = 120
) -> tuple[subprocess.CompletedProcess, str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OUT": str(tmp_path / "out")}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_check.sh"), *args],
        cwd=tmp_path,
        env={**env, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    report = tmp_path / "out" / "gpu_check.md"
    assert report.is_file(), proc.stderr[-3000:]
    text = report.read_text(encoding="utf-8")
    assert proc.stdout.strip() == text.strip()  # the same report on stdout
    return proc, text


def _statuses(text: str) -> list[str]:
    """The status column of the summary table, in section order."""
    rows = [line.split("|") for line in text.splitlines() if line.startswith("| ")]
    return [r[3].strip(" *") for r in rows if r[1].strip().isdigit()]


def test_without_cuda_every_section_is_skipped_with_the_reason(tmp_path: Path) -> None:
    proc, text = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    statuses = _statuses(text)
    assert statuses == ["SKIP"] * len(SECTIONS)
    assert text.count("no CUDA device: torch.cuda.is_available() is False") >= len(SECTIONS)
    assert "# medseg GPU check (skip)" in text and "torch " in text
    assert (tmp_path / "out" / "gpu_check.log").is_file()


def test_unknown_sections_are_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check", "--only", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "unknown sections ['nope']" in proc.stderr


def test_dry_run_runs_the_triton_section_in_the_interpreter(tmp_path: Path) -> None:
    proc, text = _run(tmp_path, "--cpu-dry-run", "--only", "triton_parity")
    assert proc.returncode == 0, text
    assert _statuses(text) == ["PASS"]
    assert "Triton interpreter in use: True" in text and "window-3d-aniso" in text


@pytest.mark.slow
def test_dry_run_runs_every_section(tmp_path: Path) -> None:
    """Every section's code at tiny sizes on CPU (minutes on the 2-core dev machine)."""
    proc, text = _run(tmp_path, "--cpu-dry-run", "--budget", "1500", timeout=1800)
    assert _statuses(text) == ["PASS"] * len(SECTIONS), text
    assert proc.returncode == 0
