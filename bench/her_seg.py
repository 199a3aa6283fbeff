"""HER-Seg at 1024x1024: FLOPs, peak training memory per image, Triton-vs-torch step time.

- **FLOPs**: ``torch.utils.flop_counter.FlopCounterMode`` over one forward of the preset on a
  ``1x3xSxS`` input (on the ``meta`` device: no compute). FlopCounter counts a multiply-add as
  2 FLOPs; the paper's 9.39 G (and the code's ``thop`` figure) count MACs, so both are printed.
- **Peak training memory per image**: one training step (forward, loss, backward, Adam step) at
  batch 1 and batch 2 in a fresh child process each; on CPU the growth of the process's peak
  resident memory (``VmHWM``) over its value just before the step (model, optimiser state and
  input already allocated), on CUDA ``torch.cuda.max_memory_allocated`` above what was
  allocated before the step. Per image = the batch-2 minus the batch-1 growth; the batch-1
  growth is also shown. The paper's 0.59 GB is GPU memory per image.
- **Step time**: seconds of that step (one measurement per batch size; CPU timings on the shared
  2-core machine are indicative only).
- **Triton vs torch** (CUDA only): the same network (same weights, batch 1) with the linear
  attention on ``attn_impl="torch"`` (the chunked torch path) and ``attn_impl="triton"``; each
  row is the median of ``--steps`` training steps after one warm-up step, run alternately, with
  the GPU allocator peak of a step and the first step's loss (the two must agree). Without CUDA
  the row says "not measured on GPU (no CUDA)".

    python -m bench.her_seg                          # CUDA when available, else CPU
    python -m bench.her_seg --device cpu
    python -m bench.her_seg --preset tiny --size 64  # seconds: checks the script itself
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

PRESETS = ("her_seg", "tiny")

_CHILD = """
import json, sys, time, torch
from medseg.models import her_seg as zoo
from medseg.losses import HerSegLoss

def hwm_mib():
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024

batch, device, threads, preset, size = sys.argv[1:6]
batch, threads, size = int(batch), int(threads), int(size)
torch.set_num_threads(threads)
torch.manual_seed(0)
net = getattr(zoo, preset)().to(device).train()
opt = torch.optim.Adam(net.parameters(), 1e-3)
loss_fn = HerSegLoss()
x = torch.randn(batch, 3, size, size, device=device)
y = (torch.rand(batch, 1, size, size, device=device) > 0.5).long()
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
else:
    base = hwm_mib()
t = time.perf_counter()
loss = loss_fn(net(x), y)
loss.backward()
opt.step()
if device == "cuda":
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
else:
    peak = hwm_mib() - base
print(json.dumps({"batch": batch, "peak_mib": peak, "seconds": time.perf_counter() - t}))
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: cuda when available, else cpu")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", choices=PRESETS, default="her_seg")
    parser.add_argument("--size", type=int, default=1024, help="square input side (x16)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per impl (CUDA)")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here; use --device cpu or auto")
    if args.size % 16:
        parser.error(f"--size {args.size} must be a multiple of 16 (the patch size)")
    torch.set_num_threads(args.threads)
    shape = f"1x3x{args.size}x{args.size}"
    print(f"# HER-Seg ({args.preset} preset, {shape}), torch {torch.__version__}, {args.device}")
    print()
    print("| measure | medseg | paper |")
    print("|---|---|---|")
    published = args.preset == "her_seg" and args.size == 1024  # what the paper measured
    gflops = count_gflops(args.preset, args.size)
    paper = "9.39 G" if published else "-"
    print(f"| forward FLOPs per image | {gflops:.2f} GFLOP = {gflops / 2:.2f} GMAC | {paper} |")
    runs = [_step(b, args) for b in (1, 2)]
    per_image = runs[1]["peak_mib"] - runs[0]["peak_mib"]
    where = "GPU allocator peak" if args.device == "cuda" else "CPU peak RSS"
    paper = "0.59 GB (GPU)" if published else "-"
    first = runs[0]["peak_mib"] / 1024
    print(f"| training memory, batch 1 ({where}) | {first:.2f} GiB | {paper} |")
    print(f"| training memory per extra image ({where}) | {per_image / 1024:.2f} GiB | {paper} |")
    for r in runs:
        print(f"| training step, batch {r['batch']} | {r['seconds']:.2f} s | - |")
    if args.device != "cuda":
        why = "no CUDA" if not torch.cuda.is_available() else "--device cpu"
        row = "training step, Triton vs torch linear attention"
        print(f"| {row} | not measured on GPU ({why}) | - |")
        return
    timings = time_impls(args.preset, args.size, "cuda", steps=args.steps)
    for impl, t in timings.items():
        print(f"| training step, batch 1, attn_impl={impl} (GPU) | {t['ms']:.1f} ms, "
              f"peak {t['peak_mib']:.0f} MiB, loss {t['loss']:.6f} | - |")  # fmt: skip
    speedup = timings["torch"]["ms"] / timings["triton"]["ms"]
    print(f"| Triton vs torch path, training step | {speedup:.2f}x | - |")


def count_gflops(preset: str = "her_seg", size: int = 1024) -> float:
    """Forward GFLOPs (2 per multiply-add) of ``preset`` on a ``1x3xSxS`` input."""
    from torch.utils.flop_counter import FlopCounterMode

    from medseg.models import her_seg as zoo

    with torch.device("meta"):
        net = getattr(zoo, preset)().eval()
        x = torch.empty(1, 3, size, size)
    with FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / 1e9


def time_impls(
    preset: str,
    size: int,
    device: str,
    *,
    impls: tuple[str, ...] = ("torch", "triton"),
    steps: int = 5,
) -> dict[str, dict[str, float]]:
    """Training-step time per linear-attention implementation, same weights and batch.

    Returns ``{impl: {"ms": median step ms, "peak_mib": allocator peak of a step above what was
    allocated before it (CUDA; 0 elsewhere), "loss": loss of the first step}}``. Runs on CUDA;
    on CPU only with ``TRITON_INTERPRET=1`` for ``"triton"`` (how the tests check this code).
    """
    from medseg.losses import HerSegLoss
    from medseg.models import her_seg as zoo

    dev = torch.device(device)
    torch.manual_seed(0)
    nets = {impl: getattr(zoo, preset)(attn_impl=impl).to(dev).train() for impl in impls}
    state = nets[impls[0]].state_dict()
    for net in nets.values():
        net.load_state_dict(state)
    opts = {impl: torch.optim.Adam(net.parameters(), 1e-3) for impl, net in nets.items()}
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, size, size, generator=gen).to(dev)
    y = (torch.rand(1, 1, size, size, generator=gen) > 0.5).long().to(dev)
    loss_fn = HerSegLoss()
    times: dict[str, list[float]] = {impl: [] for impl in impls}
    out = {impl: {"ms": 0.0, "peak_mib": 0.0, "loss": 0.0} for impl in impls}
    for step in range(1 + steps):  # step 0: warm-up (Triton compiles), its loss is compared
        for impl in impls:
            _sync(dev)
            before = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            start = time.perf_counter()
            opts[impl].zero_grad(set_to_none=True)
            loss = loss_fn(nets[impl](x), y)
            loss.backward()
            opts[impl].step()
            _sync(dev)
            if step == 0:
                out[impl]["loss"] = loss.item()
            else:
                times[impl].append((time.perf_counter() - start) * 1e3)
            if dev.type == "cuda":
                peak = (torch.cuda.max_memory_allocated(dev) - before) / 2**20
                out[impl]["peak_mib"] = max(out[impl]["peak_mib"], peak)
    for impl in impls:
        out[impl]["ms"] = statistics.median(times[impl]) if times[impl] else float("nan")
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(batch: int, args: argparse.Namespace) -> dict:
    argv = [str(batch), args.device, str(args.threads), args.preset, str(args.size)]
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, *argv],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        check=False,
    )
    if out.returncode:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"error: training step at batch {batch} failed: {tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - t0:.0f} s)")
