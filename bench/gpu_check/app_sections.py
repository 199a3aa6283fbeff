"""GPU-check sections for the product paths: LiteMedSAM propagation, sliding-window inference,
``medseg fit`` smoke steps per preset, and ``medseg segment``/``restore`` on CUDA vs CPU.

Each section is ``fn(ctx) -> Result``; ``ctx.dry`` runs it at tiny sizes on CPU (then "cuda"
below means the CPU, and a threshold that compares precisions is reported, not applied).
"""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.gpu_check.common import ROOT, Context, Result, md_table


def litemedsam(ctx: Context) -> Result:
    """LiteMedSAM 3-D propagation: our predictor on ``ctx.device`` (auto precision = bf16 on
    CUDA, and fp32) vs ``bench.litemedsam.official_loop`` (fp32, CPU) on a generated stack."""
    import torch

    from bench.litemedsam import Task, official_loop
    from medseg.inference.litemedsam import LiteMedSAMPredictor
    from medseg.inference.stats import dice
    from medseg.models.litemedsam import load_litemedsam

    stack, mask = _blob_stack(3 if ctx.dry else 40, 128 if ctx.dry else 256)
    key = len(stack) // 2
    ys, xs = np.nonzero(mask[key])
    box = (xs.min() - 5, ys.min() - 5, xs.max() + 5, ys.max() + 5)
    task = Task(stack, key, box, (0, len(stack) - 1))
    net = load_litemedsam()
    t0 = time.perf_counter()
    ref, visited = official_loop(net, task)
    rows = [["official-style loop, fp32, CPU (reference)", visited, _s(t0), "1.0000"]]
    bad = []
    for precision in ("auto", "fp32"):
        predictor = LiteMedSAMPredictor(copy.deepcopy(net), device=ctx.device, precision=precision)
        for _ in range(2):  # the first call compiles/warms up; the second is timed
            t0 = time.perf_counter()
            predictor.set_stack(stack)
            masks = predictor.propagate(key, box, stop_at=task.stop_at)
            if ctx.device == "cuda":
                torch.cuda.synchronize()
            if ctx.dry:
                break
        d = dice(masks, ref)
        name = f"ours, {ctx.device}, {predictor.precision} ({precision})"
        rows.append([name, int(masks.any(axis=(1, 2)).sum()), _s(t0), f"{d:.4f}"])
        if d < (0.98 if predictor.precision == "bf16" else 0.99) and not ctx.dry:
            bad.append(name)
    body = md_table(["variant", "slices with mask", "seconds", "Dice vs reference"], rows)
    body += f"\n\nstack {stack.shape}, key slice {key}, box {tuple(int(v) for v in box)}"
    summary = "; ".join(f"{r[0].split(', ', 1)[1]}: Dice {r[3]}, {r[2]} s" for r in rows[1:])
    return Result("FAIL" if bad else "PASS", summary + f"; reference {rows[0][2]} s", body)


def _blob_stack(slices: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """``(S, side, side)`` uint8 display slices of a bright noisy ellipsoid and its mask."""
    rng = np.random.default_rng(0)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in (slices, side, side)), indexing="ij")
    mask = (x / 0.45) ** 2 + ((y + 0.1) / 0.35) ** 2 + (z / 0.9) ** 2 <= 1
    img = 40 + 150 * mask + 20 * np.sin(6 * x) + rng.normal(0, 8, mask.shape)
    return np.clip(img, 0, 255).astype(np.uint8), mask


def sliding_window(ctx: Context) -> Result:
    """``AutomaticSegmenter`` defaults (bf16 autocast on CUDA) vs MONAI fp32 sliding window on a
    192^3 phantom, same fitted UNet (``bench.sliding_window``'s net, phantom and fit)."""
    import torch
    from monai.inferers import sliding_window_inference

    from bench.sliding_window import _preprocessing, fit, monai_unet, per_class_dice, phantom
    from medseg.inference.automatic import AutomaticSegmenter

    size, patch, classes, steps = (48, 32, 4, 3) if ctx.dry else (192, 96, 14, 400)
    dev = torch.device(ctx.device)
    image, truth = phantom(size, classes)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    net = fit(
        monai_unet("instance", classes).to(dev), image.to(dev), truth.to(dev), steps, min(patch, 64)
    )
    fit_s = time.perf_counter() - t0
    seg = AutomaticSegmenter(net, _preprocessing(patch, classes), device=ctx.device)

    def baseline(x):
        out = sliding_window_inference(
            x.to(dev), (patch,) * 3, 1, net, overlap=0.5, mode="gaussian"
        )
        return out.float()

    variants = {
        "MONAI fp32, roi = patch, sw_batch 1": baseline,
        f"ours, defaults ({seg.precision})": lambda x: seg.predict_logits(x)[0],
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    labels = {}
    with torch.inference_mode():
        for round_ in range(1 if ctx.dry else 4):  # round 0: warm-up, gives the labels
            for name, run in variants.items():
                _sync(dev)
                t0 = time.perf_counter()
                out = run(image)
                _sync(dev)
                if round_ == 0:
                    labels[name] = out.argmax(1).cpu()
                if round_ or ctx.dry:
                    times[name].append(time.perf_counter() - t0)
    names = list(variants)
    ref = labels[names[0]]
    rows, worst = [], 1.0
    for name in names:
        dice = per_class_dice(labels[name], ref)
        fg = float(np.mean(per_class_dice(labels[name], truth)[1:]))
        worst = min(worst, min(dice))
        rows.append(
            [
                name,
                f"{statistics.median(times[name]):.3f}",
                f"{min(dice):.4f}",
                f"{sum(d >= 0.99 for d in dice)}/{len(dice)}",
                f"{fg:.3f}",
            ]
        )
    head = ["variant", "s (median)", "min class Dice vs MONAI", "classes >= 0.99", "Dice vs truth"]
    body = md_table(head, rows) + f"\n\nvolume {size}^3, {classes} classes, fit {steps} steps"
    body += f" in {fit_s:.0f} s on {ctx.device}"
    speed = float(rows[0][1]) / float(rows[1][1])
    summary = f"min class Dice {worst:.4f} (>= 0.99 needed), ours {speed:.2f}x MONAI fp32"
    return Result("PASS" if worst >= 0.99 or ctx.dry else "FAIL", summary, body)


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


PRESETS = {  # name: (experiment, overrides on CUDA, where the data is 128 x 128 x 64)
    "U-Net": ("unet_task04", []),
    "WAU": ("wau_task04", []),
    "RAT": ("rat_task02", []),
    "DISGAN": ("disgan_task02", []),
    "DB-SAM tiny": ("db_sam_task04", ["--data.init_args.patch_size=[64,64]"]),
    "SAM2-SGP tiny": ("sam2_sgp_task04", ["--data.init_args.patch_size=[64,64]"]),
}


def fit(ctx: Context) -> Result:
    """One ``medseg fit`` step (1 train batch, 1 val batch) per preset on synthetic MSD data,
    ``--trainer.accelerator gpu --trainer.precision bf16-mixed`` (dry: cpu, bf16-mixed)."""
    deadline = time.perf_counter() + ctx.limit - 5
    prep = _prepared(ctx)
    rows, bad = [], []
    for i, name in enumerate(PRESETS):
        run = ctx.work / name.split()[0].lower().replace("-", "_")
        argv = _fit_argv(name, prep, run, ctx.dry)
        t0 = time.perf_counter()
        later = len(PRESETS) - i - 1  # keep 15 s for each fit after this one
        proc = _medseg(argv, timeout=max(20.0, deadline - t0 - 15 * later))
        ok = proc.returncode == 0 and (run / "checkpoints" / "last.ckpt").is_file()
        bad += [] if ok else [name]
        why = "" if ok else _last_line(proc)
        rows.append([name, PRESETS[name][0], "ok" if ok else f"**FAIL** {why}", _s(t0)])
    body = md_table(["preset", "experiment config", "result", "seconds"], rows)
    accel = "cpu" if ctx.dry else "gpu"
    body += "\n\n`medseg fit --config configs/experiments/<config>.yaml --trainer configs/trainer/"
    body += f"cpu_smoke.yaml --trainer.accelerator {accel} --trainer.precision bf16-mixed ...`"
    summary = f"{len(rows) - len(bad)}/{len(rows)} presets trained one step"
    return Result(
        "FAIL" if bad else "PASS", summary + (f" (failed: {', '.join(bad)})" * bool(bad)), body
    )


def _prepared(ctx: Context) -> Path:
    from data_prep import prepare
    from data_prep.synthetic import write_msd

    shape = (32, 32, 16) if ctx.dry else (128, 128, 64)
    raw = write_msd(ctx.work / "raw", cases=4, test_cases=1, shape=shape)
    return prepare("msd", raw, ctx.work / "prep", folds=2)


def _fit_argv(name: str, prep: Path, run: Path, dry: bool) -> list[str]:
    from bench.gpu_check.kernel_sections import load_test_module

    experiment, full = PRESETS[name]
    argv = [
        "fit",
        "--config",
        str(ROOT / "configs/experiments" / f"{experiment}.yaml"),
        "--trainer",
        str(ROOT / "configs/trainer/cpu_smoke.yaml"),
        "--trainer.accelerator",
        "cpu" if dry else "gpu",
        "--trainer.precision",
        "bf16-mixed",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={run}",
        f"--data.init_args.prep_dir={prep}",
        "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=1",
    ]
    if name in ("U-Net", "WAU"):
        argv += ["--data.init_args.samples_per_volume=1", "--model.init_args.sw_batch_size=1"]
    if name.endswith("tiny"):
        kit = load_test_module("test_promptable_task")
        sizes = kit.TINY_DB_SAM if name.startswith("DB-SAM") else kit.TINY_SGP
        argv += [f"--model.init_args.net.init_args.{k}={json.dumps(v)}" for k, v in sizes.items()]
        argv += ["--model.init_args.val_batch_size=4", "--model.init_args.hd95=false"]
    if not dry:
        return argv + full
    if name in ("U-Net", "WAU"):
        argv += ["--model.init_args.net.init_args.channels=[8,16,32]"]
        argv += ["--model.init_args.net.init_args.strides=[2,2]"] * (name == "U-Net")
    elif name in ("RAT", "DISGAN"):
        kit = load_test_module("restoration_kit")
        net = kit.TINY_RAT if name == "RAT" else kit.tiny_disgan(16)
        if name == "RAT":
            net = {**net, "init_args": {**net["init_args"], "scale": 2}}
        argv += [f"--model.init_args.net={json.dumps(net)}"]
        argv += ["--data.init_args.patch_size=" + ("[32,32]" if name == "RAT" else "[16,16,16]")]
    else:
        argv += ["--data.init_args.patch_size=[32,32]"]
    return argv


def segment_restore(ctx: Context) -> Result:
    """``medseg segment`` (LiteMedSAM box, propagated) and ``medseg restore`` (the RAT checkpoint
    of the fit section) with ``--device cuda`` vs ``--device cpu`` on a generated volume."""
    import nibabel as nib

    from medseg.metrics import dice

    stack, mask = _blob_stack(4 if ctx.dry else 32, 64 if ctx.dry else 128)
    volume = np.ascontiguousarray(stack.transpose(2, 1, 0)).astype(np.float32)  # (X, Y, Z)
    path = ctx.work / "blob.nii.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), path)
    key = volume.shape[2] // 2
    truth = mask.transpose(2, 1, 0)
    ys, xs = np.nonzero(mask[key])  # (Y, X) voxel indices; displayed flipped (radiological)
    x_end, y_end = volume.shape[0] - 1, volume.shape[1] - 1
    corners = (
        x_end - xs.max() - 4,
        y_end - ys.max() - 4,
        x_end - xs.min() + 4,
        y_end - ys.min() + 4,
    )
    box = ",".join(str(int(c)) for c in corners)
    rows, bad, outs = [], [], []
    for device in ("cpu", ctx.device):
        out = ctx.work / f"seg_{len(outs)}_{device}"
        argv = [
            "segment",
            str(path),
            "-o",
            str(out),
            "--box",
            box,
            "--slice",
            str(key),
            "--device",
            device,
            "--quiet",
            "--overwrite",
        ]
        t0 = time.perf_counter()
        proc = _medseg(argv, timeout=ctx.limit / 3)
        outs.append(out if proc.returncode == 0 else ctx.work / "missing")
        rows.append([f"segment --device {device}", proc.returncode, _s(t0), _last_line(proc)])
    files = [next(o.glob("*_seg.nii.gz"), None) for o in outs]
    seg_dice = float("nan")
    if None in files:
        bad.append("segment")
    else:
        segs = [np.asarray(nib.load(f).dataobj) > 0 for f in files]
        seg_dice = dice(segs[0], segs[1], empty=1.0)
        rows[-1][-1] = f"Dice vs CPU {seg_dice:.4f}, {int(segs[1].sum())} voxels"
        rows[-1][-1] += f" (Dice vs the generated object {dice(segs[1], truth):.3f})"
        bad += [] if seg_dice >= 0.99 else ["segment"]
    ckpt = ctx.work.parent / "fit" / "rat" / "checkpoints" / "last.ckpt"  # the fit section's
    if not ckpt.is_file():
        rows.append(["restore", "-", "-", "SKIP: no RAT checkpoint (the fit section failed)"])
    else:
        small = ctx.work / "small.nii.gz"
        crop = volume[::2, ::2, max(key - 2, 0) : key + 2].copy()
        nib.save(nib.Nifti1Image(crop, np.eye(4)), small)
        restored = []
        for device in ("cpu", ctx.device):
            out = ctx.work / f"restored_{len(restored)}_{device}.nii.gz"
            argv = [
                "restore",
                str(small),
                "-o",
                str(out),
                "--checkpoint",
                str(ckpt),
                "--device",
                device,
                "--quiet",
                "--overwrite",
            ]
            t0 = time.perf_counter()
            proc = _medseg(argv, timeout=ctx.limit / 3)
            rows.append([f"restore --device {device}", proc.returncode, _s(t0), _last_line(proc)])
            ok = proc.returncode == 0 and out.is_file()
            restored.append(np.asarray(nib.load(out).dataobj, np.float64) if ok else None)
        if restored[1] is None or restored[0] is None:
            bad.append("restore")
        else:
            err = np.abs(restored[1] - restored[0]).max()
            span = float(np.ptp(restored[0])) or 1.0
            psnr = 20 * np.log10(
                span / max(np.sqrt(np.mean((restored[1] - restored[0]) ** 2)), 1e-12)
            )
            rows[-1][-1] = f"vs CPU: PSNR {psnr:.1f} dB (range {span:.3g}), max |diff| {err:.3g}"
            bad += [] if psnr >= 35 else ["restore"]
    body = md_table(["command", "exit", "seconds", "result"], rows)
    body += f"\n\nvolume {volume.shape} (generated blob), box {box} on axial slice {key}"
    status = "FAIL" if bad else "PASS"
    summary = f"segment Dice cuda vs cpu {seg_dice:.4f} (>= 0.99); " + rows[-1][-1]
    return Result(status, summary.replace(str(ROOT), "."), body)


def _medseg(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "medseg.cli.main", *argv]
    print("$", " ".join(cmd), flush=True)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        return subprocess.CompletedProcess(cmd, 124, out, f"timed out after {timeout:.0f} s")
    print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", flush=True)
    return proc


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return lines[-1][:160].replace("|", "/") if lines and proc.returncode else ""


def _s(t0: float) -> str:
    return f"{time.perf_counter() - t0:.1f}"
