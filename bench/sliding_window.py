"""Sliding-window inference: ``AutomaticSegmenter`` vs plain MONAI, plus WAU training throughput.

Baseline: ``monai.inferers.sliding_window_inference`` as a user writes it for a net trained on
96^3 patches: fp32, ``roi_size`` = the patch, ``sw_batch_size=1``, overlap 0.5 (nnU-Net's),
Gaussian blending. Ours: :meth:`medseg.inference.automatic.AutomaticSegmenter.predict_logits`
with its defaults (fp32 on CPU, bf16 autocast on CUDA; ``sw_batch_size=2``; the window grown
from the patch up to 8x its voxels for nets without instance/group norm), and with
``precision="bf16"`` (bf16 autocast on this AMX CPU).
Both run the **same** weights: PERF.md §4's MONAI UNet (channels 16..256, strides 2x4, 2
residual units, 14 classes; instance norm = MONAI's default, and batch norm, whose eval-mode
output does not depend on the window) on a 1x1xS^3 phantom (S = 192) of 13 blobs with distinct
intensities, under ``torch.inference_mode()``.

Parity: per-class Dice of the arg-max labels against the baseline's labels (target >= 0.99).
A random-init net has no decision margin anywhere (its logits are near-ties), so bf16 rounding
alone flips ~1.5 % of voxels; each net is therefore first fitted to the phantom for
``--fit-steps`` Adam steps on random crops (0 = random init), which gives it real margins as a
trained net has. Variants are timed round-robin (one call of each per round, after one warm-up
call each), so a load spike from other processes hits all of them; the median is reported.

Training throughput: forward + backward + AdamW step of WAU tiny and WAU base on random patches,
samples/s.

    .venv/bin/python -m bench.sliding_window               # full run, median of 3
    .venv/bin/python -m bench.sliding_window --classes 4 --fit-cache /tmp/swcache --no-train
    .venv/bin/python -m bench.sliding_window --quick       # smoke: S = 64, patch 32, 1 repeat
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from medseg.inference.automatic import AutomaticSegmenter

CLASSES = 14  # default; --classes changes it
Run = Callable[[torch.Tensor], torch.Tensor]


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median)")
    parser.add_argument("--quick", action="store_true", help="small volume, 1 repeat (smoke)")
    parser.add_argument("--size", type=int, default=192, help="volume side S (voxels)")
    parser.add_argument("--patch", type=int, default=96, help="trained patch side")
    parser.add_argument("--classes", type=int, default=CLASSES, help="phantom classes (2..14)")
    parser.add_argument("--fit-steps", type=int, default=400, help="fit steps (0: random init)")
    parser.add_argument("--norms", default="instance,batch", help="UNet normalisations to run")
    parser.add_argument(
        "--fit-cache", default=None, help="folder keeping fitted weights between runs"
    )
    parser.add_argument("--extra", action="store_true", help="more rows (one knob at a time)")
    parser.add_argument("--no-train", action="store_true", help="skip the training throughput")
    opts = parser.parse_args(args)
    repeats = 1 if opts.quick else opts.repeats
    size, patch = (64, 32) if opts.quick else (opts.size, opts.patch)
    steps = min(opts.fit_steps, 5) if opts.quick else opts.fit_steps
    image, truth = phantom(size, opts.classes)
    print(
        f"# sliding window: {platform.machine()}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}; volume 1x1x{size}^3, patch {patch}^3, {opts.classes} classes, "
        f"{steps} fit steps, median of {repeats} round-robin rounds\n"
    )
    print(
        "| net | variant | s (median) | speed-up | min class Dice vs baseline | "
        "classes >= 0.99 | Dice vs phantom |"
    )
    print("|---|---|---|---|---|---|---|")
    for norm in opts.norms.split(","):
        torch.manual_seed(0)
        net = fitted(norm, opts.classes, image, truth, steps, min(patch, 64), opts.fit_cache)
        variants = sliding_variants(net, patch, opts.classes, opts.extra)
        seconds, labels = timed(variants, image, repeats)
        ref = labels[0]
        base = seconds[0]
        for (name, _), s, lab in zip(variants, seconds, labels, strict=True):
            dice = per_class_dice(lab, ref)
            fg = np.mean(per_class_dice(lab, truth)[1:])
            print(
                f"| UNet {norm} norm | {name} | {s:.2f} | {base / s:.2f}x | {min(dice):.4f} "
                f"| {sum(d >= 0.99 for d in dice)}/{len(dice)} | {fg:.3f} |",
                flush=True,
            )
    if not opts.no_train:
        print()
        training_table(opts.quick, repeats)


def monai_unet(norm: str = "instance", classes: int = CLASSES) -> torch.nn.Module:
    """PERF.md §4's UNet: 4.8 M parameters, 21.7 GFLOP per 96^3 window. ``norm="batch"`` (in
    eval mode: fixed statistics) makes its output independent of the window size."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=3,
        in_channels=1,
        out_channels=classes,
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
        num_res_units=2,
        norm=norm,
    )


def phantom(size: int, classes: int = CLASSES, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Image ``(1, 1, S, S, S)`` float32 (z-scored) and labels ``(1, S, S, S)`` int64: 13
    overlapping spheres (later ones on top), each class with its own brightness, mild noise."""
    rng = np.random.default_rng(seed)
    axes = np.linspace(-1, 1, size, dtype=np.float32)
    g = np.stack(np.meshgrid(axes, axes, axes, indexing="ij"))
    label = np.zeros((size,) * 3, np.int64)
    for k in range(1, classes):
        c = rng.uniform(-0.65, 0.65, (3, 1, 1, 1)).astype(np.float32)
        label[((g - c) ** 2).sum(0) <= rng.uniform(0.15, 0.35) ** 2] = k
    levels = rng.permutation(np.linspace(-2.0, 2.0, classes)).astype(np.float32)
    img = levels[label] + rng.normal(0, 0.05, label.shape).astype(np.float32)
    img = (img - img.mean()) / img.std()
    return torch.from_numpy(img)[None, None], torch.from_numpy(label)[None]


def fitted(
    norm: str, classes: int, image, truth, steps: int, crop: int, cache: str | None
) -> torch.nn.Module:
    """The fitted bench net, from ``cache`` when an earlier run with the same settings left it."""
    from pathlib import Path

    net = monai_unet(norm, classes)
    path = None
    if cache:
        path = Path(cache) / f"unet_{norm}_{classes}_{image.shape[-1]}_{steps}_{crop}.pt"
        if path.is_file():
            net.load_state_dict(torch.load(path, weights_only=True))
            return net.eval()
    t0 = time.perf_counter()
    net = fit(net, image, truth, steps, crop)
    print(f"(fitted {norm}-norm UNet: {steps} steps in {time.perf_counter() - t0:.0f} s)")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(net.state_dict(), path)
    return net


def fit(net: torch.nn.Module, image: torch.Tensor, truth: torch.Tensor, steps: int, crop: int):
    """``steps`` Adam steps of Dice + cross-entropy (MONAI ``DiceCELoss``, as nnU-Net trains)
    on random ``crop^3`` patches, learning rate 3e-3 decaying by a cosine to 3e-5; returns the
    net in eval mode."""
    from monai.losses import DiceCELoss

    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1), eta_min=3e-5)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    size = image.shape[-1]
    net.train()
    for _ in range(steps):
        o = [int(torch.randint(0, size - crop + 1, (1,), generator=gen)) for _ in range(3)]
        sl = (slice(None), *(slice(i, i + crop) for i in o))
        loss = loss_fn(net(image[(slice(None), *sl)]), truth[sl][:, None])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return net.eval()


def sliding_variants(
    net: torch.nn.Module, patch: int, classes: int, extra: bool
) -> list[tuple[str, Run]]:
    from monai.inferers import sliding_window_inference

    roi = (patch,) * 3

    def monai(bf16: bool, sw_batch: int = 1) -> Run:
        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = sliding_window_inference(x, roi, sw_batch, net, overlap=0.5, mode="gaussian")
            return out.float()  # type: ignore[union-attr]

        return run

    def ours(**kwargs) -> Run:
        seg = AutomaticSegmenter(net, _preprocessing(patch, classes), device="cpu", **kwargs)
        return lambda x: seg.predict_logits(x)[0]

    rows = [("MONAI fp32, roi = patch, sw_batch 1 (baseline)", monai(False))]
    if extra:
        rows += [
            ("MONAI fp32, sw_batch 2", monai(False, 2)),
            ("MONAI bf16 autocast, sw_batch 1", monai(True)),
            ("ours fp32, roi = patch", ours(precision="fp32", roi="patch")),
            ("ours bf16, roi = patch", ours(precision="bf16", roi="patch")),
        ]
    rows += [
        ("**ours, defaults** (CPU: fp32, roi auto, sw_batch 2)", ours()),
        ("ours --precision bf16 (roi auto, sw_batch 2)", ours(precision="bf16")),
    ]
    return rows


def _preprocessing(patch: int, classes: int) -> dict:
    return {
        "spatial_dims": 3,
        "target_spacing": [1.0, 1.0, 1.0],
        "orientation": "RAS",
        "channel_names": ["MRI"],
        "normalisation": [{"scheme": "zscore"}],
        "labels": {str(i): f"class{i}" for i in range(classes)},
        "patch_size": [patch] * 3,
        "slice_axis": 2,
    }


def timed(
    variants: list[tuple[str, Run]], x: torch.Tensor, repeats: int
) -> tuple[list[float], list[torch.Tensor]]:
    """Per variant: median seconds over ``repeats`` round-robin rounds (after one warm-up call
    each, which also gives the arg-max labels ``(1, S, S, S)``)."""
    times: list[list[float]] = [[] for _ in variants]
    with torch.inference_mode():
        labels = [run(x).argmax(1) for _, run in variants]
        for _ in range(repeats):
            for i, (_, run) in enumerate(variants):
                t0 = time.perf_counter()
                run(x)
                times[i].append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times], labels


def per_class_dice(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Dice of every class present in either map (absent from both: left out)."""
    out = []
    for c in range(int(max(a.max(), b.max())) + 1):
        p, g = a == c, b == c
        total = int(p.sum()) + int(g.sum())
        if total:
            out.append(2 * int((p & g).sum()) / total)
    return out


def training_table(quick: bool, repeats: int) -> None:
    from medseg.models import build_model

    cases = [
        ("WAU tiny", True, 2, 64 if quick else 128, 8),
        ("WAU tiny", True, 3, 32 if quick else 64, 2),
        ("WAU base", False, 2, 64 if quick else 128, 2),
        ("WAU base", False, 3, 32 if quick else 64, 1),
    ]
    print("| model | dims | patch | batch | s/step (median) | samples/s |")
    print("|---|---|---|---|---|---|")
    for name, tiny, dims, side, batch in cases:
        torch.manual_seed(0)
        net = build_model("wau", tiny=tiny, spatial_dims=dims, out_channels=4)
        x = torch.randn(batch, 1, *(side,) * dims)
        y = torch.randint(0, 4, (batch, *(side,) * dims))
        s = _train_seconds(net, x, y, max(repeats, 2))
        patch = "x".join([str(side)] * dims)
        print(f"| {name} | {dims}-D | {patch} | {batch} | {s:.3f} | {batch / s:.2f} |", flush=True)


def _train_seconds(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    """Median seconds of one AdamW step (cross-entropy) after a warm-up step."""
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    main()
