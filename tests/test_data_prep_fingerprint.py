"""Fingerprint rules: nnU-Net anisotropy, RAS axis order, patch size, 2-D vs 3-D, normalisation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_prep import prepare
from data_prep.fingerprint import (
    CaseStats,
    compute_fingerprint,
    normalisation,
    patch_size_2d,
    patch_size_3d,
    ras_spacing_shape,
    target_spacing,
)
from data_prep.synthetic import write_acdc


def _stats(spacings, shapes, samples=None) -> list[CaseStats]:
    out = []
    for i, (sp, sh) in enumerate(zip(spacings, shapes, strict=True)):
        fg = [np.asarray(samples[i], float)] if samples else [np.zeros(0)]
        out.append(CaseStats(f"c{i}", np.asarray(sp, float), np.asarray(sh), fg, [np.zeros(1)]))
    return out


def test_isotropic_target_is_the_median():
    spacings = np.array([[0.8, 0.8, 1.0], [1.0, 1.0, 1.2], [1.2, 1.2, 1.4]])
    target, aniso, axis = target_spacing(spacings, np.full((3, 3), 100))
    np.testing.assert_allclose(target, [1.0, 1.0, 1.2])
    assert not aniso and axis == 2


def test_anisotropic_axis_uses_the_10th_percentile():
    # ACDC-like: in-plane 1.5 mm, slices 5-10 mm: median z 10 mm, 10th percentile 6 mm
    z = np.array([5.0, 6.0, 7.0] + [10.0] * 8)
    spacings = np.stack([np.full_like(z, 1.5), np.full_like(z, 1.5), z], axis=1)
    shapes = np.tile([200, 220, 9], (len(z), 1))
    target, aniso, axis = target_spacing(spacings, shapes)
    assert aniso and axis == 2
    np.testing.assert_allclose(target, [1.5, 1.5, 6.0])
    # anisotropic spacing but many slices (voxel condition fails): plain median, as nnU-Net
    target, aniso, _ = target_spacing(spacings, np.tile([200, 220, 100], (len(z), 1)))
    assert aniso and target[2] == 10.0


def test_spacing_and_shape_follow_ras_axes():
    affine = np.array([[0, 0, 10.0, 0], [1.5, 0, 0, 0], [0, -1.2, 0, 0], [0, 0, 0, 1]])
    spacing, shape = ras_spacing_shape(affine, (1.5, 1.2, 10.0), (30, 20, 8))
    np.testing.assert_allclose(spacing, [10.0, 1.5, 1.2])  # file k -> R, i -> A, j -> S
    assert shape.tolist() == [8, 30, 20]


def test_patch_sizes():
    assert patch_size_3d([36, 50, 35]) == [48, 64, 48]  # hippocampus-like: fits whole
    assert patch_size_3d([400, 400, 300]) == [128, 128, 128]  # capped at 128^3
    assert all(p % 16 == 0 for p in patch_size_3d([90, 300, 41]))
    assert np.prod(patch_size_3d([90, 300, 41])) <= 128**3
    assert patch_size_2d([237, 256, 9], slice_axis=2) == [240, 256]
    assert patch_size_2d([700, 8, 600], slice_axis=1) == [512, 512]


def test_acdc_like_data_gets_a_2d_recommendation():
    fp = compute_fingerprint(
        _stats([[1.5, 1.5, 10.0]] * 4, [[64, 64, 8]] * 4), ["cineMRI"], num_classes=4
    )
    assert fp["spatial_dims"] == 2 and fp["slice_axis"] == 2
    assert fp["patch_size"] == [64, 64] and fp["target_spacing"] == [1.5, 1.5, 10.0]
    assert fp["normalisation"] == [{"scheme": "zscore"}] and fp["modality_kind"] == "mr"
    fp3 = compute_fingerprint(_stats([[1.0] * 3] * 3, [[40, 40, 40]] * 3), ["MRI"], 2)
    assert fp3["spatial_dims"] == 3 and fp3["patch_size"] == [48, 48, 48]


def test_ct_normalisation_statistics():
    rng = np.random.default_rng(0)
    samples = [rng.normal(60, 10, 5000), rng.normal(60, 10, 5000)]
    stats = _stats([[1.0, 1.0, 2.0]] * 2, [[50, 50, 30]] * 2, samples)
    ct, mr = (normalisation(names, stats)[0] for names in (["CT"], ["T2"]))
    assert mr == {"scheme": "zscore"}
    assert ct["scheme"] == "ct" and ct["mean"] == pytest.approx(60, abs=0.5)
    assert ct["std"] == pytest.approx(10, abs=0.5)
    assert ct["clip"][0] == pytest.approx(60 - 2.576 * 10, abs=1.5)
    assert ct["clip"][1] == pytest.approx(60 + 2.576 * 10, abs=1.5)
    assert normalisation(["contrast-CT"], stats)[0]["scheme"] == "ct"


def test_prepared_synthetic_acdc_fingerprint(tmp_path):
    raw = write_acdc(tmp_path / "raw", patients=5, test_patients=0, seed=2)
    out = prepare("acdc", raw, tmp_path / "prep")
    fp = json.loads((out / "fingerprint.json").read_text(encoding="utf-8"))
    assert fp["spacing_median"] == [1.5, 1.5, 10.0] and fp["target_spacing"] == [1.5, 1.5, 10.0]
    assert fp["shape_median"] == [64, 64, 8] and fp["spatial_dims"] == 2
    assert fp["patch_size"] == [64, 64] and fp["num_classes"] == 4 and fp["num_channels"] == 1
    assert set(fp["cases"]) == {f"patient{p:03d}_{ph}" for p in range(1, 6) for ph in ("ED", "ES")}
    assert fp["cases"]["patient001_ED"] == {"spacing": [1.5, 1.5, 10.0], "shape": [64, 64, 8]}


def test_case_stats_samples_only_the_asked_channels_and_falls_back_without_foreground():
    from data_prep.fingerprint import case_stats
    from medseg.io import Volume

    rng = np.random.default_rng(0)
    image = Volume(array=rng.normal(0, 1, (2, 8, 8, 4)).astype(np.float32), affine=np.eye(4))
    label = Volume(array=np.zeros((8, 8, 4), np.uint8), affine=np.eye(4))
    label.array[2:4, 2:4, 1] = 1
    s = case_stats("c", image, label, rng, sample_channels=[1])
    assert s.samples[0].size == 0 and s.samples[1].size == 4
    np.testing.assert_array_equal(
        np.sort(s.samples[1]), np.sort(image.array[1, 2:4, 2:4, 1].ravel())
    )
    label.array[:] = 0
    s = case_stats("c", image, label, rng, sample_channels=[0])
    assert s.samples[0].size == 0 and s.all_samples[0].size == image.array[0].size
    assert normalisation(["CT", "T2"], [s])[0]["scheme"] == "ct"  # stats from all voxels
