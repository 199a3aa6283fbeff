"""Benchmark the attention kernels against dense masked SDPA, in one run, as a Markdown table.

Usage::

    python -m bench.kernels --quick                 # N = 4,096 and 16,384, 3 repeats
    python -m bench.kernels --op region --sizes 16384 65536 --repeats 7
    python -m bench.kernels --device cuda            # adds the Triton paths

Workloads (B = 1, h = 4 heads, d = 32, float32; the square map has side sqrt(N)):

- ``region``: RAT region self-attention over a power diagram (weighted Voronoi) of 50 random
  seeds: compact regions of very uneven size. Every path includes its per-image preparation
  (dense: the ``N x N`` same-region mask; torch/triton: ``region_plan``), because the map
  changes with every image.
- ``window``: 8 x 8 window self-attention; the dense baseline's ``N x N`` window mask is built
  once per shape, outside the timing (it is static).
- ``linear``: ``bench/kernels_linear.py`` measures (its ``run(args)``) and reports (its
  ``report(rows)``: the table, then the target lines: speed-ups vs softmax SDPA at 16,384 and
  65,536, time(65,536) / time(4,096), peak memory of the torch path and of SDPA). Its baseline is
  softmax SDPA over all tokens, its peak memory the resident-set high-water mark (see there).

Method: ``fwd`` times the forward call; ``fwd+bwd`` the forward plus ``backward`` of a fixed
random output gradient. Each time is the median of ``--repeats`` runs after one warm-up (the
dense baseline at N >= 16,384 in ``--quick`` mode: one run, no warm-up). Peak memory is the
allocator's peak above what was live before the call, from one extra run: on CPU, the
``[memory]`` allocation records of ``torch.profiler(profile_memory=True)`` summed in time order
(outputs and gradients count; buffers private to a kernel, e.g. oneDNN scratch, do not); on
CUDA, ``torch.cuda.max_memory_allocated``. ``max err`` is the largest absolute difference from
the dense float32 result (the output for ``fwd``; the input gradients for ``fwd+bwd``); where
the dense baseline does not fit (N > 16,384) the Triton rows are compared with the torch path.
Other processes slow the timings (with 2 threads, every parallel op then waits for the second
thread to be scheduled): the script waits up to ``--wait`` s for them to use < 10 % of the CPUs
and prints their share at the start and the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

# run as a file, bench/ comes first on sys.path, where this file shadows the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
import kernels  # noqa: E402

HEADS, DIM, SEEDS, WINDOW = 4, 32, 50, 8
DENSE_MAX_N = 16_384


def main() -> None:
    args = _parse()
    torch.set_num_threads(args.threads)
    busy = _wait_for_quiet(args.wait)
    print(f"device {args.device}, {args.threads} threads, torch {torch.__version__}, "
          f"other processes used {busy:.0%} of the CPUs when timing started")  # fmt: skip
    for op in ("region", "window", "linear") if args.op == "all" else (args.op,):
        if op == "linear":
            _print_linear(args)
        else:
            _print_table(op, [row for n in args.sizes for row in _bench_op(op, n, args)])
    print(f"\nother processes used {_busy_share():.0%} of the CPUs at the end")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--op", choices=["region", "window", "linear", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="N = 4096, 16384; 3 repeats")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="token counts N")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--wait", type=float, default=60.0, help="seconds to wait for other processes to go quiet"
    )
    args = parser.parse_args()
    if args.sizes is None:
        args.sizes = [4096, 16_384] if args.quick else [4096, 16_384, 65_536]
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    for n in args.sizes:
        if math.isqrt(n) ** 2 != n or math.isqrt(n) % WINDOW:
            parser.error(f"N = {n} must be a square with a side divisible by {WINDOW}")
    return args


def power_diagram(side: int, seeds: int, *, seed: int = 0) -> torch.Tensor:
    """``(1, side * side)`` region ids: nearest seed under random additive weights."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.rand(seeds, 2, generator=gen) * side
    weights = torch.rand(seeds, generator=gen) * (side * side / seeds) * 0.6
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    pos = torch.stack([ys, xs], -1).reshape(-1, 1, 2).float()
    return (((pos - centres) ** 2).sum(-1) - weights).argmin(-1)[None]


def _bench_op(op: str, n: int, args: argparse.Namespace) -> list[dict]:
    dev, side = torch.device(args.device), math.isqrt(n)
    gen = torch.Generator().manual_seed(0)
    dtype = getattr(torch, getattr(args, "dtype", "float32"))
    q, k, v = (torch.randn(1, n, HEADS, DIM, generator=gen).to(dev, dtype) for _ in range(3))
    grad = torch.randn(1, n, HEADS, DIM, generator=gen).to(dev, dtype)
    paths: dict[str, Callable] = {}
    if op == "region":
        regions = power_diagram(side, SEEDS).to(dev)
        sizes = torch.bincount(regions[0])
        sizes = sizes[sizes > 0]
        t0 = time.perf_counter()
        kernels.region_plan(regions).packing  # noqa: B018 (the torch path's preparation)
        prep = (time.perf_counter() - t0) * 1e3
        density = (sizes.float() ** 2).sum() / n**2
        print(f"\nregion N={n}: {sizes.numel()} regions, sizes {sizes.min()}/"
              f"{sizes.float().mean():.0f}/{sizes.max()} (min/mean/max), "
              f"density {density:.3f}, torch-path prep {prep:.1f} ms")  # fmt: skip
        if n <= DENSE_MAX_N:

            def dense(q, k, v):
                mask = (regions[:, :, None] == regions[:, None, :]).unsqueeze(1)
                return _sdpa(q, k, v, mask)

            paths["dense masked SDPA"] = dense
        paths["torch"] = lambda q, k, v: kernels.region_attention(q, k, v, regions, impl="torch")
        if _triton_runs(dev):
            paths["triton"] = lambda q, k, v: kernels.region_attention(
                q, k, v, regions, impl="triton"
            )  # noqa: E501
    else:
        q, k, v, grad = (t.view(1, side, side, HEADS, DIM) for t in (q, k, v, grad))
        win = {"q_window": WINDOW, "kv_window": WINDOW}
        if n <= DENSE_MAX_N:
            ids = torch.arange(n, device=dev).view(side, side)
            ids = (ids // side // WINDOW) * (side // WINDOW) + (ids % side) // WINDOW
            mask = (ids.view(-1)[:, None] == ids.view(-1)[None, :])[None, None]

            def dense(q, k, v):
                return _sdpa(q.flatten(1, 2), k.flatten(1, 2), v.flatten(1, 2), mask).view(q.shape)

            paths["dense masked SDPA"] = dense
        print(f"\nwindow N={n}: {(side // WINDOW) ** 2} windows of {WINDOW}x{WINDOW}")
        paths["torch"] = lambda q, k, v: kernels.window_attention(q, k, v, **win, impl="torch")
        if _triton_runs(dev):
            paths["triton"] = lambda q, k, v: kernels.window_attention(
                q, k, v, **win, impl="triton"
            )  # noqa: E501
    rows, refs = [], {}
    for mode in ("fwd", "fwd+bwd"):
        for path, fn in paths.items():
            quick_dense = args.quick and path.startswith("dense") and n >= DENSE_MAX_N
            ms, peak, result = _measure(fn, q, k, v, grad if mode != "fwd" else None, args,
                                        repeats=1 if quick_dense else args.repeats,
                                        warmup=not quick_dense)  # fmt: skip
            ref_key = "dense masked SDPA" if "dense masked SDPA" in paths else "torch"
            if path == ref_key:
                refs[mode] = result
            err = max((a - b).abs().max().item() for a, b in zip(result, refs[mode], strict=True))
            row = {"N": n, "mode": mode, "path": path, "ms": ms, "peak MiB": peak}
            row["max err"] = "ref" if path == ref_key else f"{err:.1e}"
            rows.append(row)
        base = rows[-len(paths)]  # the dense baseline, when it fits
        for row in rows[-len(paths) :]:
            dense = base["path"].startswith("dense")
            row["speedup"] = f"{base['ms'] / row['ms']:.1f}x" if dense else "-"
            row["mem ratio"] = (
                f"{base['peak MiB'] / max(row['peak MiB'], 1e-9):.1f}x" if dense else "-"
            )
    return rows


def _sdpa(q, k, v, mask):
    """``(B, N, h, d)`` tensors, ``(1, 1, N, N)`` bool mask -> ``(B, N, h, d)``."""
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)


def _measure(fn, q, k, v, grad, args, *, repeats: int, warmup: bool):
    """``(median wall ms, peak MiB, outputs)``.

    ``outputs`` are ``[out]`` (forward) or the three input gradients (forward + backward).
    """

    def call():
        if grad is None:
            with torch.no_grad():
                return [fn(q, k, v)]
        inputs = [t.detach().requires_grad_() for t in (q, k, v)]
        fn(*inputs).backward(grad)
        return [t.grad for t in inputs]

    times = []
    for i in range(repeats + warmup):
        _sync(q)
        t0 = time.perf_counter()
        call()
        _sync(q)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    result, peak = _peak_mib(call, q.device)
    return statistics.median(times), peak, result


def _peak_mib(call, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        result = call()
        torch.cuda.synchronize()
        return result, (torch.cuda.max_memory_allocated() - before) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = call()
    records = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for rec in sorted(records, key=lambda e: e.start_ns()):
        live += rec.nbytes()
        peak = max(peak, live)
    return result, peak / 2**20


def _busy_share(interval: float = 1.0) -> float:
    """Share of all CPUs that other processes kept busy over ``interval`` seconds (Linux)."""

    def sample() -> tuple[float, float]:
        with open("/proc/stat") as f:
            fields = [float(x) for x in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    mine0, (total0, idle0) = time.process_time(), sample()
    time.sleep(interval)
    mine1, (total1, idle1) = time.process_time(), sample()
    ticks = os.sysconf("SC_CLK_TCK")
    busy = (total1 - total0) - (idle1 - idle0) - (mine1 - mine0) * ticks
    return max(0.0, busy / max(total1 - total0, 1.0))


def _wait_for_quiet(limit: float) -> float:
    """Wait up to ``limit`` seconds for other processes to use < 10 % of the CPUs."""
    if not Path("/proc/stat").exists():
        return 0.0
    deadline = time.monotonic() + limit
    busy = _busy_share()
    while busy >= 0.1 and time.monotonic() < deadline:
        busy = _busy_share()
    return busy


def _triton_runs(dev: torch.device) -> bool:
    """Triton rows: on CUDA, and on CPU in Triton's interpreter (``TRITON_INTERPRET=1``)."""
    return dev.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def _sync(x: torch.Tensor) -> None:
    if x.is_cuda:
        torch.cuda.synchronize()


def _print_linear(args: argparse.Namespace) -> None:
    """Linear attention: measured and reported by ``bench/kernels_linear.py`` (one source)."""
    path = Path(__file__).with_name("kernels_linear.py")
    if not path.exists():
        print(f"\nlinear: {path.name} not found, skipped")
        return
    spec = importlib.util.spec_from_file_location("kernels_linear", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    print("\n### linear\n")
    print(module.report(module.run(args)), flush=True)


def _print_table(op: str, rows: list[dict]) -> None:
    """A Markdown table; the columns are the keys of the rows, in first-seen order."""
    if not rows:
        return
    cols = list(dict.fromkeys(key for row in rows for key in row if key != "op"))
    print(f"\n### {op}\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(_fmt(row.get(c, "")) for c in cols) + " |", flush=True)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if value < 100 else f"{value:.0f}"
    return str(value)


if __name__ == "__main__":
    main()
