"""Restoration quality on real volumes, degraded by medseg's own degradations.

Volumes: nilearn's MNI152 T1 (1 mm, cropped to 160 x 192 x 160 around the head) and, when the
folder is there, the two real CT crops of ``tests/data/real_ct`` (1.5 mm, HU; see its README).
Degradations (:mod:`medseg.transforms.degrade`, seed 0):

- MR: ``rician_noise`` with sigma = 2 %, 5 % and 10 % of the image's robust range (99.5th minus
  0.5th percentile); CT: ``low_dose_ct`` at 25 % and 10 % of the dose;
- ``downsample`` x2 in-plane (``area``: 2 x 2 block means of every axial slice);
- ``thick_slices``: 5 mm slabs from the 1 mm MNI (5 slices averaged), 4.5 mm from the 1.5 mm
  CT (3 slices).

Rows: the degraded input (for resolution loss: the low-resolution voxels repeated on the fine
grid), linear and cubic interpolation back to the fine grid (scipy ``zoom``, ``grid_mode``:
voxel edges aligned, as the block means are), a Gaussian blur (sigma 0.7 voxel, a naive
denoiser), the default ``medseg.restore`` (DIPY non-local means, no checkpoint) and, for thick
slices, ``medseg.restore(method="self-sr")`` (a tiny RAT trained on the degraded volume itself,
``--self-sr-steps`` steps; nothing else is seen). Columns:
PSNR (dB, peak = the clean volume's max - min), SSIM (MONAI ``SSIMMetric``, 2-D on every axial
slice, 11-pixel Gaussian window, data range the same, mean over slices) against the clean
volume, the method's wall-clock seconds (the CPU of this machine) and, on the CTs (whose
reference masks ship with them: the aorta, the pulmonary artery), the Dice of a fixed segmenter
on the restored image: the shipped LiteMedSAM, window 40/400, given the reference's bounding box
on every 6th axial slice of the structure and scored on those slices. The prompts are the same
for every image, so a change against the clean image's Dice (``clean`` row) is the image's doing.

    .venv/bin/python -m bench.restoration_quality                 # MNI + real CT (~5-10 min)
    .venv/bin/python -m bench.restoration_quality --only mni      # MNI only
    .venv/bin/python -m bench.restoration_quality --self-sr-time  # self-sr on 256x256x40 only
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REAL_CT = Path(__file__).resolve().parents[1] / "tests" / "data" / "real_ct"  # shipped test data


MASKS = {"aorta_ct": "aorta_ct__aorta", "pulmonary_ct": "pulmonary_ct__pulmonary_artery"}


def volumes(only: str | None, ct_folder: Path) -> dict[str, tuple[np.ndarray, str, Any]]:
    """name -> (clean ``(X, Y, Z)`` float32 array, kind ``"mr"`` | ``"ct"``, a
    :class:`FixedSegmenter` or None)."""
    from nilearn.datasets import MNI152_FILE_PATH

    from medseg.io import load_volume

    out: dict[str, tuple[np.ndarray, str]] = {}
    if only in (None, "mni"):
        mni = load_volume(MNI152_FILE_PATH)
        crop = mni.array[18:178, 20:212, 14:174].astype(np.float32)
        out["MNI T1"] = (crop, "mr", None)
    if only in (None, "ct") and ct_folder.is_dir():
        for name, mask in MASKS.items():
            ct = load_volume(ct_folder / f"{name}.nii.gz")
            x, y, z = (s - s % m for s, m in zip(ct.array.shape, (2, 2, 3), strict=True))
            ref = load_volume(ct_folder / f"{mask}.nii.gz", role="label").array[:x, :y, :z]
            seg = FixedSegmenter(ct.affine, ref)  # cropping the far ends keeps the affine
            out[f"CT {name}"] = (ct.array[:x, :y, :z].astype(np.float32), "ct", seg)
    return out


class FixedSegmenter:
    """LiteMedSAM boxed from the reference on every 6th axial slice of it (module docstring)."""

    def __init__(self, affine: np.ndarray, reference: np.ndarray, every: int = 6) -> None:
        from medseg.api import Segmenter

        self.segmenter = Segmenter(device="cpu").load()
        self.affine, self.reference, self.every = affine, reference, every

    def dice(self, array: np.ndarray) -> float:
        """Mean Dice over the prompted slices of the segmentation of ``array`` (clean grid)."""
        from medseg.inference.prompted import Prompt
        from medseg.io.volume import Volume
        from medseg.metrics import dice

        prompted = self.segmenter.fork().prompt_volume(
            Volume(np.ascontiguousarray(array), self.affine), axis="axial", window=(40, 400)
        )
        ref = prompted.view.stack(self.reference) > 0
        slices = np.flatnonzero(ref.reshape(len(ref), -1).any(1))[:: self.every]
        prompts = []
        for k in slices:
            rows, cols = np.nonzero(ref[k])
            box = (float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max()))
            prompts.append(Prompt("axial", int(k), box))
        masks, _ = prompted.segment(prompts, propagate=False)
        return float(np.mean([dice(masks[k], ref[k]) for k in slices]))


def degradations(kind: str, clean: np.ndarray) -> dict[str, np.ndarray]:
    """name -> degraded array (noise: on the clean grid; resolution loss: low resolution)."""
    from medseg.transforms.degrade import (
        downsample,
        low_dose_ct,
        rician_noise,
        robust_range,
        thick_slices,
    )

    x = torch.from_numpy(clean)[None]
    out = {}
    if kind == "mr":
        span = robust_range(x)
        for pct in (2, 5, 10):
            gen = torch.Generator().manual_seed(0)
            out[f"Rician {pct}%"] = rician_noise(x, pct / 100 * span, gen)[0].numpy()
    else:
        for dose in (25, 10):
            gen = torch.Generator().manual_seed(0)
            out[f"low-dose {dose}%"] = low_dose_ct(x, dose / 100, gen)[0].numpy()
    slices = torch.from_numpy(clean).permute(2, 0, 1)  # (Z, X, Y): every axial slice in 2-D
    out["x2 in-plane"] = downsample(slices, 2).permute(1, 2, 0).numpy()
    factor = 5 if kind == "mr" else 3
    thickness = factor * (1.0 if kind == "mr" else 1.5)
    out[f"{thickness:g} mm slices"] = thick_slices(x, factor)[0].numpy()
    return out


def psnr_ssim(restored: np.ndarray, clean: np.ndarray) -> tuple[float, float]:
    from monai.metrics import PSNRMetric, SSIMMetric

    span = float(clean.max() - clean.min())
    a = torch.from_numpy(np.ascontiguousarray(restored, np.float32))[None, None]
    b = torch.from_numpy(np.ascontiguousarray(clean, np.float32))[None, None]
    psnr = float(PSNRMetric(max_val=span)(a, b).item())
    slices_a, slices_b = a[0].permute(3, 0, 1, 2), b[0].permute(3, 0, 1, 2)  # (Z, 1, X, Y)
    ssim = float(SSIMMetric(spatial_dims=2, data_range=span)(slices_a, slices_b).mean().item())
    return psnr, ssim


def upsample(low: np.ndarray, shape: tuple[int, ...], order: int) -> np.ndarray:
    """``low`` on the fine grid ``shape`` (same box, voxel edges aligned); order 0/1/3."""
    from scipy.ndimage import zoom

    factors = [s / n for s, n in zip(shape, low.shape, strict=True)]
    if order == 0:
        out = low
        for axis, f in enumerate(factors):
            out = np.repeat(out, round(f), axis=axis)
        return out
    return zoom(low, factors, order=order, mode="nearest", grid_mode=True).astype(np.float32)


def self_sr(low: np.ndarray, spacing: tuple[float, float, float], steps: int) -> np.ndarray:
    """``medseg.restore(method="self-sr")`` of ``low`` on an axis-aligned grid of ``spacing``."""
    import medseg
    from medseg.io.volume import Volume

    volume = Volume(low, np.diag([*spacing, 1.0]))
    return medseg.restore(volume, method="self-sr", steps=steps).volume.array


def rows_for(
    name: str, low: np.ndarray, clean: np.ndarray, kind: str, steps: int
) -> list[tuple[str, Callable]]:
    """(method, () -> restored array on the clean grid) for one degradation."""
    if low.shape != clean.shape:  # resolution loss
        rows = [
            ("degraded (voxels repeated)", lambda: upsample(low, clean.shape, 0)),
            ("linear interpolation", lambda: upsample(low, clean.shape, 1)),
            ("cubic interpolation", lambda: upsample(low, clean.shape, 3)),
        ]
        if "slices" in name:
            grid = 1.0 if kind == "mr" else 1.5
            spacing = (grid, grid, grid * clean.shape[2] / low.shape[2])
            rows.append((f"medseg restore --method self-sr ({steps} steps)",
                         lambda: self_sr(low, spacing, steps)))  # fmt: skip
        return rows

    def default() -> np.ndarray:
        import medseg
        from medseg.io.volume import Volume

        return medseg.restore(Volume(low, np.eye(4))).volume.array

    def blur() -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        return gaussian_filter(low, 0.7)

    return [("degraded", lambda: low), ("Gaussian blur 0.7", blur),
            ("medseg restore (nlmeans, default)", default)]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("mni", "ct"), default=None)
    parser.add_argument("--ct-folder", type=Path, default=REAL_CT)
    parser.add_argument("--self-sr-steps", type=int, default=1000)
    parser.add_argument(
        "--self-sr-time", action="store_true", help="only time self-sr on a 256x256x40 volume"
    )
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} "
          f"CPUs, load average {load:.1f} at start (> 2: a shared machine)")  # fmt: skip
    if args.self_sr_time:
        return time_self_sr(args.self_sr_steps)
    print("\n| volume | degradation | method | PSNR dB | SSIM | seconds | Dice |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for vname, (clean, kind, seg) in volumes(args.only, args.ct_folder).items():
        if seg is not None:
            print(f"| {vname} | none | clean | | | | {seg.dice(clean):.3f} |", flush=True)
        for dname, low in degradations(kind, clean).items():
            for method, run in rows_for(dname, low, clean, kind, args.self_sr_steps):
                start = time.perf_counter()
                restored = run()
                seconds = time.perf_counter() - start
                psnr, ssim = psnr_ssim(restored, clean)
                score = "" if seg is None else f"{seg.dice(restored):.3f}"
                print(f"| {vname} | {dname} | {method} | {psnr:.2f} | {ssim:.4f} | "
                      f"{seconds:.1f} | {score} |", flush=True)  # fmt: skip
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


def time_self_sr(steps: int) -> None:
    """Wall time of self-sr on a 256 x 256 x 40 volume of 5 mm slices: the MNI T1 resampled
    (linear) to 256 x 256 x 200, then 5-slice means."""
    from nilearn.datasets import MNI152_FILE_PATH
    from scipy.ndimage import zoom

    from medseg.io import load_volume
    from medseg.transforms.degrade import thick_slices

    mni = load_volume(MNI152_FILE_PATH).array.astype(np.float32)  # (197, 233, 189)
    fine = zoom(mni, [n / s for n, s in zip((256, 256, 200), mni.shape, strict=True)], order=1)
    low = thick_slices(torch.from_numpy(fine)[None], 5)[0].numpy()  # (256, 256, 40)
    start = time.perf_counter()
    out = self_sr(low, (1.0, 1.0, 5.0), steps)
    seconds = time.perf_counter() - start
    psnr, ssim = psnr_ssim(out, fine)
    cubic = psnr_ssim(upsample(low, fine.shape, 3), fine)
    print(f"self-sr {steps} steps on {low.shape} -> {out.shape}: {seconds:.0f} s "
          f"({seconds / 60:.1f} min); PSNR {psnr:.2f} dB (cubic {cubic[0]:.2f}), SSIM "
          f"{ssim:.4f} (cubic {cubic[1]:.4f}); load average {os.getloadavg()[0]:.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
