"""A learned restorer (tiny RAT) trained on this CPU for a stated budget, against the classical
default, on held-out real data: the whole user path (``medseg prepare msd`` -> ``medseg fit``
-> ``medseg.restore(checkpoint=...)``).

Splits share no slice and no case with the test volume:

- **MNI T1** (the 160 x 192 x 160 crop of :mod:`bench.restoration_quality`): training cases are
  the axial slabs z 0-39 and 40-79 of the crop (fold 0 of 2: one trains, one validates); the
  test volume is z 80-159. Degradation: Rician noise, sigma 5 % of the robust range.
- **CT** (``tests/data/real_ct``): training cases are the two halves (z) of ``aorta_ct``; the
  test volume is ``pulmonary_ct``, another scan. Degradation: ``low_dose_ct`` at 25 % dose.

Training pairs are made on the fly by :class:`medseg.data.RestorationDataModule` (the same
degradation functions, other seeds); the test input is degraded once with seed 0. The net is
RAT's ``tiny`` preset (0.28 M parameters) with k-means regions (6 per slice; SAM regions
cost seconds per slice, more than the budget allows), Adam 2e-3, 64 x 64 crops, batch 4,
stopped by ``trainer.max_time`` (``--minutes``). Rows: the degraded test input, the default
``medseg.restore`` (DIPY non-local means, no training) and the RAT; columns as
:mod:`bench.restoration_quality` (PSNR, SSIM against the clean test volume, seconds to restore).

    .venv/bin/python -m bench.restoration_learned --minutes 10        # MNI and CT (~25 min)
    .venv/bin/python -m bench.restoration_learned --only mni --minutes 5
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.restoration_quality import REAL_CT, psnr_ssim

TINY_RAT = {
    "class_path": "medseg.models.rat.RAT",
    "init_args": {"width": 16, "enc_blk_nums": [1, 1], "dec_blk_nums": [1, 1],
                  "middle_blocks": 1, "layers_per_block": 3},
}  # fmt: skip


def tasks(only: str | None, ct_folder: Path) -> dict[str, dict]:
    """name -> {"train": [arrays], "test": clean array, "kind", "spacing", "degradation"}."""
    from nilearn.datasets import MNI152_FILE_PATH

    from medseg.io import load_volume

    out: dict[str, dict] = {}
    if only in (None, "mni"):
        crop = load_volume(MNI152_FILE_PATH).array[18:178, 20:212, 14:174].astype(np.float32)
        out["MNI T1, Rician 5%"] = {
            "train": [crop[:, :, :40], crop[:, :, 40:80]], "test": crop[:, :, 80:],
            "kind": "MRI", "spacing": 1.0,
            "degradation": {"kind": "rician_noise", "sigma": 0.05},
        }  # fmt: skip
    if only in (None, "ct") and ct_folder.is_dir():
        aorta = load_volume(ct_folder / "aorta_ct.nii.gz").array.astype(np.float32)
        half = aorta.shape[2] // 2
        out["CT, low-dose 25%"] = {
            "train": [aorta[:, :, :half], aorta[:, :, half:]],
            "test": load_volume(ct_folder / "pulmonary_ct.nii.gz").array.astype(np.float32),
            "kind": "CT", "spacing": 1.5,
            "degradation": {"kind": "low_dose_ct", "dose_fraction": 0.25},
        }  # fmt: skip
    return out


def degrade(clean: np.ndarray, spec: dict) -> np.ndarray:
    """The test input: ``spec`` applied once with seed 0."""
    from medseg.transforms.pairs import parse_degradations

    (step,) = parse_degradations([spec])
    gen = torch.Generator().manual_seed(0)
    return step.apply(torch.from_numpy(clean)[None], gen)[0].numpy()


def write_raw(folder: Path, arrays: list[np.ndarray], kind: str, spacing: float) -> None:
    """An MSD task folder (empty label maps: restoration needs none)."""
    import nibabel as nib

    affine = np.diag([spacing, spacing, spacing, 1.0])
    training = []
    for i, array in enumerate(arrays):
        case = f"case_{i:03d}"
        for sub, data in (("imagesTr", array), ("labelsTr", np.zeros(array.shape, np.uint8))):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(data, affine), folder / sub / f"{case}.nii.gz")
        training.append({"image": f"./imagesTr/{case}.nii.gz",
                         "label": f"./labelsTr/{case}.nii.gz"})  # fmt: skip
    meta = {"name": "bench", "modality": {"0": kind}, "labels": {"0": "background", "1": "x"},
            "numTraining": len(arrays), "training": training, "test": []}  # fmt: skip
    (folder / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")


def train(work: Path, task: dict, minutes: float) -> Path:
    """``medseg prepare msd`` + ``medseg fit`` for ``minutes``; returns ``last.ckpt``."""
    import yaml

    from medseg.cli.main import main

    raw, prep = work / "Task99_Bench", work / "prep"
    write_raw(raw, task["train"], task["kind"], task["spacing"])
    assert main(["prepare", "msd", "--src", str(raw), "--out", str(prep), "--folds", "2"]) == 0
    data = {"prep_dir": str(prep), "degradations": [task["degradation"]], "spatial_dims": 2,
            "patch_size": [64, 64], "batch_size": 4, "samples_per_volume": 4,
            "iterations_per_epoch": 100, "num_workers": 0, "seed": 0,
            "partitioner": {"class_path": "medseg.inference.regions.KMeansPartitioner",
                            "init_args": {"n_regions": 6}}}  # fmt: skip
    model = {"class_path": "medseg.engine.RestorationTask",
             "init_args": {"net": TINY_RAT, "schedule": "constant",
                           "optimizer": {"class_path": "torch.optim.Adam",
                                         "init_args": {"lr": 2e-3}}}}  # fmt: skip
    hours, rest = divmod(int(minutes * 60), 3600)
    trainer = {"accelerator": "cpu", "devices": 1, "max_epochs": 10_000,
               "max_time": f"00:{hours:02d}:{rest // 60:02d}:{rest % 60:02d}",
               "num_sanity_val_steps": 0, "enable_progress_bar": False,
               "enable_model_summary": False, "default_root_dir": str(work / "run")}  # fmt: skip
    config = {
        "seed_everything": 0,
        "trainer": trainer,
        "model": model,
        "data": {"class_path": "medseg.data.RestorationDataModule", "init_args": data},
    }
    path = work / "rat.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    assert main(["fit", "--config", str(path)]) == 0
    return work / "run" / "checkpoints" / "last.ckpt"


def main(argv: list[str] | None = None) -> None:
    import medseg
    from medseg.io.volume import Volume

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("mni", "ct"), default=None)
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget per task")
    parser.add_argument("--ct-folder", type=Path, default=REAL_CT)
    args = parser.parse_args(argv)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
        f"{os.getloadavg()[0]:.1f} at start; training budget {args.minutes:g} min per task"
    )
    rows = []
    for name, task in tasks(args.only, args.ct_folder).items():
        clean = task["test"]
        low = degrade(clean, task["degradation"])
        affine = np.diag([task["spacing"]] * 3 + [1.0])
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            ckpt = train(Path(tmp), task, args.minutes)
            trained = time.perf_counter() - started
            runs = [
                ("degraded", None),
                ("medseg restore (nlmeans, default)", {}),
                (f"RAT tiny, {args.minutes:g} min CPU training", {"checkpoint": ckpt}),
            ]
            for method, kwargs in runs:
                start = time.perf_counter()
                out = low if kwargs is None else medseg.restore(Volume(low, affine), **kwargs)
                array = out if kwargs is None else out.volume.array
                seconds = time.perf_counter() - start
                psnr, ssim = psnr_ssim(array, clean)
                rows.append(f"| {name} | {method} | {psnr:.2f} | {ssim:.4f} | {seconds:.1f} |")
                print(rows[-1], flush=True)
            print(f"({name}: training took {trained / 60:.1f} min wall)")
    print("\n| test volume, degradation | method | PSNR dB | SSIM | seconds |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
