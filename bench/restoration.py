"""Restoration benchmarks (issue: restoration), printed as Markdown tables.

**RAT, one image, inference** (the published preset ``rat()``: width 64, 12 bottleneck layers,
8 heads; float32, eval, no grad; a region map of ``--regions`` compact regions of uneven size,
a power diagram of random seeds). Two formulations of R-MSA in the *same* network:

- ``medseg``: :func:`kernels.region_attention` (tokens grouped per region; one
  ``region_plan`` per image, included in the time);
- ``released``: the released code's dense form: an ``N x N`` float mask (0 same region,
  -1000 across) added to the full ``(heads, N, N)`` score matrix, softmax over all ``N``.

Each row runs in a fresh child process: time = median of ``--repeats`` forwards after one
warm-up; peak memory = growth of the process's peak resident set (``VmHWM``) over its value
just before the first forward (weights, input and region map already allocated). ``max err``:
largest absolute output difference between the two formulations. At 512 x 512 (``N = 16,384``
bottleneck tokens) the dense form needs ``4 N^2`` bytes of mask plus ``2 x 8 N^2 x 4`` bytes of
scores and probabilities per layer, about 18 GB: it is not run there (``--dense-max`` side);
its time is extrapolated from the measured dense attention cost at the smaller sizes (N^2
scaling) and marked "estimate".

**DISGAN, whole-volume x2 super-resolution throughput** (published generator, 16 M parameters,
float32): ``medseg`` = :class:`medseg.inference.restoration.Restorer` (MONAI sliding windows of
the trained LR patch, 32^3, Gaussian blending, overlap 0.5) against the released inference
(same patches at stride 16, each output patch pasted over the previous ones), on a synthetic
LR volume; throughput in output voxels per second, and the largest difference between the two
outputs in the interior (they differ by design at window seams: blended vs pasted).

    python -m bench.restoration                  # both tables
    python -m bench.restoration --quick          # smaller sizes, 2 repeats (smoke)

Other processes slow the timings badly on a 2-core machine: run it alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

_RAT_CHILD = r"""
import json, statistics, sys, time, torch
import torch.nn.functional as F
from medseg.models.rat import blocks
from medseg.models.rat.model import rat

def hwm():
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024

side, n_regions, repeats, mode, threads = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                           sys.argv[4], int(sys.argv[5]))
torch.set_num_threads(threads)
torch.manual_seed(0)
g = torch.Generator().manual_seed(1)
seeds = torch.rand(n_regions, 2, generator=g) * side
weights = torch.rand(n_regions, generator=g) * side * side / 8
yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
d = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2 - weights
regions = d.argmin(-1)[None] + 1
net = rat().eval()
with torch.no_grad():  # zero-init layer scales would hide the attention: give them values
    for name, p in net.named_parameters():
        if name.rsplit(".", 1)[-1] in ("beta", "gamma", "lambda_ra", "lambda_wa"):
            p.normal_(0, 0.1)
x = torch.rand(1, 1, side, side, generator=g)
dense_ms = []
if mode == "released":
    def dense_forward(self, x, plan, _ids=[None]):
        b, c, h, w = x.shape
        q, k, v = (t.flatten(2).transpose(1, 2).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, dim=1))
        t0 = time.perf_counter()
        ids = net._ids
        mask = torch.where(ids[:, :, None] == ids[:, None, :], 0.0, -1000.0)[:, None]
        attn = (q @ k.transpose(-2, -1)) * self.scale + mask
        out = attn.softmax(-1) @ v
        dense_ms.append((time.perf_counter() - t0) * 1e3)
        return self.project_out(out.transpose(1, 2).flatten(2).transpose(1, 2).reshape(b, c, h, w))
    blocks.RegionAttention.forward = dense_forward
    f = 2 ** net.levels
    net._ids = regions[:, ::f, ::f].reshape(1, -1)
base = hwm()
times = []
with torch.no_grad():
    for i in range(repeats + 1):
        dense_ms.clear()
        t0 = time.perf_counter()
        out = net(x, regions)
        if i:
            times.append(time.perf_counter() - t0)
torch.save(out, sys.argv[6])
print(json.dumps({"s": statistics.median(times), "peak_mib": hwm() - base,
                  "dense_attention_s": sum(dense_ms) / 1e3 if dense_ms else None}))
"""

_DISGAN_CHILD = r"""
import json, statistics, sys, time, numpy as np, torch
from medseg.inference.restoration import Restorer
from medseg.io import Volume
from medseg.models.disgan.generator import RRDBGenerator
shape = tuple(int(s) for s in sys.argv[1].split(","))
repeats, threads = int(sys.argv[2]), int(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)
gen = RRDBGenerator().eval()
rng = np.random.default_rng(0)
lr = rng.normal(0, 1, shape).astype(np.float32)
unit = {"scheme": "ct", "mean": 0.0, "std": 1.0}
restoration = {"spatial_dims": 3, "scale": 2, "intensity": unit, "channel": 0,
               "patch_size": [64, 64, 64]}
restorer = Restorer(gen, restoration, device="cpu", overlap=0.5)

def ours():
    return restorer.restore(Volume(lr, np.eye(4))).volume.array

def released(p=32, stride=16):
    x = torch.from_numpy(lr)[None, None]
    out = torch.zeros(1, 1, *(2 * s for s in shape))
    starts = [sorted(set(list(range(0, n - p + 1, stride)) + [n - p])) for n in shape]
    with torch.inference_mode():
        for a in starts[0]:
            for b in starts[1]:
                for c in starts[2]:
                    y = gen(x[..., a:a + p, b:b + p, c:c + p])
                    out[..., 2*a:2*(a + p), 2*b:2*(b + p), 2*c:2*(c + p)] = y
    return out[0, 0].numpy()

rows = {}
for name, fn in (("medseg", ours), ("released", released)):
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter(); y = fn()
        if i: times.append(time.perf_counter() - t0)
    rows[name] = {"s": statistics.median(times), "out": y}
inner = tuple(slice(16, -16) for _ in shape)
err = float(np.abs(rows["medseg"]["out"][inner] - rows["released"]["out"][inner]).max())
voxels = float(np.prod([2 * s for s in shape]))
print(json.dumps({k: {"s": v["s"], "vox_per_s": voxels / v["s"]} for k, v in rows.items()}
                 | {"max_err_interior": err}))
"""


def _child(code: str, *args: object, timeout: float = 3600) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def rat_table(sides: list[int], dense_max: int, regions: int, repeats: int, threads: int) -> None:
    import torch

    print(f"\n### RAT inference, one image, published preset, {regions} regions, fp32\n")
    print("| image | N tokens | formulation | time s | peak MiB | released / medseg time "
          "| memory ratio | max err |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    per_n2 = []
    for side in sides:
        n = (side // 4) ** 2
        ours = _child(_RAT_CHILD, side, regions, repeats, "medseg", threads, "/tmp/_rat_ours.pt")
        row = f"| {side}x{side} | {n:,} | medseg | {ours['s']:.2f} | {ours['peak_mib']:.0f} |"
        print(row + " 1 | 1 | - |")
        if side <= dense_max:
            dense = _child(_RAT_CHILD, side, regions, repeats, "released", threads,
                           "/tmp/_rat_dense.pt")  # fmt: skip
            err = float((torch.load("/tmp/_rat_ours.pt") - torch.load("/tmp/_rat_dense.pt"))
                        .abs().max())  # fmt: skip
            per_n2.append(
                (dense["dense_attention_s"] / n**2, dense["s"] - dense["dense_attention_s"])
            )
            print(f"| {side}x{side} | {n:,} | released (dense mask) | {dense['s']:.2f} | "
                  f"{dense['peak_mib']:.0f} | {dense['s'] / ours['s']:.1f}x | "
                  f"{dense['peak_mib'] / max(ours['peak_mib'], 1):.1f}x | {err:.1e} |")  # fmt: skip
        elif per_n2:
            coef, _ = per_n2[-1]
            est_s = coef * n**2 + ours["s"]  # dense attention + the rest of the net
            est_mib = (4 * n**2 + 2 * 8 * n**2 * 4) / 2**20
            print(f"| {side}x{side} | {n:,} | released (estimate) | ~{est_s:.0f} | "
                  f"~{est_mib:,.0f} | ~{est_s / ours['s']:.0f}x | "
                  f"~{est_mib / max(ours['peak_mib'], 1):.0f}x | - |")  # fmt: skip


def disgan_table(shape: tuple[int, ...], repeats: int, threads: int) -> None:
    r = _child(_DISGAN_CHILD, ",".join(map(str, shape)), repeats, threads)
    out = "x".join(str(2 * s) for s in shape)
    print(f"\n### DISGAN x2, whole volume (LR {'x'.join(map(str, shape))} -> {out}), fp32\n")
    print("| inference | time s | output voxels/s | ratio |")
    print("|---|---|---|---|")
    for name in ("released", "medseg"):
        label = {"released": "released: 32^3 patches, stride 16, pasted",
                 "medseg": "medseg: 32^3 windows, overlap 0.5, Gaussian blend"}[name]  # fmt: skip
        ratio = r["medseg"]["vox_per_s"] / r["released"]["vox_per_s"] if name == "medseg" else 1
        print(f"| {label} | {r[name]['s']:.1f} | {r[name]['vox_per_s']:,.0f} | {ratio:.2f}x |")
    print(f"\nmax |medseg - released| in the interior: {r['max_err_interior']:.2e} "
          "(blending vs pasting; not an error)")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 2 repeats")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--regions", type=int, default=50)
    p.add_argument("--dense-max", type=int, default=384, help="largest side run densely")
    p.add_argument("--skip", choices=("rat", "disgan"), default=None)
    args = p.parse_args()
    repeats = 2 if args.quick else args.repeats
    sides = [128, 256] if args.quick else [256, 384, 512]
    dense_max = 128 if args.quick else args.dense_max
    t0 = time.time()
    if args.skip != "rat":
        rat_table(sides, dense_max, args.regions, repeats, args.threads)
    if args.skip != "disgan":
        disgan_table((32, 32, 32) if args.quick else (64, 48, 32), repeats, args.threads)
    print(f"\n({time.time() - t0:.0f} s, {args.threads} threads, median of {repeats})")


if __name__ == "__main__":
    main()
