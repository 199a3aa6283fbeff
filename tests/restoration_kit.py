"""Synthetic data for the restoration tests: smooth, noise-free phantoms (so a clean target is
really clean) in the ``medseg prepare`` layout, and degraded copies written as volumes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from training_kit import _affine, make_prepared

SPACING = (1.0, 1.0, 1.0)


def phantom(shape: Sequence[int], seed: int) -> np.ndarray:
    """``(X, Y, Z)`` float32: a few blurred ellipsoids of different brightness on a smooth
    background ramp (values roughly 0..300, MR-like)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    n = np.array(shape, np.float32)[:, None, None, None]
    img = 40.0 + 30.0 * grid[0] / n[0]
    for _ in range(4):
        centre = rng.uniform(0.25, 0.75, 3)[:, None, None, None] * n
        radii = rng.uniform(0.12, 0.3, 3)[:, None, None, None] * n
        r = np.sqrt((((grid - centre) / radii) ** 2).sum(0))
        img = img + rng.uniform(60.0, 160.0) / (1.0 + np.exp((r - 1.0) * 6.0))
    return img.astype(np.float32)


def make_restoration_prepared(
    tmp: Path, *, n_cases: int = 4, shape: Sequence[int] = (48, 48, 8)
) -> Path:
    """A prepared dataset (``medseg prepare`` schema) whose images are :func:`phantom` s."""
    import nibabel as nib

    prep = make_prepared(tmp, n_cases=n_cases, shape=shape, spacing=SPACING)
    raw = tmp / "raw" / "imagesTr"
    for i in range(n_cases):
        nib.save(
            nib.Nifti1Image(phantom(shape, seed=100 + i), _affine(SPACING)),
            raw / f"case_{i:03d}.nii.gz",
        )
    return prep


def held_out(tmp: Path, shape: Sequence[int], seed: int = 999) -> tuple[Path, np.ndarray]:
    """A clean phantom not used in training, written as ``clean.nii.gz``; returns its path
    and voxels."""
    import nibabel as nib

    clean = phantom(shape, seed)
    path = tmp / "clean.nii.gz"
    nib.save(nib.Nifti1Image(clean, _affine(SPACING)), path)
    return path, clean


def psnr(pred: np.ndarray, ref: np.ndarray) -> float:
    """PSNR (dB) with the reference's data range (as ``medseg.metrics.psnr``)."""
    from medseg.metrics import psnr as metric

    return metric(torch.from_numpy(pred)[None], torch.from_numpy(ref)[None])


def restoration_config(
    tmp: Path,
    prep: Path,
    *,
    model: dict,
    degradations: list,
    spatial_dims: int,
    patch_size: Sequence[int],
    partitioner: dict | None = None,
    max_epochs: int = 4,
    steps: int = 25,
    batch_size: int = 2,
    samples_per_volume: int = 4,
) -> Path:
    """An experiment YAML for a tiny CPU restoration run (no workers)."""
    import yaml

    data = {
        "prep_dir": str(prep),
        "degradations": degradations,
        "spatial_dims": spatial_dims,
        "patch_size": list(patch_size),
        "batch_size": batch_size,
        "samples_per_volume": samples_per_volume,
        "iterations_per_epoch": steps,
        "num_workers": 0,
        "seed": 0,
    }
    if partitioner is not None:
        data["partitioner"] = partitioner
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": max_epochs,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 5,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(tmp / "run"),
        },
        "model": model,
        "data": {"class_path": "medseg.data.RestorationDataModule", "init_args": data},
    }
    path = tmp / "restoration.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


TINY_RAT = {
    "class_path": "medseg.models.rat.RAT",
    "init_args": {
        "width": 16,
        "enc_blk_nums": [1, 1],
        "dec_blk_nums": [1, 1],
        "middle_blocks": 1,
        "layers_per_block": 3,
        "num_heads": 8,
        "window_size": 4,
    },
}


def tiny_disgan(patch: int) -> dict:
    """The DISGAN container with the tiny presets' sizes for HR patches of side ``patch``."""
    return {
        "class_path": "medseg.models.disgan.DISGAN",
        "init_args": {
            "generator": {
                "class_path": "medseg.models.disgan.RRDBGenerator",
                "init_args": {"filters": 16, "num_res_blocks": 1, "growth": 16, "scale": 2},
            },
            "discriminator": {
                "class_path": "medseg.models.disgan.DWTUNetDiscriminator",
                "init_args": {"nf": 8, "patch_size": patch, "min_size": 4},
            },
            "feature_extractor": {
                "class_path": "medseg.models.disgan.ResNet10Features",
                "init_args": {"widths": [8, 16, 32, 64]},
            },
        },
    }
