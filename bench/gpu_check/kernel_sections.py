"""GPU-check sections for the attention kernels: ``pytest -m gpu``, Triton vs reference parity,
``bench.kernels`` with achieved bandwidth, and the HER-Seg training step (``bench.her_seg``).

Each section is ``fn(ctx) -> Result``; ``ctx.dry`` runs it at tiny sizes on CPU, the Triton
kernels in Triton's interpreter (the runner sets ``TRITON_INTERPRET=1`` for these sections).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import math
import re
import statistics
import subprocess
import sys
import time
from argparse import Namespace

from bench.gpu_check.common import ROOT, Context, Result, hbm_peak_gbs, md_table

FP32_TOL, BF16_TOL = (1e-4, 1e-4), (3e-2, 6e-2)  # (output, gradients), as tests/ use on CUDA


def load_test_module(name: str):
    """A module of ``tests/`` (its helpers: cases, inputs, tolerances), loaded by path."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.append(tests)  # the test modules import their kits (training_kit, ...)
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_gpu(ctx: Context) -> Result:
    """``pytest -m gpu`` over the test files that have ``gpu`` tests."""
    files = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").glob("test_*.py")
        if "mark.gpu" in p.read_text(encoding="utf-8")
    )
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rfEs", "-p", "no:cacheprovider"]
    proc = subprocess.run(
        [*cmd, *files], cwd=ROOT, capture_output=True, text=True, check=False, timeout=ctx.limit
    )
    out = proc.stdout + proc.stderr
    print(out)
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", out)}
    summary = ", ".join(f"{n} {k}" for k, n in counts.items()) or "no summary line"
    body = f"`{' '.join(['pytest', *cmd[3:], *files])}`\n\n```\n{_tail(out, 25)}\n```"
    if proc.returncode != 0:
        return Result("FAIL", f"exit {proc.returncode}: {summary}", body)
    if ctx.dry:
        return Result("PASS", f"collected and skipped without CUDA: {summary}", body)
    ok = counts.get("passed", 0) > 0 and not counts.get("skipped")
    return Result("PASS" if ok else "FAIL", summary, body)


def triton_parity(ctx: Context) -> Result:
    """Triton forward + backward vs the torch reference: segment/region/window cases (odd sizes,
    uneven and one-token regions, cross-attention, padding) and linear attention; fp32 and bf16
    (fp32 only in the interpreter)."""
    import torch

    seg = load_test_module("test_kernels_triton")
    lin = load_test_module("test_kernels_linear")
    dtypes = [torch.float32] if ctx.dry else [torch.float32, torch.bfloat16]
    rows, bad = [], 0
    for dtype in dtypes:
        tol = FP32_TOL if dtype == torch.float32 else BF16_TOL
        for name in seg.CASES:
            errors = seg._errors(name, ctx.device, dtype)
            rel = {k: errors[k] / max(1.0, errors[k + "_scale"]) for k in ("out", "dq", "dk", "dv")}
            ok = errors["dtype_ok"] and all(rel[k] <= tol[k != "out"] for k in rel)
            bad += not ok
            rows.append([name, str(dtype)[6:], *(f"{rel[k]:.1e}" for k in rel), _ok(ok)])
        shapes = [(1, 70, 2, 6, 10)] if ctx.dry else [(2, 1000, 3, 6, 10), (1, 16_384, 4, 32, 32)]
        for shape in shapes:
            for rope in (None, "shared"):
                rel = _linear_errors(lin, shape, rope, dtype, ctx.device)
                ok = all(rel[k] <= tol[k != "out"] * 2 for k in rel)  # tests: rtol+atol 2e-2
                bad += not ok
                name = f"linear {'x'.join(map(str, shape))} rope={rope}"
                rows.append([name, str(dtype)[6:], *(f"{rel[k]:.1e}" for k in rel), _ok(ok)])
    head = ["case", "dtype", "out", "dq", "dk", "dv", "ok"]
    body = "max |triton - reference| / max(1, max |reference|)\n\n" + md_table(head, rows)
    if ctx.dry:
        import kernels._triton_segments as segs

        interpreted = type(segs._fwd_kernel).__name__ == "InterpretedFunction"
        body += f"\n\nTriton interpreter in use: {interpreted}"
        bad += not interpreted
    status = "FAIL" if bad else "PASS"
    return Result(status, f"{len(rows) - bad}/{len(rows)} cases within tolerance", body)


def _linear_errors(lin, shape, rope, dtype, device) -> dict[str, float]:
    import torch

    import kernels

    inputs, tables = lin.make_inputs(*shape, rope, dtype=dtype)
    inputs = [t.detach().to(device).requires_grad_() for t in inputs]
    tables = tables and tuple(t.to(device) for t in tables)
    grad = torch.randn(*shape[:3], shape[4]).to(device, dtype)
    got, got_g = lin.forward_and_grads(
        kernels.linear_attention, inputs, grad, rope=tables, impl="triton"
    )
    ref_in = [t.detach().float().requires_grad_() for t in inputs]
    want, want_g = lin.forward_and_grads(
        lin.linear_attention_reference, ref_in, grad.float(), rope=tables
    )
    out = {"out": _rel(got, want)}
    out.update({k: _rel(a, w) for k, a, w in zip(("dq", "dk", "dv"), got_g, want_g, strict=True)})
    return out


def _rel(a, b) -> float:
    return (a.float() - b).abs().max().item() / max(1.0, b.abs().max().item())


def bench_kernels(ctx: Context) -> Result:
    """``bench.kernels`` window/region rows (+ linear) with achieved bandwidth; on CUDA also the
    Triton window kernel alone (CUDA events, and CUDA-graph replay without launch overhead)."""
    import torch

    bk = importlib.import_module("bench.kernels")
    sizes = [256] if ctx.dry else [4096, 16_384]
    dtypes = ["float32"] if ctx.dry else ["float32", "bfloat16"]
    peak = hbm_peak_gbs(ctx.card) if not ctx.dry else None
    rows, bad = [], []
    for dtype in dtypes:
        args = Namespace(device=ctx.device, repeats=1 if ctx.dry else 10, quick=False, wait=0.0)
        args.dtype = dtype
        short = dtype.replace("bfloat", "bf").replace("float", "fp")
        for op in ("window", "region"):
            for n in sizes:
                for row in bk._bench_op(op, n, args):
                    size = getattr(torch, dtype).itemsize
                    gbs = 4 * n * bk.HEADS * bk.DIM * size / (row["ms"] * 1e6)  # Q+K+V+O
                    fwd = row["mode"] == "fwd"
                    frac = f"{gbs / peak:.1%}" if peak and fwd else "-"
                    err = float("nan") if row["max err"] == "ref" else float(row["max err"])
                    if err > (1e-3 if dtype == "float32" else 1e-1):
                        bad.append(f"{op} {short} N={n} {row['mode']} {row['path']}")
                    cells = [op, short, n, row["mode"], row["path"], f"{row['ms']:.3f}"]
                    cells += [f"{row['peak MiB']:.1f}", row["max err"], row["speedup"]]
                    rows.append([*cells, f"{gbs:.3g}" if fwd else "-", frac])
    head = ["op", "dtype", "N", "mode", "path", "ms", "peak MiB", "max err", "vs dense"]
    body = md_table([*head, "fwd GB/s (Q+K+V+O)", "of HBM peak"], rows)
    summary = f"{len(rows)} rows" + (f"; max err too large: {', '.join(bad)}" if bad else "")
    lin = importlib.import_module("bench.kernels_linear")
    sizes = [256] if ctx.dry else [4096, 16_384]
    lrows = lin.run(
        Namespace(quick=True, repeats=1 if ctx.dry else 5, device=ctx.device, sizes=sizes)
    )
    body += "\n\nlinear attention (`bench/kernels_linear.py`, fp32):\n\n" + lin.table(lrows)
    errors = [r["max_abs_err"] for r in lrows if r["max_abs_err"] is not None]
    bad += [] if all(e < 1e-2 for e in errors) else ["linear"]
    if not ctx.dry:  # last: a failed graph capture must not disturb the rows above
        try:
            line, met = _window_kernel_alone(bk, peak)
        except Exception as exc:  # reported; the rows above stand
            line, met = f"window kernel alone: failed: {type(exc).__name__}: {exc}"[:300], False
            bad.append("window kernel alone")
        body += "\n\n" + line
        summary += f"; {line.split(': ', 1)[1]}"
        summary += "" if met is None else (" (target >= 50% met)" if met else " (target missed)")
    return Result("FAIL" if bad else "PASS", summary, body)


def _window_kernel_alone(bk, peak: float | None) -> tuple[str, bool | None]:
    """Median of the Triton window kernel at B1 H4 D32 N16k bf16: CUDA events over 50 calls, and
    one CUDA graph of 20 calls replayed (no Python/launch overhead), vs the HBM roofline."""
    import torch

    import kernels

    n, side = 16_384, 128
    q, k, v = (
        torch.randn(1, side, side, bk.HEADS, bk.DIM, device="cuda", dtype=torch.bfloat16)
        for _ in range(3)
    )

    def call():
        return kernels.window_attention(q, k, v, q_window=8, kv_window=8, impl="triton")

    for _ in range(3):
        call()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(50):
        call()
    end.record()
    torch.cuda.synchronize()
    events_us = start.elapsed_time(end) / 50 * 1e3
    graph_us, why = None, ""
    try:
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            call()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(20):
                call()
        times = []
        for _ in range(5):
            start.record()
            graph.replay()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 20 * 1e3)
        graph_us = statistics.median(times)
    except Exception as exc:  # report why capture failed; the events figure stands
        why = f" (graph capture failed: {type(exc).__name__}: {str(exc)[:120]})"
    nbytes = 4 * n * bk.HEADS * bk.DIM * 2
    best = graph_us or events_us
    gbs = nbytes / (best * 1e3)
    frac = f", {gbs / peak:.0%} of the {peak:.0f} GB/s HBM peak" if peak else ""
    graph = f"{graph_us:.1f} us/call in a CUDA graph" if graph_us else "no graph" + why
    line = (
        f"window kernel alone (Triton, bf16, B1 H4 D32 N16384, 8x8 windows): "
        f"{events_us:.1f} us/call (events), {graph}; {gbs:.0f} GB/s{frac}"
    )
    return line, (None if not peak else gbs / peak >= 0.5)


def her_seg(ctx: Context) -> Result:
    """``bench.her_seg --device cuda`` (FLOPs, memory, Triton vs torch training step); dry: the
    tiny preset on CPU plus ``time_impls`` on CPU with the Triton path interpreted."""
    hs = importlib.import_module("bench.her_seg")
    argv = ["--device", "cuda"]
    if ctx.dry:
        argv = ["--device", "cpu", "--preset", "tiny", "--size", "32"]
    buffer = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buffer):
        hs.main(argv)
    text = buffer.getvalue()
    print(text)
    body = f"`python -m bench.her_seg {' '.join(argv)}` ({time.perf_counter() - t0:.0f} s)\n\n"
    body += text
    if ctx.dry:
        timings = hs.time_impls("tiny", 32, "cpu", steps=1)
        body += "\n\ntime_impls on CPU (Triton interpreted): " + ", ".join(
            f"{impl} {t['ms']:.0f} ms loss {t['loss']:.6f}" for impl, t in timings.items()
        )
    else:
        timings = _parse_her_seg(text)
    losses = [t["loss"] for t in timings.values()]
    if len(losses) < 2:
        return Result("FAIL", "no Triton vs torch rows in the output", body)
    agree = math.isclose(losses[0], losses[1], rel_tol=2e-3, abs_tol=1e-4)
    summary = "first-step loss torch vs triton " + ("agrees" if agree else "DIFFERS")
    summary += f" ({losses[0]:.6f} vs {losses[1]:.6f})"
    if "torch" in timings and timings["triton"]["ms"] > 0:
        summary += f"; Triton vs torch step {timings['torch']['ms'] / timings['triton']['ms']:.2f}x"
    return Result("PASS" if agree else "FAIL", summary, body)


def _parse_her_seg(text: str) -> dict[str, dict[str, float]]:
    pattern = r"attn_impl=(\w+) \(GPU\) \| ([\d.]+) ms, peak (\d+) MiB, loss ([-\d.e]+)"
    return {
        m[0]: {"ms": float(m[1]), "peak_mib": float(m[2]), "loss": float(m[3])}
        for m in re.findall(pattern, text)
    }


def _ok(flag: bool) -> str:
    return "yes" if flag else "**NO**"


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
