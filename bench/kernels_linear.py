"""HER-Seg linear attention: ``kernels.linear_attention`` vs softmax SDPA and the reference.

Baseline: ``torch.nn.functional.scaled_dot_product_attention`` (softmax attention over all ``N``
tokens, inputs already in its ``(B, h, N, d)`` layout), which is what the model would run
without a linear-attention kernel. Also timed: ``linear_attention_reference`` (the spec: one
einsum pass in float32, unchunked). Ours: the chunked torch path (``impl="torch"``) and, on CUDA,
the Triton kernels (``impl="triton"``).

Per ``N`` and shape: median forward and forward+backward times (all paths timed round-robin,
one call each per round after a warm-up, so a load spike hits all of them), peak extra memory
(CPU: resident-set high-water mark after ``malloc_trim``, Linux only; CUDA: allocator peak),
and the max abs error against the float32 reference. Targets (PERF.md §7): >= 30x faster than
SDPA at N = 16,384 and >= 50x at 65,536; time(65,536) / time(4,096) <= 20.

    .venv/bin/python -m bench.kernels_linear            # N = 4k, 16k, 64k, median of 5
    .venv/bin/python -m bench.kernels_linear --quick    # h4 d32 only, SDPA up to 16k, 3 rounds
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

# run as a file, bench/ comes first on sys.path, where bench/kernels.py shadows
# the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
from kernels import linear_attention, linear_attention_reference  # noqa: E402

SIZES = (4096, 16_384, 65_536)
SHAPES = {"h4 d32": (4, 32), "her-seg h6 d16": (6, 16), "her-seg h24 d4": (24, 4)}
SDPA_MAX_N = {"quick": 16_384, "full": 65_536}


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one shape, SDPA up to 16k, 3 rounds")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    opts = parser.parse_args(args)
    torch.set_num_threads(2)
    print(
        f"# linear attention: {platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, device {opts.device}"
    )
    rows = run(opts)
    print(report(rows))


def run(args) -> list[dict]:
    """Rows for every (shape, N, path).

    ``args`` (an ``argparse.Namespace`` or alike) may have ``quick``, ``repeats``, ``device`` and
    ``sizes`` (token counts; default 4,096 / 16,384 / 65,536); missing or None means default.
    """
    quick = bool(getattr(args, "quick", False))
    repeats = int(getattr(args, "repeats", None) or 5)
    repeats = min(3, repeats) if quick else repeats
    device = torch.device(getattr(args, "device", None) or "cpu")
    sizes = getattr(args, "sizes", None) or SIZES
    shapes = {"h4 d32": SHAPES["h4 d32"]} if quick else SHAPES
    rows = []
    for shape, (heads, dim) in shapes.items():
        for n in sizes:
            rows += _compare(shape, n, heads, dim, device, repeats, quick)
    return rows


def _compare(shape, n, heads, dim, device, repeats, quick) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    q, k = (F.elu(torch.randn(1, n, heads, dim, generator=gen)) + 1 for _ in range(2))
    v = torch.randn(1, n, heads, dim, generator=gen)
    q, k, v = (t.to(device) for t in (q, k, v))
    grad = torch.randn_like(v)
    ref = linear_attention_reference(q, k, v)
    paths: dict[str, Callable] = {"torch": lambda *x: linear_attention(*x, impl="torch")}
    if device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1":
        paths["triton"] = lambda *x: linear_attention(*x, impl="triton")
    paths["reference"] = linear_attention_reference
    inputs = {name: (q, k, v) for name in paths}
    if n <= SDPA_MAX_N["quick" if quick else "full"]:
        paths["sdpa"] = lambda *x: F.scaled_dot_product_attention(*x).transpose(1, 2)
        inputs["sdpa"] = tuple(t.transpose(1, 2).contiguous() for t in (q, k, v))
    times = {name: {"fwd": [], "fwd_bwd": []} for name in paths}
    big = n > 16_384
    for round_ in range(1 + repeats):  # round 0 is the warm-up
        for name, fn in paths.items():
            for kind in ("fwd", "fwd_bwd"):
                if name == "sdpa" and big and round_ != 1:
                    continue  # one timed SDPA call above 16k: ~10 s forward on 2 cores
                t = _time(fn, inputs[name], grad if kind == "fwd_bwd" else None, device)
                if round_:
                    times[name][kind].append(t)
    rows = []
    for name, fn in paths.items():
        args = (fn, inputs[name])
        out = fn(*inputs[name]) if name != "sdpa" else None
        rows.append(
            {
                "shape": shape,
                "N": n,
                "path": name,
                "fwd_ms": statistics.median(times[name]["fwd"]) * 1e3,
                "fwd_bwd_ms": statistics.median(times[name]["fwd_bwd"]) * 1e3,
                "fwd_min_ms": min(times[name]["fwd"]) * 1e3,
                "fwd_bwd_min_ms": min(times[name]["fwd_bwd"]) * 1e3,
                "peak_fwd_mib": _peak_mib(_step, (*args, None), device),
                "peak_fwd_bwd_mib": _peak_mib(_step, (*args, grad), device),
                "max_abs_err": None if out is None else (out.float() - ref).abs().max().item(),
            }
        )
    base = {r["path"]: r for r in rows}
    for row in rows:
        for kind in ("fwd", "fwd_bwd"):
            for other in ("sdpa", "reference"):
                if other in base and row["path"] != other:
                    row[f"{kind}_vs_{other}"] = base[other][f"{kind}_ms"] / row[f"{kind}_ms"]
    return rows


def _step(fn: Callable, inputs: tuple, grad: torch.Tensor | None):
    if grad is None:
        with torch.no_grad():
            return fn(*inputs)
    leaves = [t.detach().requires_grad_() for t in inputs]
    out = fn(*leaves)
    return torch.autograd.grad(out, leaves, grad.reshape(out.shape))


def _time(fn: Callable, inputs: tuple, grad: torch.Tensor | None, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    _step(fn, inputs, grad)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _peak_mib(call: Callable, args: tuple, device: torch.device) -> float | None:
    """Peak memory of ``call(*args)`` above what was live before, MiB (None: not measurable)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call(*args)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    status, clear = Path("/proc/self/status"), Path("/proc/self/clear_refs")
    if not clear.exists():
        return None
    with contextlib.suppress(OSError):  # not glibc: reused pages are not counted (reads low)
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # return freed heap pages, so reuse is counted
    clear.write_text("5")  # reset the high-water mark to the current RSS
    before = _status_kib(status, "VmRSS")
    call(*args)
    return (_status_kib(status, "VmHWM") - before) / 1024


def _status_kib(status: Path, field: str) -> int:
    for line in status.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def report(rows: list[dict]) -> str:
    """What ``main`` and ``bench/kernels.py`` print: the table, a blank line, the target lines."""
    return table(rows) + "\n\n" + summary(rows)


def summary(rows: list[dict]) -> str:
    """Per shape, one line per target: speed-ups vs SDPA at 16k and 64k (with both paths' peak
    memory), and the time(65,536) / time(4,096) ratio; a target not measured in this run (size
    or SDPA baseline not run) says so."""
    lines = []
    for shape in dict.fromkeys(r["shape"] for r in rows):
        mine = {r["N"]: r for r in rows if r["shape"] == shape and r["path"] == "torch"}
        sdpa = {r["N"]: r for r in rows if r["shape"] == shape and r["path"] == "sdpa"}
        for n, target in ((16_384, 30), (65_536, 50)):
            if n not in sdpa:
                lines.append(f"- {shape}, N={n}: torch vs SDPA not measured in this run "
                             f"(target >= {target}x)")  # fmt: skip
                continue
            lines.append(
                f"- {shape}, N={n}: torch vs SDPA fwd {mine[n]['fwd_vs_sdpa']:.0f}x, "
                f"fwd+bwd {mine[n]['fwd_bwd_vs_sdpa']:.0f}x (target >= {target}x); "
                f"peak fwd / fwd+bwd MiB: torch {_mib(mine[n], 'fwd')} / "
                f"{_mib(mine[n], 'fwd_bwd')}, SDPA {_mib(sdpa[n], 'fwd')} / "
                f"{_mib(sdpa[n], 'fwd_bwd')}"
            )
        lo, hi = mine.get(SIZES[0]), mine.get(SIZES[-1])
        if lo is None or hi is None:
            lines.append(f"- {shape}: torch time(65,536) / time(4,096) not measured in this run "
                         "(needs both sizes; target <= 20)")  # fmt: skip
            continue
        lines.append(
            f"- {shape}: torch time(65,536) / time(4,096): "
            f"fwd {hi['fwd_ms'] / lo['fwd_ms']:.1f}"
            f" (min {hi['fwd_min_ms'] / lo['fwd_min_ms']:.1f}), fwd+bwd "
            f"{hi['fwd_bwd_ms'] / lo['fwd_bwd_ms']:.1f}"
            f" (min {hi['fwd_bwd_min_ms'] / lo['fwd_bwd_min_ms']:.1f}) (target <= 20)"
        )
    return "\n".join(lines)


def _mib(row: dict, kind: str) -> str:
    value = row[f"peak_{kind}_mib"]
    return "-" if value is None else f"{value:.0f}"


def table(rows: list[dict]) -> str:
    """Markdown table; ratios are the other path's time over this path's (x = times faster)."""

    def fmt(value, spec, unit=""):
        return "-" if value is None else format(value, spec) + unit

    lines = [
        "| shape | N | path | fwd ms | fwd+bwd ms | peak fwd MiB | peak fwd+bwd MiB "
        "| max abs err | fwd vs SDPA | fwd+bwd vs SDPA | fwd vs ref | fwd+bwd vs ref |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['N']} | {r['path']} | {r['fwd_ms']:.2f} | "
            f"{r['fwd_bwd_ms']:.2f} | {fmt(r['peak_fwd_mib'], '.1f')} | "
            f"{fmt(r['peak_fwd_bwd_mib'], '.1f')} | {fmt(r['max_abs_err'], '.1e')} | "
            f"{fmt(r.get('fwd_vs_sdpa'), '.1f', 'x')} | "
            f"{fmt(r.get('fwd_bwd_vs_sdpa'), '.1f', 'x')} | "
            f"{fmt(r.get('fwd_vs_reference'), '.2f', 'x')} | "
            f"{fmt(r.get('fwd_bwd_vs_reference'), '.2f', 'x')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
