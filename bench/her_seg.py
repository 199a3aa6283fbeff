"""HER-Seg at 1024x1024: FLOPs per image and peak training memory per image (issue: kernels).

- **FLOPs**: ``torch.utils.flop_counter.FlopCounterMode`` over one forward of the published
  preset on a ``1x3x1024x1024`` input (on the ``meta`` device: no compute). FlopCounter counts a
  multiply-add as 2 FLOPs; the paper's 9.39 G (and the code's ``thop`` figure) count MACs, so
  both are printed.
- **Peak training memory per image**: one training step (forward, loss, backward, Adam step) at
  batch 1 and batch 2 in a fresh child process each; the figure is the growth of the process's
  peak resident memory (``VmHWM``) over its value just before the step (model, optimiser state
  and input already allocated), so per image = the batch-2 minus the batch-1 peak growth, and
  the batch-1 growth is also shown. On CUDA it is ``torch.cuda.max_memory_allocated`` instead.
  The paper's 0.59 GB is GPU memory per image.
- **Step time**: seconds of that step (one measurement per batch size; CPU timings on the shared
  2-core machine are indicative only).

    python -m bench.her_seg            # CPU (and CUDA when present)
    python -m bench.her_seg --device cuda
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

_CHILD = """
import json, sys, time, torch
from medseg.models.her_seg import her_seg
from medseg.losses import HerSegLoss

def hwm_mib():
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024

batch, device, threads = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)
net = her_seg().to(device).train()
opt = torch.optim.Adam(net.parameters(), 1e-3)
loss_fn = HerSegLoss()
x = torch.randn(batch, 3, 1024, 1024, device=device)
y = (torch.rand(batch, 1, 1024, 1024, device=device) > 0.5).long()
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
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    gflops = count_gflops()
    print(f"# HER-Seg (published preset, 1x3x1024x1024), torch {torch.__version__}, {args.device}")
    print()
    print("| measure | medseg | paper |")
    print("|---|---|---|")
    print(f"| forward FLOPs per image | {gflops:.2f} GFLOP = {gflops / 2:.2f} GMAC | 9.39 G |")
    runs = [_step(b, args.device, args.threads) for b in (1, 2)]
    per_image = runs[1]["peak_mib"] - runs[0]["peak_mib"]
    where = "GPU" if args.device == "cuda" else "CPU peak RSS"
    paper = "0.59 GB (GPU)"
    first = runs[0]["peak_mib"] / 1024
    print(f"| training memory, batch 1 ({where}) | {first:.2f} GiB | {paper} |")
    print(f"| training memory per extra image ({where}) | {per_image / 1024:.2f} GiB | {paper} |")
    for r in runs:
        print(f"| training step, batch {r['batch']} | {r['seconds']:.1f} s | - |")


def count_gflops() -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from medseg.models.her_seg import her_seg

    with torch.device("meta"):
        net = her_seg().eval()
        x = torch.empty(1, 3, 1024, 1024)
    with FlopCounterMode(display=False) as counter:
        net(x)
    return counter.get_total_flops() / 1e9


def _step(batch: int, device: str, threads: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(batch), device, str(threads)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - t0:.0f} s)")
