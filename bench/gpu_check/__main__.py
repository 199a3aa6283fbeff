"""One-command GPU check (issue 18): every GPU path of medseg in one run, one Markdown report.

    bench/gpu_check.sh                    # on a CUDA machine: all sections, <= --budget seconds
    bench/gpu_check.sh --cpu-dry-run      # here: every section's code at tiny sizes on CPU
    bench/gpu_check.sh --only fit,segment_restore   # a rerun of some sections (restore uses
                                                    # the fit section's RAT checkpoint)
    bench/gpu_check.sh --prepare          # here: build .gpu_deps/ for the device machine

Each section runs in its own child process (``python -m bench.gpu_check --child NAME``) with
its own timeout; a failure, crash or timeout marks that section FAIL and the next one runs. The
sections share one time budget (``--budget``, default 450 s): a section is given at most the
time left, and one that cannot start is SKIP. Without CUDA (and without ``--cpu-dry-run``) every
section is SKIP with the reason, and the exit code is 0; otherwise the exit code is 1 when a
section failed. The report goes to stdout and to ``--report`` (default ``$OUT/gpu_check.md``
when ``OUT`` is set, else ``gpu_check.md``); the children's output goes to the log file beside
it (``gpu_check.log``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.gpu_check.common import ROOT, Context, Result, md_table

# name: (title, module, seconds on CUDA, needs Triton's interpreter in a dry run)
SECTIONS = {
    "pytest_gpu": ("`pytest -m gpu`", "kernel_sections", 120, False),
    "triton_parity": (
        "Triton kernels vs torch reference (fwd+bwd, fp32/bf16, odd sizes, uneven regions)",
        "kernel_sections",
        90,
        True,
    ),
    "bench_kernels": (
        "`bench.kernels` on CUDA: time, bandwidth vs HBM roofline",
        "kernel_sections",
        90,
        True,
    ),
    "her_seg": (
        "HER-Seg training step, Triton vs torch (`bench/her_seg.py --device cuda`)",
        "kernel_sections",
        120,
        True,
    ),
    "litemedsam": (
        "LiteMedSAM 3-D propagation on CUDA vs the fp32 reference loop",
        "app_sections",
        90,
        False,
    ),
    "sliding_window": (
        "Sliding window: ours bf16 vs MONAI fp32, 192^3, Dice per class",
        "app_sections",
        90,
        False,
    ),
    "fit": ("`medseg fit` smoke step per preset, gpu + bf16-mixed", "app_sections", 180, False),
    "segment_restore": (
        "`medseg segment` / `medseg restore --device cuda` vs CPU outputs",
        "app_sections",
        120,
        False,
    ),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes on CPU")
    parser.add_argument("--only", default="", help="comma-separated sections (default: all)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all sections")
    parser.add_argument("--report", default=None, help="Markdown report path")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    only = [s for s in args.only.split(",") if s]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; known: {', '.join(SECTIONS)}")
    out = os.environ.get("OUT")
    report = Path(args.report or (Path(out) / "gpu_check.md" if out else "gpu_check.md"))
    return run_all(only or list(SECTIONS), args.cpu_dry_run, args.budget, report, args.work)


def run_all(names: list[str], dry: bool, budget: float, report: Path, work: str | None) -> int:
    """Run the sections, write and print the report; return the exit code."""
    env_line, card, why_not = _environment()
    mode = "cpu dry run" if dry else ("cuda" if card else "skip")
    results: dict[str, tuple[Result, float]] = {}
    log = report.with_suffix(".log")
    report.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(work) if work else Path(tempfile.mkdtemp(prefix="medseg_gpu_check_"))
    start = time.monotonic()
    with log.open("w", encoding="utf-8") as log_file:
        for name in names:
            left = budget - (time.monotonic() - start)
            if mode == "skip":
                results[name] = (Result("SKIP", why_not), 0.0)
            elif left < 15:
                results[name] = (Result("SKIP", f"time budget ({budget:.0f} s) spent"), 0.0)
            else:
                limit = min(SECTIONS[name][2] * (3 if dry else 1), left)
                t0 = time.monotonic()
                result = _run_child(name, dry, limit, scratch, card, log_file)
                results[name] = (result, time.monotonic() - t0)
            print(
                f"[gpu_check] {name}: {results[name][0].status} {results[name][0].summary}",
                file=sys.stderr,
                flush=True,
            )
    total = time.monotonic() - start
    text = _report(env_line, mode, results, total)
    report.write_text(text, encoding="utf-8")
    print(text)
    if not work:
        shutil.rmtree(scratch, ignore_errors=True)
    return int(any(r.status == "FAIL" for r, _ in results.values()))


def _environment() -> tuple[str, str, str]:
    """``(one line: card, versions, missing packages; the card's name or ""; why no CUDA)``."""
    from bench.gpu_check.deps import missing

    parts = [f"python {platform.python_version()}"]
    card, why = "", ""
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
        if torch.cuda.is_available():
            card = torch.cuda.get_device_name(0)
            cap = ".".join(map(str, torch.cuda.get_device_capability(0)))
            mem = torch.cuda.get_device_properties(0).total_memory / 2**30
            parts.insert(0, f"card **{card}** (sm {cap}, {mem:.0f} GiB)")
        else:
            why = "no CUDA device: torch.cuda.is_available() is False"
    except ImportError as exc:
        why = f"torch cannot be imported ({exc})"
    try:
        import triton

        parts.append(f"triton {triton.__version__}")
    except ImportError:
        parts.append("triton missing")
    gone = missing()
    if gone:
        how = sorted(set(gone.values()))
        parts.append(f"missing: {', '.join(gone)} (provide: {'; '.join(how)})")
    return ", ".join(parts), card, why


def _run_child(name: str, dry: bool, limit: float, scratch: Path, card: str, log) -> Result:
    result_file = scratch / f"{name}.json"
    cmd = [
        sys.executable,
        "-m",
        "bench.gpu_check",
        "--child",
        name,
        "--result",
        str(result_file),
        "--limit",
        str(limit),
        "--work",
        str(scratch / name),
    ]
    cmd += ["--cpu-dry-run"] if dry else []
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MEDSEG_GPU_CHECK_CARD": card}
    env.pop("MEDSEG_KERNELS", None)
    if dry and SECTIONS[name][3]:
        env["TRITON_INTERPRET"] = "1"
    if dry:
        env.setdefault("CUDA_VISIBLE_DEVICES", "")
    log.write(f"\n===== {name} (limit {limit:.0f} s) =====\n")
    log.flush()
    try:
        proc = subprocess.run(
            cmd,
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=limit + 10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Result("FAIL", f"timed out after {limit:.0f} s", _log_tail(log, name))
    if result_file.is_file():
        return Result(**json.loads(result_file.read_text(encoding="utf-8")))
    return Result("FAIL", f"crashed (exit {proc.returncode})", _log_tail(log, name))


def _log_tail(log, name: str, lines: int = 25) -> str:
    log.flush()
    text = Path(log.name).read_text(encoding="utf-8", errors="replace")
    tail = text.rsplit(f"===== {name} ", 1)[-1].splitlines()[-lines:]
    return "```\n" + "\n".join(tail) + "\n```"


def _child(args: argparse.Namespace) -> int:
    """One section in this process; writes its :class:`Result` as JSON to ``--result``."""
    import importlib

    _, module, _, _ = SECTIONS[args.child]
    fn = getattr(importlib.import_module(f"bench.gpu_check.{module}"), args.child)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    dry = args.cpu_dry_run
    ctx = Context(
        dry=dry,
        device="cpu" if dry else "cuda",
        work=work,
        limit=args.limit,
        card=os.environ.get("MEDSEG_GPU_CHECK_CARD", ""),
    )
    if dry:
        import torch

        torch.set_num_threads(min(2, torch.get_num_threads()))
    try:
        result = fn(ctx)
    except Exception as exc:  # the section fails with its reason; the runner goes on
        import traceback

        traceback.print_exc()
        tb = traceback.format_exc().strip().splitlines()[-12:]
        result = Result(
            "FAIL", f"{type(exc).__name__}: {str(exc)[:200]}", "```\n" + "\n".join(tb) + "\n```"
        )
    Path(args.result).write_text(json.dumps(result.__dict__), encoding="utf-8")
    return 0


def _report(env_line: str, mode: str, results: dict, total: float) -> str:
    head = f"# medseg GPU check ({mode})\n\n{env_line}\n\n"
    head += f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, {total:.0f} s in all."
    if mode == "cpu dry run":
        head += (
            " Dry run: tiny sizes on CPU, Triton in its interpreter; PASS means the code"
            " ran; thresholds that compare precisions are not applied."
        )
    rows = [
        [i, SECTIONS[n][0], f"**{r.status}**", f"{s:.0f}", r.summary.replace("|", "/")]
        for i, (n, (r, s)) in enumerate(results.items(), 1)
    ]
    parts = [head, md_table(["#", "section", "status", "s", "summary"], rows)]
    for i, (name, (r, _)) in enumerate(results.items(), 1):
        if r.status == "SKIP" and not r.body:
            continue  # the table row says why
        parts.append(f"## {i}. {SECTIONS[name][0]}: {r.status}\n\n{r.summary}")
        if r.body:
            parts.append(r.body)
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.exit(main())
