"""Self-supervised through-plane super-resolution (``--method self-sr``): the slice profile, the
output geometry (same physical box, finer thick axis, any axis order), refusals before any work,
the CLI, and that a short training beats cubic interpolation on a thick-slice phantom."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

import medseg
from medseg.cli.main import main
from medseg.errors import InputError
from medseg.inference.restoration import super_resolved_affine
from medseg.inference.self_sr import SelfSR, slice_profile, through_plane
from medseg.io.volume import Volume
from medseg.transforms.degrade import thick_slices


def stripes(shape: tuple[int, int, int], thick_axis: int) -> np.ndarray:
    """Balls and slabs with edges in every direction, ``shape`` float32 in [0, 200]."""
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    x = np.zeros(shape, np.float32)
    rng = np.random.default_rng(0)
    for _ in range(14):
        centre = [rng.uniform(0.15, 0.85) * n for n in shape]
        radius = rng.uniform(4, 9)
        dist = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True))
        x[dist < radius**2] += rng.uniform(40, 90)
    return np.clip(x + 20.0, 0, 200)


def volume(array: np.ndarray, spacing: tuple[float, float, float]) -> Volume:
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = (20.0, -5.0, 11.0)
    return Volume(array, affine, qform=affine.copy(), qform_code=1, sform=affine.copy(),
                  sform_code=2)  # fmt: skip


def corners(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World coordinates of the outer voxel edges (the physical box) along each axis."""
    lo = affine @ np.array([-0.5, -0.5, -0.5, 1.0])
    hi = affine @ np.array([n - 0.5 for n in shape] + [1.0])
    return np.stack([lo[:3], hi[:3]])


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    span = float(ref.max() - ref.min())
    return float(10 * np.log10(span**2 / np.mean((x.astype(np.float64) - ref) ** 2)))


def test_slice_profile_is_the_thick_slice_degradation_and_handles_a_gap():
    x = torch.rand(3, 40)
    contiguous = slice_profile(40, 4, 4.0)
    expected = thick_slices(x[None], 4)[0]
    torch.testing.assert_close(x @ contiguous.T, expected)
    gap = slice_profile(40, 4, 2.0)  # 2 mm slices every 4 mm: the middle two pixels
    assert torch.equal(gap[0].nonzero().ravel(), torch.tensor([1, 2]))
    overlap = slice_profile(40, 4, 5.0)  # quarter pixels at both ends
    torch.testing.assert_close(overlap[1, 3:9], torch.tensor([0.1, 0.2, 0.2, 0.2, 0.2, 0.1]))
    torch.testing.assert_close(overlap.sum(1), torch.ones(10))


@pytest.mark.parametrize("thick_axis", [2, 0])
def test_output_covers_the_same_box_with_a_finer_thick_axis(thick_axis):
    shape = [48, 48, 48]
    shape[thick_axis] = 12
    spacing = [1.0, 1.0, 1.0]
    spacing[thick_axis] = 4.0
    vol = volume(stripes(tuple(shape), thick_axis), tuple(spacing))
    assert through_plane(vol.affine, vol.array.shape)[0] == thick_axis
    result = medseg.restore(vol, method="self-sr", steps=3)
    out = result.volume
    expect = list(shape)
    expect[thick_axis] *= 4
    assert out.array.shape == tuple(expect) and out.array.dtype == np.float32
    factors = [4 if i == thick_axis else 1 for i in range(3)]
    np.testing.assert_allclose(out.affine, super_resolved_affine(vol.affine, factors))
    np.testing.assert_allclose(corners(out.affine, out.array.shape),
                               corners(vol.affine, vol.array.shape), atol=1e-9)  # fmt: skip
    np.testing.assert_allclose(out.sform, out.affine)
    assert (out.qform_code, out.sform_code) == (1, 2)
    info = result.details["inference"]
    assert info["method"] == "self-sr" and info["scale"] == 4 and info["axis"] == thick_axis
    assert info["thickness_mm"] == 4.0 and info["steps"] == 3


@pytest.mark.slow
def test_a_short_training_beats_cubic_interpolation_through_plane():
    from scipy.ndimage import zoom

    clean = stripes((56, 56, 60), 2)
    low = thick_slices(torch.from_numpy(clean)[None], 5)[0].numpy()  # (56, 56, 12)
    cubic = zoom(low, (1, 1, 5), order=3, mode="nearest", grid_mode=True)
    sr = SelfSR(steps=400, patch=40, batch=8, seed=0)
    out = sr.restore(volume(low, (1.0, 1.0, 5.0))).volume.array
    gain = psnr(out, clean) - psnr(cubic, clean)
    assert gain > 1.0, gain
    assert abs(float(out.mean()) - float(clean.mean())) < 1.0  # the input's units


def test_isotropic_and_4d_inputs_are_refused_with_the_fix():
    iso = volume(stripes((48, 48, 48), 2), (1.0, 1.0, 1.2))
    with pytest.raises(InputError) as err:
        medseg.restore(iso, method="self-sr", steps=1)
    assert err.value.code == "not_thick_slices"
    assert "--scale" in err.value.message and "1.2 mm through-plane" in err.value.message
    four = Volume(np.zeros((3, 48, 48, 12), np.float32), np.diag([1.0, 1.0, 4.0, 1.0]))
    with pytest.raises(InputError) as err:
        medseg.restore(four, method="self-sr", steps=1)
    assert err.value.code == "bad_method" and "--volume-index" in err.value.message


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"method": "self-sr", "sigma": 3.0}, "options of nlmeans"),
        ({"method": "self-sr", "regions": "sam"}, "--regions"),
        ({"method": "self-sr", "scale": 1}, "at least 2"),
        ({"method": "self-sr", "steps": 0}, "steps must be a positive int"),
        ({"method": "self-sr", "thickness": -2.0}, "--slice-thickness"),
        ({"method": "nlmeans", "thickness": 3.0}, "options of --method self-sr"),
        ({"scale": 2}, "--scale 2 needs --method self-sr"),
        ({"checkpoint": "x.ckpt", "steps": 10}, "not both"),
    ],
)
def test_bad_self_sr_options_are_refused_before_any_work(kwargs, words):
    with pytest.raises(InputError) as err:
        medseg.Restorer(**kwargs)
    assert err.value.code == "bad_argument" and words in err.value.message


def test_cli_self_sr_writes_the_finer_grid_and_reports_the_plan(tmp_path, capsys):
    vol = volume(stripes((48, 40, 10), 2), (0.8, 0.8, 3.0))
    src = tmp_path / "thick.nii.gz"
    img = nib.Nifti1Image(vol.array, vol.affine)
    img.set_qform(vol.affine, 1)
    img.set_sform(vol.affine, 2)
    nib.save(img, src)
    code = main(["restore", str(src), "-o", str(tmp_path / "out"), "--method", "self-sr",
                 "--steps", "2", "--slice-thickness", "2.0", "--quiet"])  # fmt: skip
    assert code == 0
    out = nib.load(tmp_path / "out" / "thick_restored.nii.gz")
    assert out.shape == (48, 40, 40)  # round(3.0 / 0.8) = 4
    np.testing.assert_allclose(out.header.get_zooms(), (0.8, 0.8, 0.75), rtol=1e-6)
    np.testing.assert_allclose(corners(out.affine, out.shape), corners(vol.affine, vol.array.shape),
                               atol=1e-5)  # fmt: skip
    report = json.loads((tmp_path / "out" / "thick_restore.json").read_text())
    inference = report["inference"]
    assert report["method"] == "self-sr" and inference["scale"] == 4
    assert inference["thickness_mm"] == 2.0
    assert inference["profile_px"] == pytest.approx(8 / 3, abs=1e-3)  # 4 * 2 mm / 3 mm
    assert src.exists()
