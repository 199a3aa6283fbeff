"""LiteMedSAM 3D propagation on the MNI152 T1: our predictor vs the plain official-style loop.

Baseline: the loop of bowang-lab ``CVPR24_LiteMedSAM_infer.py`` (``MedSAM_infer_npz_3D``),
written out here independently of ``medseg.inference``: for every slice, preprocess, run the
encoder (fp32, one slice), prompt with the key box or the previous mask's box, decode,
postprocess; no caching. All variants cover the same range of slices inside the brain
(``--slices``, default 100: the official 3D box's z-range, our ``stop_at``) and stop where the
mask vanishes, so they visit the same slices and their masks can be compared.

Rows: ``LiteMedSAMPredictor`` with ``precision="auto"`` (bf16 on CPUs with AVX512-BF16/AMX and
on CUDA) at its default look-ahead batch, its encoder in torch eager mode (the path before
``--runtime``) and, with ``--runtimes``, bf16 and fp32 encoders under torch and OpenVINO
(:mod:`medseg.inference.runtimes`; "(auto)" marks what ``--runtime auto`` picks), with
seconds per slice and achieved GFLOP/s (78.6 GFLOP per slice) next to the CPU's measured bf16
matmul peak; ``--extra`` adds ours in fp32, ours at
batch 8 and the fp32 noise floor (the baseline with N(0, 0.1 grey level) added to its input).

    .venv/bin/python -m bench.litemedsam              # full run, median of 3
    .venv/bin/python -m bench.litemedsam --quick      # smoke run: 9 slices, 1 repeat
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple

import cv2
import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from medseg.inference.device import configure_cpu_allocator
from medseg.inference.litemedsam import LiteMedSAMPredictor, to_uint8
from medseg.inference.stats import dice
from medseg.models.litemedsam import LiteMedSAM, load_litemedsam

MNI_T1 = "data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
WINDOWS: dict[str, tuple[float, float] | None] = {"brain": (40.0, 80.0), "percentile": None}
NOISE_GREY = 0.1
SLICE_GFLOP = 75.0 + 3.6  # TinyViT encoder + one mask decode (torch FLOP counter, issue 16)


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    parser.add_argument("--quick", action="store_true", help="9 slices, 1 repeat (smoke)")
    parser.add_argument("--axis", choices=sorted(AXES), default="axial")
    parser.add_argument("--key-fraction", type=float, default=0.5, help="key slice position")
    parser.add_argument("--margin", type=int, default=5, help="key box margin (px)")
    parser.add_argument(
        "--slices", type=int, default=100, help="slices in the range around the key (stop_at)"
    )
    parser.add_argument(
        "--window",
        choices=sorted(WINDOWS),
        default="brain",
        help="brain: CT-style window (level 40, width 80 of 0-255) that makes the brain one "
        "bright object, as `medseg demo` does; percentile: MedSAM's MR clipping (ambiguous box)",
    )
    parser.add_argument(
        "--extra",
        action="store_true",
        help="also ours in fp32, ours at look-ahead batch 8, and the fp32 noise floor",
    )
    parser.add_argument(
        "--runtimes",
        action="store_true",
        help="also bf16 and fp32 encoders under torch and OpenVINO (medseg.inference.runtimes)",
    )
    parser.add_argument(
        "--tune-allocator",
        action="store_true",
        help="apply medseg.inference.device.configure_cpu_allocator() first (all variants)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=60.0,
        help="before each run, wait up to this many seconds for other processes to use <10%% CPU",
    )
    opts = parser.parse_args(args)
    allocator = "glibc tuned" if opts.tune_allocator and configure_cpu_allocator() else "default"
    repeats = 1 if opts.quick else opts.repeats

    stack, reference = mni_stack(opts.axis, WINDOWS[opts.window])
    filled = np.nonzero(reference.any(axis=(1, 2)))[0]
    key = int(filled[0] + opts.key_fraction * (filled[-1] - filled[0]))
    rows, cols = np.nonzero(reference[key])
    m = opts.margin
    box = (cols.min() - m, rows.min() - m, cols.max() + m, rows.max() + m)
    # A range inside the brain plays the official 3D box's z-range (our stop_at).
    count = 9 if opts.quick else opts.slices
    lo = max(int(filled[0]), key - count // 2)
    hi = min(int(filled[-1]), lo + count - 1)
    task = Task(stack, key, box, (lo, hi))

    net = load_litemedsam()
    auto = LiteMedSAMPredictor(net, precision="auto")  # converts (first run) and caches
    default = f"batch {auto.batch_size} (default)"
    variants: dict[str, Callable[[], tuple[np.ndarray, int]]] = {
        "baseline: official-style loop, fp32, 1 slice per call": lambda: official_loop(net, task)
    }
    eager = f"ours, {auto.precision}, torch eager (before --runtime), {default}"
    variants[eager] = _ours(net, task, "auto", None, "torch")
    if opts.runtimes:  # every precision under every runtime; "auto" marks the default choice
        for precision in ("bf16", "fp32"):
            for runtime in ("torch", "openvino"):
                mark = " (auto)" if _auto_runtime() == runtime else ""
                name = f"ours, {precision}, {runtime}{mark}"
                if (precision, runtime) != (auto.precision, "torch"):
                    variants[name] = _ours(net, task, precision, None, runtime)
    if opts.extra:
        variants[f"ours, fp32, {default}"] = _ours(net, task, "fp32", None)
        if auto.batch_size != 8:
            variants[f"ours, {auto.precision} (auto), batch 8"] = _ours(net, task, "auto", 8)

    times: dict[str, list[float]] = {name: [] for name in variants}
    loads: dict[str, list[float]] = {name: [] for name in variants}
    masks: dict[str, np.ndarray] = {}
    visited: dict[str, int] = {}
    for _ in range(repeats):  # round-robin so that background load hits every variant alike
        for name, run in variants.items():
            _wait_until_quiet(opts.wait_quiet)
            with _Meter() as meter:
                masks[name], visited[name] = run()
            times[name].append(meter.seconds)
            loads[name].append(meter.other_load)
    if opts.extra:
        noise = f"noise floor: baseline, input + N(0, {NOISE_GREY} grey level) (not timed)"
        masks[noise], visited[noise] = official_loop(net, task, NOISE_GREY)

    base_name = next(iter(variants))
    base_time = statistics.median(times[base_name])
    print(
        f"\nLiteMedSAM propagation, MNI152 T1 ({opts.window} window), {opts.axis} stack "
        f"{stack.shape}, key slice {key}, box {tuple(int(v) for v in box)}, slices {lo}-{hi}; "
        f"{_cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{allocator} allocator; median of {repeats}\n"
    )
    peak = _bf16_matmul_peak()
    print(f"CPU flags: {_bf16_flags()}; measured bf16 matmul peak {peak:.0f} GFLOP/s "
          f"(2 threads, 2048^3)\n")  # fmt: skip
    print("| variant | slices visited | seconds | s/slice | GFLOP/s | speed-up vs fp32 | "
          "vs torch eager | Dice vs fp32 baseline | other load |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    eager_time = statistics.median(times[eager])
    for name in masks:
        if name in times:
            seconds = statistics.median(times[name])
            per = seconds / max(visited[name], 1)
            timing = (f"{seconds:.1f} | {per:.3f} | {SLICE_GFLOP / per:.0f} | "
                      f"{base_time / seconds:.2f}x | {eager_time / seconds:.2f}x")  # fmt: skip
            load = f"{statistics.median(loads[name]):.0%}"
        else:
            timing, load = "- | - | - | - | -", "-"
        agreement = dice(masks[name], masks[base_name])
        print(f"| {name} | {visited[name]} | {timing} | {agreement:.4f} | {load} |")
    print(
        f"\nDice of the baseline vs the brain mask (T1/max > 0.2, holes filled) on slices "
        f"{lo}-{hi}: {dice(masks[base_name][lo : hi + 1], reference[lo : hi + 1]):.3f}; "
        "range of repeats (s): " + ", ".join(f"{min(v):.1f}-{max(v):.1f}" for v in times.values())
    )


def _auto_runtime() -> str:
    from medseg.inference.runtimes import resolve_runtime

    return resolve_runtime("auto", torch.device("cpu"))


def _bf16_matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of a bf16 ``n x n`` matmul in torch (the CPU's usable bf16 peak)."""
    a = torch.randn(n, n, dtype=torch.bfloat16)
    b = torch.randn(n, n, dtype=torch.bfloat16)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _bf16_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith("flags")), [])  # fmt: skip
    found = [f for f in ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    return ", ".join(found) or "none of avx512f/avx512_bf16/amx"


class Task(NamedTuple):
    stack: np.ndarray
    key: int
    box: tuple[int, int, int, int]
    stop_at: tuple[int, int]


def mni_stack(
    axis: str, window: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The MNI T1 as display slices ``(S, H, W)`` uint8 (``to_uint8`` with ``window``,
    ``np.rot90`` per slice so superior/anterior is up) and the filled brain mask alike."""
    volume = np.asarray(nib.load(str(files("nilearn.datasets").joinpath(MNI_T1))).dataobj)
    brain = ndimage.binary_fill_holes(volume / volume.max() > 0.2)
    moved = [np.moveaxis(a, AXES[axis], 0) for a in (to_uint8(volume, window=window), brain)]
    return tuple(np.ascontiguousarray(np.rot90(a, axes=(1, 2))) for a in moved)  # type: ignore[return-value]


def official_loop(net: LiteMedSAM, task: Task, noise_grey: float = 0.0) -> tuple[np.ndarray, int]:
    """Plain per-slice loop, as the official 3D inference does it (fp32, no cache), over
    ``task.stop_at`` (the official z-range), stopping where the mask vanishes.

    ``noise_grey`` adds seeded Gaussian noise (in grey levels of 255) to the encoder input: the
    model's own sensitivity, to read the bf16 Dice against. Returns ``(masks, slices visited)``.
    """
    stack, key, box, (lo, hi) = task
    segs = np.zeros(stack.shape, dtype=np.uint8)
    visited = 0
    generator = torch.Generator().manual_seed(0)
    height, width = stack.shape[1:]
    for step, start, stop in ((1, key, hi + 1), (-1, key - 1, lo - 1)):
        for z in range(start, stop, step):
            if z != key and _resize_longest_side(segs[z - step]).max() == 0:
                break  # ours: stop; the official script falls back to the key box here
            img_3c = np.repeat(stack[z][:, :, None], 3, axis=-1)
            img_256 = _resize_longest_side(img_3c)
            new_h, new_w = img_256.shape[:2]
            img_256 = (img_256 - img_256.min()) / np.clip(
                img_256.max() - img_256.min(), a_min=1e-8, a_max=None
            )
            tensor = torch.tensor(_pad(img_256)).float().permute(2, 0, 1).unsqueeze(0)
            if noise_grey:
                tensor = tensor + noise_grey / 255 * torch.randn(tensor.shape, generator=generator)
            with torch.no_grad():
                embedding = net.image_encoder(tensor)
            if z == key:
                ratio = 256 / max(height, width)
                box_256 = np.array([int(c * ratio) for c in box])
            else:
                box_256 = _bbox256(_pad(_resize_longest_side(segs[z - step])))
            segs[z] = _decode(net, embedding, box_256, (new_h, new_w), (height, width))
            visited += 1
    return segs.astype(bool), visited


def _ours(
    net: LiteMedSAM, task: Task, precision: str, batch: int | None, runtime: str = "torch"
) -> Callable[[], tuple[np.ndarray, int]]:
    def run() -> tuple[np.ndarray, int]:
        done = [0]
        predictor = LiteMedSAMPredictor(net, precision=precision, batch_size=batch, runtime=runtime)
        predictor.set_stack(task.stack)
        masks = predictor.propagate(
            task.key, task.box, stop_at=task.stop_at, progress=lambda n: done.__setitem__(0, n)
        )
        return masks, done[0]

    return run


@torch.no_grad()
def _decode(
    net: LiteMedSAM,
    embedding: torch.Tensor,
    box_256: np.ndarray,
    new_size: tuple[int, int],
    size: tuple[int, int],
) -> np.ndarray:
    box = torch.as_tensor(box_256[None, None, ...], dtype=torch.float)
    sparse, dense = net.prompt_encoder(points=None, boxes=box, masks=None)
    logits, _ = net.mask_decoder(
        image_embeddings=embedding,
        image_pe=net.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    logits = F.interpolate(
        logits[..., : new_size[0], : new_size[1]], size, mode="bilinear", align_corners=False
    )
    return (torch.sigmoid(logits).squeeze().numpy() > 0.5).astype(np.uint8)


def _resize_longest_side(image: np.ndarray, target: int = 256) -> np.ndarray:
    scale = target / max(image.shape[:2])
    size = (int(image.shape[1] * scale + 0.5), int(image.shape[0] * scale + 0.5))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _pad(image: np.ndarray, target: int = 256) -> np.ndarray:
    pad = ((0, target - image.shape[0]), (0, target - image.shape[1]))
    return np.pad(image, pad + ((0, 0),) * (image.ndim - 2))


def _bbox256(mask: np.ndarray, shift: int = 3) -> np.ndarray:
    rows, cols = np.nonzero(mask > 0)
    h, w = mask.shape
    return np.array(
        [
            max(0, cols.min() - shift),
            max(0, rows.min() - shift),
            min(w, cols.max() + shift),
            min(h, rows.max() + shift),
        ]
    )


class _Meter:
    """Wall time of a block and the share of all CPUs that *other* processes used meanwhile."""

    def __enter__(self) -> _Meter:
        self._start = (time.perf_counter(), _busy_cpu_seconds(), _own_cpu_seconds())
        return self

    def __exit__(self, *exc: object) -> None:
        wall, busy, own = (
            now - then
            for now, then in zip(
                (time.perf_counter(), _busy_cpu_seconds(), _own_cpu_seconds()),
                self._start,
                strict=True,
            )
        )
        self.seconds = wall
        self.other_load = max(0.0, busy - own) / (wall * (os.cpu_count() or 1))


def _wait_until_quiet(limit: float, threshold: float = 0.10) -> None:
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        with _Meter() as meter:
            time.sleep(1.0)
        if meter.other_load < threshold:
            return


def _busy_cpu_seconds() -> float:
    """All CPUs' non-idle time since boot (Linux ``/proc/stat``); 0 elsewhere."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:9]]
    except OSError:
        return 0.0
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


if __name__ == "__main__":
    main()
