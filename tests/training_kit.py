"""Tiny prepared datasets and test-only nets for the training tests (importable as
``training_kit``: pytest puts tests/ on sys.path; subprocesses get it through PYTHONPATH)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def _affine(spacing: Sequence[float], oblique_deg: float = 0.0) -> np.ndarray:
    t = math.radians(oblique_deg)
    rot = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(spacing)
    aff[:3, 3] = [-10.0, 5.0, 2.0]
    return aff


def case_arrays(
    shape: Sequence[int], seed: int, channels: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy ellipsoid with a core: image ``(X, Y, Z)`` or ``(X, Y, Z, C)`` float32, label uint8
    ``(X, Y, Z)`` with classes 0 (background), 1 (shell), 2 (core)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    centre = np.array(shape) / 2 + rng.uniform(-1.5, 1.5, 3)
    radii = np.array(shape) / 3.5
    r = np.sqrt((((grid - centre) / radii) ** 2).sum(-1))
    label = np.zeros(shape, np.uint8)
    label[r <= 1.0] = 1
    label[r <= 0.5] = 2
    img = rng.normal(100.0, 8.0, (*shape, channels)).astype(np.float32)
    img += (label[..., None] * 60.0).astype(np.float32)
    return (img[..., 0] if channels == 1 else img), label


def make_prepared(
    tmp: Path,
    *,
    n_cases: int = 4,
    shape: Sequence[int] = (24, 20, 8),
    spacing: Sequence[float] = (1.5, 1.5, 4.0),
    channels: int = 1,
    spatial_dims: int = 3,
    patch_size: Sequence[int] = (16, 16, 8),
    oblique_deg: float = 0.0,
    ct: bool = False,
    bad_case: int | None = None,
) -> Path:
    """Write raw NIfTI cases plus ``dataset.json``/``splits.json``/``fingerprint.json`` in the
    ``medseg prepare`` schema; returns the prepared folder. ``bad_case`` truncates that image."""
    import nibabel as nib

    raw, prep = tmp / "raw", tmp / "prep"
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
    prep.mkdir(parents=True, exist_ok=True)
    aff = _affine(spacing, oblique_deg)
    training = []
    for i in range(n_cases):
        case = f"case_{i:03d}"
        img, lab = case_arrays(shape, seed=i, channels=channels)
        if ct:
            img = img * 4 - 600
        nib.save(nib.Nifti1Image(img, aff), raw / "imagesTr" / f"{case}.nii.gz")
        nib.save(nib.Nifti1Image(lab, aff), raw / "labelsTr" / f"{case}.nii.gz")
        if i == bad_case:
            p = raw / "imagesTr" / f"{case}.nii.gz"
            p.write_bytes(p.read_bytes()[:200])
        training.append(
            {
                "case": case,
                "patient": case,
                "image": f"imagesTr/{case}.nii.gz",
                "label": f"labelsTr/{case}.nii.gz",
            }
        )
    names = ["CT"] if ct else [f"MRI{c}" for c in range(channels)]
    dataset = {
        "name": "Tiny",
        "layout": "msd",
        "root": str(raw),
        "modality": {str(c): n for c, n in enumerate(names)},
        "channel_names": names,
        "labels": {"0": "background", "1": "shell", "2": "core"},
        "training": training,
        "test": [{"case": "case_000", "patient": "case_000", "image": "imagesTr/case_000.nii.gz"}],
    }
    ids = [t["case"] for t in training]
    folds = [{"train": [c for c in ids if c != v], "val": [v]} for v in ids[:5]]
    norm = (
        [{"scheme": "ct", "clip": [-400.0, 0.0], "mean": -300.0, "std": 80.0}]
        if ct
        else [{"scheme": "zscore"}] * channels
    )
    fingerprint = {
        "spatial_dims": spatial_dims,
        "modality_kind": "ct" if ct else "mr",
        "num_channels": channels,
        "num_classes": 3,
        "spacing_median": list(spacing),
        "target_spacing": list(spacing),
        "shape_median": list(shape),
        "slice_axis": int(np.argmax(spacing)),
        "patch_size": list(patch_size),
        "normalisation": norm,
    }
    for name, obj in [("dataset", dataset), ("fingerprint", fingerprint)]:
        (prep / f"{name}.json").write_text(json.dumps(obj, indent=1))
    splits = {"seed": 0, "group_by": "patient", "folds": folds}
    (prep / "splits.json").write_text(json.dumps(splits, indent=1))
    return prep


def tiny_unet(spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 3) -> nn.Module:
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=(4, 8),
        strides=(2,),
        num_res_units=0,
    )


class PoisonAfter(nn.Module):
    """Test net: a tiny MONAI UNet whose training-mode output turns NaN from call ``after`` on.

    ``x`` ``(B, C, *spatial)`` -> logits ``(B, out_channels, *spatial)``.
    """

    def __init__(
        self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 3, after: int = 3
    ) -> None:
        super().__init__()
        self.inner = tiny_unet(spatial_dims, in_channels, out_channels)
        self.after = after
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls > self.after:
                out = out * float("nan")
        return out


class SlowMarker(nn.Module):
    """Test net: a tiny MONAI UNet that sleeps ``delay`` s per training call and creates the file
    ``marker`` once it has run ``after`` training calls (a trigger for kill tests)."""

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 3,
        after: int = 6,
        marker: str = "",
        delay: float = 0.05,
    ) -> None:
        super().__init__()
        self.inner = tiny_unet(spatial_dims, in_channels, out_channels)
        self.after, self.marker, self.delay = after, marker, delay
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            import time

            self.calls += 1
            time.sleep(self.delay)
            if self.calls == self.after and self.marker:
                Path(self.marker).touch()
        return self.inner(x)


def tiny_config(tmp: Path, prep: Path, *, net: str = "monai.networks.nets.UNet", **extra) -> Path:
    """A complete experiment YAML for CPU tests (tiny net, no workers, 2 epochs x 2 steps)."""
    import yaml

    net_args = (
        {"channels": [4, 8], "strides": [2], "num_res_units": 0}
        if net == "monai.networks.nets.UNet"
        else {}
    )
    net_args.update(extra.pop("net_args", {}))
    cfg = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 2,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "default_root_dir": str(tmp / "run"),
        },
        "model": {
            "class_path": "medseg.engine.SegmentationTask",
            "init_args": {
                "net": {"class_path": net, "init_args": net_args},
                "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}},
                "sw_batch_size": 1,
                "hd95": True,
            },
        },
        "data": {
            "class_path": "medseg.data.SegmentationDataModule",
            "init_args": {
                "prep_dir": str(prep),
                "num_workers": 0,
                "batch_size": 1,
                "samples_per_volume": 2,
                "iterations_per_epoch": 2,
            },
        },
    }
    for key, value in extra.items():  # "trainer.max_epochs": 3 style overrides
        section, _, name = key.partition(".")
        target = cfg[section] if section == "trainer" else cfg[section]["init_args"]
        target[name] = value
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class Ballast(nn.Module):
    """Test net: a tiny MONAI UNet plus ``ballast`` extra float32 parameters that take part in
    the loss (so the optimiser keeps state for them): a checkpoint of ~``12 * ballast`` bytes
    with AdamW. ``x`` ``(B, C, *spatial)`` -> logits ``(B, out_channels, *spatial)``."""

    def __init__(
        self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 3, ballast: int = 0
    ) -> None:
        super().__init__()
        self.inner = tiny_unet(spatial_dims, in_channels, out_channels)
        self.ballast = nn.Parameter(torch.zeros(ballast))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) + 0.0 * self.ballast.sum()


def smoke_argv(experiment: str, prep: Path, run: Path, *extra: str) -> list[str]:
    """``medseg fit`` arguments running the shipped experiment config ``experiment`` on ``prep``
    with the CPU smoke trainer (no workers), results under ``run``; ``extra`` are appended."""
    configs = ROOT / "configs"
    return [
        "fit",
        "--config",
        str(configs / "experiments" / f"{experiment}.yaml"),
        "--trainer",
        str(configs / "trainer/cpu_smoke.yaml"),
        f"--trainer.default_root_dir={run}",
        f"--data.init_args.prep_dir={prep}",
        "--data.init_args.num_workers=0",
        *extra,
    ]
