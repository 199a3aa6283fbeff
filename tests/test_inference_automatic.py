"""Automatic segmentation: geometry back onto the input grid, TTA, ROI choice, post-processing,
checkpoint routing in ``medseg segment``, folders of inputs, and (slow) that a tiny WAU trained
with ``medseg fit`` on synthetic ACDC segments held-out cases through ``medseg segment`` +
``medseg evaluate`` with mean foreground Dice >= 0.8.

Fast tests use a *threshold net* (a 1x1 convolution: class 1 where the normalised intensity is
above 0.5) whose correct labels are known on any grid, so a wrong resampling, inversion, flip or
slice order shows up as a Dice drop.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from testkit import ellipsoid_volume
from torch import nn

from medseg.cli import batch
from medseg.cli.main import main
from medseg.inference.automatic import (
    AutomaticSegmenter,
    checkpoint_kind,
    choose_roi,
    count_windows,
)
from medseg.inference.postprocess import keep_largest_component
from medseg.io import load_volume
from medseg.metrics import dice

ROT = np.array(
    [[math.cos(0.4), -math.sin(0.4), 0.0], [math.sin(0.4), math.cos(0.4), 0.0], [0.0, 0.0, 1.0]]
)
TILT = np.array(
    [[1.0, 0.0, 0.0], [0.0, math.cos(0.2), -math.sin(0.2)], [0.0, math.sin(0.2), math.cos(0.2)]]
)
OBLIQUE = np.eye(4)
OBLIQUE[:3, :3] = np.diag([-1.0, 1.0, 1.0]) @ TILT @ ROT @ np.diag([0.9, 1.3, 4.0])
OBLIQUE[:3, 3] = [12.0, -30.0, 7.5]


class ThresholdNet(nn.Module):
    """``(B, 1, *S)`` -> logits ``(B, 2, *S)``: class 1 where ``x > 0.5`` (any dims)."""

    size_divisor = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.full_like(x, 0.5), x], dim=1)


def _pre(dims: int, spacing=(1.5, 1.5, 3.0), patch=(16, 16, 8)) -> dict:
    return {
        "spatial_dims": dims,
        "target_spacing": list(spacing),
        "orientation": "RAS",
        "channel_names": ["MRI"],
        "normalisation": [{"scheme": "zscore"}],
        "labels": {"0": "background", "1": "object"},
        "patch_size": list(patch[:dims]) if dims == 3 else [16, 16],
        "slice_axis": 2,
    }


def _oblique_scan(tmp_path: Path, name: str = "oblique.nii.gz") -> tuple[Path, np.ndarray]:
    image, mask = ellipsoid_volume((37, 29, 11), center=(13, 11, 4), radii=(9, 7, 3))
    img = nib.Nifti1Image(image, OBLIQUE)
    img.set_sform(OBLIQUE, code=2)
    qform = OBLIQUE.copy()
    qform[:3, 3] += [0.3, 0.0, 0.0]
    img.set_qform(qform, code=1)
    path = tmp_path / name
    nib.save(img, str(path))
    return path, mask


@pytest.mark.parametrize("dims", [3, 2])
def test_labels_land_on_the_oblique_anisotropic_input_grid(tmp_path, dims):
    path, mask = _oblique_scan(tmp_path)
    seg = AutomaticSegmenter(ThresholdNet(), _pre(dims), device="cpu", precision="fp32")
    out = seg.segment(path, probabilities=True)
    src = nib.load(str(path))
    assert out.labels.array.shape == src.shape == mask.shape
    np.testing.assert_allclose(out.labels.affine, src.affine, atol=1e-5)
    assert out.labels.array.dtype == np.uint8
    assert dice(out.labels.array == 1, mask) > 0.93  # resampled 0.9x1.3x4 -> 1.5x1.5x3 and back
    assert out.info["model_grid"] != list(mask.shape)  # it really was resampled
    probs = out.probabilities.array
    assert probs.shape == (2, *mask.shape) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-4)
    # mirror TTA of a pointwise net changes nothing: every flip is undone on the right axis
    seg.tta = True
    np.testing.assert_array_equal(seg.segment(path).labels.array, out.labels.array)


def test_auto_precision_is_exact_fp32_on_cpu():
    assert AutomaticSegmenter(ThresholdNet(), _pre(3), device="cpu").precision == "fp32"


def test_bf16_and_window_settings_agree_with_fp32(tmp_path):
    path, _ = _oblique_scan(tmp_path)
    ref = AutomaticSegmenter(ThresholdNet(), _pre(3), device="cpu", precision="fp32")
    fast = AutomaticSegmenter(
        ThresholdNet(), _pre(3), device="cpu", precision="bf16", overlap=0.25, sw_batch_size=3
    )
    a, b = ref.segment(path).labels.array, fast.segment(path).labels.array
    assert dice(a == 1, b == 1) > 0.99


def test_choose_roi_grows_the_patch_within_budget():
    # the whole image fits in 8x the patch: one window covering it (rounded up to the divisor)
    assert choose_roi((150, 170, 90), (96, 96, 96), 16, 8 * 96**3) == [160, 176, 96]
    # too large: grows evenly from the patch, stays a multiple of 16, within budget
    roi = choose_roi((400, 400, 400), (96, 96, 96), 16, 8 * 96**3)
    assert all(r % 16 == 0 and r >= 96 for r in roi) and math.prod(roi) <= 8 * 96**3
    assert max(roi) - min(roi) <= 16
    assert choose_roi((400, 400), (64, 64), 8, 64 * 64) == [64, 64]  # "patch" budget
    assert count_windows((192, 192, 192), (96, 96, 96), 0.5) == 27
    assert count_windows((192, 192, 192), (192, 192, 192), 0.5) == 1


def test_auto_roi_keeps_window_dependent_nets_at_the_patch():
    pre = _pre(3, patch=(16, 16, 8))
    plain = AutomaticSegmenter(ThresholdNet(), pre, device="cpu")
    normed = AutomaticSegmenter(
        nn.Sequential(nn.Conv3d(1, 2, 1), nn.InstanceNorm3d(2)), pre, device="cpu"
    )
    assert plain._roi((30, 30, 15)) == [30, 30, 15]  # grown to the whole image (<= 8x patch)
    assert math.prod(plain._roi((40, 40, 20))) <= 8 * 16 * 16 * 8  # too large: within budget
    assert normed.window_dependent and normed._roi((40, 40, 20)) == [16, 16, 8]
    normed.roi = [32, 32, 16]  # explicit sizes are honoured
    assert normed._roi((40, 40, 20)) == [32, 32, 16]


def test_keep_largest_component_per_label():
    labels = np.zeros((20, 20, 5), np.uint8)
    labels[1:6, 1:6] = 1  # large
    labels[15:17, 15:17] = 1  # small island of 1
    labels[8:12, 8:12] = 2
    labels[0, 19, 2] = 2  # speck of 2
    out = keep_largest_component(labels)
    assert (out[15:17, 15:17] == 0).all() and out[0, 19, 2] == 0
    assert (out[1:6, 1:6] == 1).all() and (out[8:12, 8:12] == 2).all()
    only_2 = keep_largest_component(labels, [2])
    assert (only_2[15:17, 15:17] == 1).all() and only_2[0, 19, 2] == 0


# checkpoint routing -------------------------------------------------------------------------
def _fake_lightning_ckpt(path: Path) -> Path:
    torch.save({"state_dict": {}, "hyper_parameters": {"preprocessing": None}}, path)
    return path


def test_checkpoint_kind_reads_no_code(tmp_path):
    lightning = _fake_lightning_ckpt(tmp_path / "run.ckpt")
    torch.save({"image_encoder.w": torch.zeros(2)}, tmp_path / "lite.pth")
    (tmp_path / "junk.ckpt").write_bytes(b"not a zip" * 10)
    assert checkpoint_kind(lightning) == "lightning"
    assert checkpoint_kind(tmp_path / "lite.pth") == "state_dict"
    assert checkpoint_kind(tmp_path / "junk.ckpt") == "unknown"
    assert checkpoint_kind(tmp_path / "missing.ckpt") == "unknown"


def test_prompt_with_segmentation_checkpoint_exits_2(tmp_path, capsys):
    path, _ = _oblique_scan(tmp_path)
    ckpt = _fake_lightning_ckpt(tmp_path / "run.ckpt")
    argv = ["segment", str(path), "-o", str(tmp_path / "o"), "--checkpoint", str(ckpt)]
    assert main([*argv, "--slice", "3", "--box", "1,1,5,5"]) == 2
    assert "segmentation checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    # and automatic options without a segmentation checkpoint
    assert main(["segment", str(path), "-o", str(tmp_path / "o"), "--tta"]) == 2
    assert "--tta needs a segmentation checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated", "no_net"])
def test_corrupt_checkpoint_exits_4(tmp_path, capsys, damage):
    path, _ = _oblique_scan(tmp_path)
    ckpt = _fake_lightning_ckpt(tmp_path / "run.ckpt")
    if damage == "truncated":
        ckpt.write_bytes(ckpt.read_bytes()[:300])
    assert main(["segment", str(path), "-o", str(tmp_path / "o"), "--checkpoint", str(ckpt)]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {ckpt}: ") and "checkpoint" in err[0]


# folders of inputs (the model is a threshold net injected behind a fake checkpoint) -----------
@pytest.fixture
def threshold_checkpoint(tmp_path, monkeypatch) -> Path:
    def fake(cls, path, *, trusted=False, **kwargs):
        return cls(ThresholdNet(), _pre(3), **kwargs)

    monkeypatch.setattr(AutomaticSegmenter, "from_checkpoint", classmethod(fake))
    return _fake_lightning_ckpt(tmp_path / "run.ckpt")


def test_folder_of_inputs_runs_every_case_and_reports_failures(
    tmp_path, threshold_checkpoint, capsys
):
    folder = tmp_path / "in"
    folder.mkdir()
    _, mask = _oblique_scan(folder, "a.nii.gz")
    _oblique_scan(folder, "b.nii.gz")
    (folder / "c.nii.gz").write_bytes(b"")  # a bad case
    (folder / "notes.txt").write_text("not a volume")
    (folder / "._a.nii.gz").write_bytes(b"\x00\x05\x16\x07")  # macOS junk: hidden, skipped
    out = tmp_path / "out"
    argv = ["segment", str(folder), "-o", str(out), "--checkpoint", str(threshold_checkpoint)]
    assert main([*argv, "--quiet", "--largest-component"]) == 2
    err = capsys.readouterr().err
    assert "notes.txt" in err.splitlines()[0]  # named, not silently skipped
    assert f"error: {folder / 'c.nii.gz'}: empty file" in err
    assert "1 of 3 case(s) failed: c.nii.gz" in err
    assert f"warning: {folder / 'a.nii.gz'}: " in err  # qform != sform, shown even with --quiet
    for name in ("a", "b"):
        seg = nib.load(str(out / f"{name}_seg.nii.gz"))
        np.testing.assert_allclose(seg.affine, OBLIQUE, atol=1e-5)
        assert seg.header.get_sform(coded=True)[1] == 2
        assert seg.header.get_qform(coded=True)[1] == 1
        assert dice(np.asarray(seg.dataobj) == 1, mask) > 0.93
        stats = json.loads((out / f"{name}_stats.json").read_text(encoding="utf-8"))
        assert stats["labels"][0]["name"] == "object" and "prompt" not in stats
        assert (out / f"{name}_preview.png").stat().st_size > 0
    assert not (out / "c_seg.nii.gz").exists()


def test_dicom_folder_is_one_input_and_nested_folders_are_refused(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    for i in range(3):
        (series / f"IM{i:04d}").write_bytes(b"\x00" * 128 + b"DICM")
    assert batch.list_inputs(series) == ([series], [])
    nested = tmp_path / "nested"
    (nested / "patient001").mkdir(parents=True)
    with pytest.raises(Exception, match="only sub-folders"):
        batch.list_inputs(nested)


# learning, honestly (slow): medseg fit -> medseg segment -> medseg evaluate -----------------
@pytest.fixture(scope="session")
def acdc_run(tmp_path_factory) -> dict[str, Path]:
    """Tiny WAU trained on synthetic ACDC with ``medseg fit`` (60 steps of 16 slices, CPU).

    ``window_size=8`` makes the deepest WAU stage global on these 64x64 slices; with the
    default window 4 the tiny WAU did not learn the LV (class 3) within 200 steps (issue noted
    for the models owner), whereas the same net with ``window_size=8`` reaches LV Dice ~0.9
    in 40 steps.
    """
    from training_kit import tiny_config

    from data_prep import prepare, write_synthetic

    tmp = tmp_path_factory.mktemp("acdc_run")
    raw = write_synthetic("acdc", tmp / "raw", cases=10, test_cases=3, seed=0)
    prep = prepare("acdc", raw, tmp / "prep")
    net_args = {"channels": [8, 16, 32, 64], "head_dim": 16, "mlp_ratio": 2.0}
    net_args.update(norm="instance", window_size=8)
    cfg = tiny_config(
        tmp,
        prep,
        net="medseg.models.wau.WAU",
        net_args=net_args,
        **{
            "trainer.max_epochs": 1,
            "data.iterations_per_epoch": 60,
            "data.batch_size": 4,
            "data.samples_per_volume": 4,
            "data.augment": False,
            "model.hd95": False,
            "model.schedule": "constant",
        },
    )
    text = cfg.read_text(encoding="utf-8").replace("lr: 0.01", "lr: 0.003")
    cfg.write_text(text, encoding="utf-8")
    assert main(["fit", "--config", str(cfg)]) == 0
    ckpt = tmp / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return {"ckpt": ckpt, "raw": raw / "database", "tmp": tmp}


@pytest.mark.slow
def test_tiny_wau_learns_synthetic_acdc_through_the_cli(acdc_run):
    tmp, testing = acdc_run["tmp"], acdc_run["raw"] / "testing"
    images = tmp / "heldout"
    images.mkdir()
    for f in sorted(testing.glob("patient*/patient*_frame??.nii.gz")):
        (images / f.name).symlink_to(f)
    assert len(list(images.iterdir())) == 6  # 3 held-out patients x (ED, ES)
    out = tmp / "pred"
    argv = ["segment", str(images), "-o", str(out), "--checkpoint", str(acdc_run["ckpt"]), "-q"]
    assert main(argv) == 0
    metrics = tmp / "metrics.csv"
    assert main(["evaluate", str(out), str(testing), "-o", str(metrics), "--acdc", "-q"]) == 0
    rows = list(csv.DictReader(metrics.open(encoding="utf-8")))
    assert len(rows) == 6 * 3
    per_label = {
        name: np.mean([float(r["dice"]) for r in rows if r["name"] == name])
        for name in ("RV", "MYO", "LV")
    }
    mean_fg = float(np.mean(list(per_label.values())))
    print(f"held-out Dice per label {per_label}, mean foreground {mean_fg:.3f}")
    assert mean_fg >= 0.8, per_label
    acdc = list(csv.DictReader((tmp / "metrics_acdc.csv").open(encoding="utf-8")))
    assert {r["patient"] for r in acdc} == {"patient101", "patient102", "patient103"}
    # the label maps lie on the input grids (the synthetic ACDC grid is axis-aligned)
    for image in images.iterdir():
        seg = load_volume(out / f"{image.name[: -len('.nii.gz')]}_seg.nii.gz", role="label")
        src = load_volume(image)
        assert seg.spatial_shape == src.spatial_shape
        np.testing.assert_allclose(seg.affine, src.affine, atol=1e-5)


@pytest.mark.slow
def test_trained_checkpoint_on_an_oblique_resampled_input(acdc_run, tmp_path):
    """A held-out frame re-gridded onto an oblique 1.2x1.1x8 mm grid still comes back on it."""
    frame = next((acdc_run["raw"] / "testing").glob("patient*/patient*_frame01.nii.gz"))
    vol = load_volume(frame)
    aff = vol.affine.copy()
    aff[:3, :3] = ROT @ np.diag([1.2, 1.1, 8.0])
    path = tmp_path / "oblique_frame.nii.gz"
    nib.save(nib.Nifti1Image(vol.array[:50, :54, :].astype(np.float32), aff), str(path))
    out = tmp_path / "o"
    argv = ["segment", str(path), "-o", str(out), "--checkpoint", str(acdc_run["ckpt"]), "-q"]
    assert main([*argv, "--tta", "--save-probabilities"]) == 0
    seg = nib.load(str(out / "oblique_frame_seg.nii.gz"))
    assert seg.shape == (50, 54, 8)
    np.testing.assert_allclose(seg.affine, aff, atol=1e-5)
    probs = nib.load(str(out / "oblique_frame_probabilities.nii.gz"))
    assert probs.shape == (50, 54, 8, 4)
    stats = json.loads((out / "oblique_frame_stats.json").read_text(encoding="utf-8"))
    assert stats["inference"]["tta"] is True
    assert {e["name"] for e in stats["labels"]} <= {"RV", "MYO", "LV"}
