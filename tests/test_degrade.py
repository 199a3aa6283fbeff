"""Paired degradations for restoration (medseg.transforms.degrade): statistics, shapes, seeding."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import Compose

from medseg.transforms.degrade import (
    downsample,
    gaussian_blur,
    gaussian_noise,
    kspace_truncate,
    low_dose_ct,
    rician_noise,
    robust_range,
    thick_slices,
)
from medseg.transforms.pairs import (
    KINDS,
    Degradation,
    PairedDegradation,
    PairedDegradationd,
    parse_degradations,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def neighbour_corr(noise: torch.Tensor) -> float:
    a, b = noise[..., :-1].flatten(), noise[..., 1:].flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def checkerboard(*shape: int) -> torch.Tensor:
    grids = torch.meshgrid(*[torch.arange(n) for n in shape], indexing="ij")
    return (sum(grids) % 2 * 2 - 1).float()[None]


# --------------------------------------------------------------------------- noise


@pytest.mark.parametrize("sigma", [0.1, 3.0])
def test_gaussian_noise_std_absolute(sigma):
    x = torch.full((1, 128, 128), 5.0)
    y = gaussian_noise(x, sigma, gen())
    assert y.dtype == torch.float32
    assert (y - x).std().item() == pytest.approx(sigma, rel=0.03)
    assert (y - x).mean().abs().item() < 0.03 * sigma
    assert torch.equal(x, torch.full((1, 128, 128), 5.0))


def test_gaussian_noise_relative_sigma_follows_the_robust_range():
    # same config, two intensity scales (z-score-like and HU-like): noise scales with the range
    ramp = torch.linspace(0, 1, 128 * 128).reshape(1, 128, 128)
    step = Degradation("gaussian_noise", sigma=0.05)
    for scale in (1.0, 1000.0):
        x = ramp * scale
        rng = robust_range(x)
        assert rng == pytest.approx(0.99 * scale, rel=1e-3)
        noise = step.apply(x, gen()) - x
        assert noise.std().item() == pytest.approx(0.05 * rng, rel=0.03)
    absolute = Degradation("gaussian_noise", sigma=0.05, relative=False)
    assert (absolute.apply(ramp * 1000, gen()) - ramp * 1000).std().item() == pytest.approx(
        0.05, rel=0.03
    )


def test_rician_noise_on_zero_is_rayleigh_and_nonnegative():
    sigma = 2.0
    y = rician_noise(torch.zeros(1, 128, 128), sigma, gen())
    assert (y >= 0).all()
    assert y.mean().item() == pytest.approx(sigma * math.sqrt(math.pi / 2), rel=0.03)


def test_rician_noise_on_bright_signal_is_nearly_gaussian():
    x = torch.full((1, 128, 128), 100.0)
    y = rician_noise(x, 1.5, gen())
    assert (y - x).std().item() == pytest.approx(1.5, rel=0.03)
    rel = Degradation("rician_noise", sigma=0.01).apply(x, gen(), ref_range=200.0)
    assert (rel - x).std().item() == pytest.approx(2.0, rel=0.03)


def test_low_dose_ct_noise_grows_as_dose_falls():
    water = torch.zeros(1, 96, 96)
    stds = [(low_dose_ct(water, d, gen()) - water).std().item() for d in (0.9, 0.5, 0.25, 0.1)]
    assert all(a < b for a, b in zip(stds, stds[1:], strict=False)), stds
    # added variance ~ (1/dose - 1): 0.25 -> 3, 0.1 -> 9, so the std ratio is sqrt(3)
    assert stds[3] / stds[2] == pytest.approx(math.sqrt(3), rel=0.05)
    assert torch.equal(low_dose_ct(water, 1.0, gen()), water)  # full dose adds nothing


def test_low_dose_ct_noise_is_correlated_zero_mean_and_denser_is_noisier():
    x = torch.zeros(1, 96, 96)
    x[:, :, 48:] = 1000.0  # water | bone
    y = low_dose_ct(x, 0.1, gen())
    noise = y - x
    assert neighbour_corr(noise[:, :, :40]) > 0.1
    assert neighbour_corr(noise[:, :40, :].transpose(1, 2)) > 0.1
    assert noise[:, :, :40].mean().abs().item() < 5.0  # HU
    assert noise[:, :, 56:].mean().abs().item() < 10.0
    assert noise[:, :, 56:].std() > noise[:, :, :40].std()
    assert 10 < noise[:, :, :40].std().item() < 60  # tens of HU, not thousands
    assert low_dose_ct(torch.zeros(1, 8, 8, 8), 0.5, gen()).shape == (1, 8, 8, 8)
    with pytest.raises(ValueError, match="dose_fraction"):
        low_dose_ct(x, 0.0, gen())


# --------------------------------------------------------------------------- blur


@pytest.mark.parametrize("shape", [(1, 64, 64), (2, 24, 24, 24)])
def test_gaussian_blur_keeps_mean_and_reduces_variance(shape):
    x = torch.rand(shape, generator=gen())
    y = gaussian_blur(x, 1.5)
    assert y.shape == x.shape
    assert y.mean().item() == pytest.approx(x.mean().item(), abs=2e-3)
    assert y.var().item() < 0.25 * x.var().item()
    const = torch.full(shape, 3.0)
    assert torch.allclose(gaussian_blur(const, 2.0), const, atol=1e-5)


def test_gaussian_blur_sigma_zero_is_a_copy_and_negative_is_rejected():
    x = torch.rand(1, 16, 16, generator=gen())
    y = gaussian_blur(x, 0.0)
    assert torch.equal(x, y) and y.data_ptr() != x.data_ptr()
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(x, -1.0)


# --------------------------------------------------------------------------- resolution


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("mode", ["area", "nearest", "bilinear", "trilinear"])
@pytest.mark.parametrize("shape", [(1, 32, 48), (2, 16, 32, 8)])
def test_downsample_shapes(shape, mode, factor):
    y = downsample(torch.rand(shape, generator=gen()), factor, mode=mode)
    assert y.shape == (shape[0], *(s // factor for s in shape[1:]))
    assert y.dtype == torch.float32


def test_downsample_area_is_average_pooling_and_nearest_is_slicing():
    x2, x3 = torch.rand(2, 16, 16, generator=gen()), torch.rand(1, 8, 16, 16, generator=gen(1))
    assert torch.allclose(downsample(x2, 2), F.avg_pool2d(x2[None], 2)[0])
    assert torch.allclose(downsample(x3, 4), F.avg_pool3d(x3[None], 4)[0])
    assert torch.equal(downsample(x2, 4, mode="nearest"), x2[:, ::4, ::4])
    assert torch.equal(downsample(x3, 2, mode="nearest"), x3[:, ::2, ::2, ::2])


@pytest.mark.parametrize("mode", ["area", "nearest", "bilinear", "trilinear"])
def test_downsample_keeps_a_constant_image_constant(mode):
    for shape in [(1, 16, 16), (1, 8, 8, 8)]:
        y = downsample(torch.full(shape, 7.0), 2, mode=mode)
        assert torch.allclose(y, torch.full_like(y, 7.0))


def test_downsample_rejects_indivisible_shape_with_a_helpful_message():
    with pytest.raises(ValueError, match=r"\(17, 16\).*factor 2"):
        downsample(torch.zeros(1, 17, 16), 2)
    with pytest.raises(ValueError, match="mode"):
        downsample(torch.zeros(1, 16, 16), 2, mode="cubic")


def test_thick_slices_averages_slabs_along_one_axis():
    x = torch.rand(1, 8, 12, 16, generator=gen())
    y = thick_slices(x, 4)
    assert y.shape == (1, 8, 12, 4)
    assert torch.allclose(y[..., 1], x[..., 4:8].mean(-1))
    assert y.mean().item() == pytest.approx(x.mean().item(), abs=1e-6)
    assert thick_slices(x, 2, axis=0).shape == (1, 4, 12, 16)
    assert thick_slices(x[:, 0], 3, axis=0).shape == (1, 4, 16)
    with pytest.raises(ValueError, match="divisible"):
        thick_slices(x, 3)


@pytest.mark.parametrize("shape", [(1, 16, 16), (1, 8, 10, 12)])
def test_kspace_truncate_low_passes_on_the_same_grid(shape):
    const = torch.full(shape, 4.0)
    assert torch.allclose(kspace_truncate(const, 2), const, atol=1e-5)
    board = checkerboard(*shape[1:])
    assert kspace_truncate(board, 2).abs().max().item() < 1e-5
    x = torch.rand(shape, generator=gen())
    y = kspace_truncate(x, 4)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert y.mean().item() == pytest.approx(x.mean().item(), abs=1e-5)
    high = (x - gaussian_blur(x, 2.0)).square().sum()
    assert (y - gaussian_blur(y, 2.0)).square().sum() < 0.3 * high
    # a smooth low-frequency signal passes almost unchanged
    smooth = torch.cos(2 * math.pi * torch.arange(shape[-1]) / shape[-1]).expand(shape).clone()
    assert torch.allclose(kspace_truncate(smooth, 2), smooth, atol=1e-5)


def test_kspace_truncate_on_one_axis_only():
    board = checkerboard(16, 16)
    # the checkerboard is Nyquist along both axes, so cutting either axis removes it
    assert kspace_truncate(board, 2, axes=[0]).abs().max() < 1e-5
    stripes = (torch.arange(16) % 2 * 2 - 1).float().expand(1, 16, 16).clone()  # varies on W
    assert torch.allclose(kspace_truncate(stripes, 2, axes=[0]), stripes, atol=1e-5)
    assert kspace_truncate(stripes, 2, axes=[-1]).abs().max() < 1e-5


# --------------------------------------------------------------------------- config


def test_degradation_validation_messages():
    with pytest.raises(ValueError, match="gaussian_noise.*kspace"):
        Degradation("salt_pepper")
    with pytest.raises(ValueError, match="2 or 4"):
        Degradation("downsample", factor=3)
    with pytest.raises(ValueError, match="sigma"):
        Degradation("gaussian_noise", sigma=-0.1)
    with pytest.raises(ValueError, match="dose_fraction"):
        Degradation("low_dose_ct", dose_fraction=1.5)
    assert Degradation("downsample", factor=4).scale == 4
    assert Degradation("thick_slices", factor=4, axis=0).scale == 1
    assert Degradation("thick_slices", factor=4, axis=0).shrinks_axis == 0
    assert Degradation("kspace", factor=4).scale == 1
    assert Degradation("kspace").shrinks_axis is None


def test_parse_degradations_forms():
    d = Degradation("gaussian_noise", sigma=0.05)
    assert parse_degradations(d) == (d,)
    assert parse_degradations({"kind": "gaussian_noise", "sigma": 0.05}) == (d,)
    assert parse_degradations("gaussian_noise:sigma=0.05") == (d,)
    chain = parse_degradations(
        ["blur:sigma=1", {"kind": "downsample", "factor": 2, "mode": "nearest"}, d]
    )
    assert [s.kind for s in chain] == ["blur", "downsample", "gaussian_noise"]
    assert chain[1] == Degradation("downsample", factor=2, mode="nearest")
    assert parse_degradations(
        "downsample:factor=2,mode=nearest; rician_noise:sigma=2,relative=false"
    )[1] == Degradation("rician_noise", sigma=2.0, relative=False)
    assert parse_degradations("low_dose_ct:dose_fraction=0.1")[0].dose_fraction == 0.1


def test_parse_degradations_errors():
    with pytest.raises(ValueError, match="rician_noise"):
        parse_degradations("speckle:sigma=1")
    with pytest.raises(ValueError, match="at most one resolution"):
        parse_degradations(["downsample:factor=2", "thick_slices:factor=2"])
    with pytest.raises(ValueError, match="2 or 4"):
        parse_degradations({"kind": "downsample", "factor": 8})
    with pytest.raises(ValueError, match="factor"):
        parse_degradations("downsample:factor=two")
    with pytest.raises(ValueError, match="sigmaa"):
        parse_degradations("blur:sigmaa=1")
    with pytest.raises(ValueError, match="sigmaa"):
        parse_degradations({"kind": "blur", "sigmaa": 1})
    with pytest.raises(ValueError, match="no degradation"):
        parse_degradations([])
    assert set(KINDS) == {
        "gaussian_noise",
        "rician_noise",
        "low_dose_ct",
        "blur",
        "downsample",
        "thick_slices",
        "kspace",
    }


# --------------------------------------------------------------------------- pairs

CHAIN = "blur:sigma=1;downsample:factor=2;gaussian_noise:sigma=0.05"


def test_paired_same_seed_and_key_is_bit_identical_and_order_free():
    x = torch.rand(1, 34, 31, generator=gen())
    a = PairedDegradation(CHAIN, seed=3)
    b = PairedDegradation(CHAIN, seed=3)
    b(x, key="other")  # different history must not matter
    b(x)
    for left, right in zip(a(x, key="case_7"), b(x, key="case_7"), strict=True):
        assert torch.equal(left, right)
    assert not torch.equal(a(x, key="case_7")[0], a(x, key="case_8")[0])
    assert not torch.equal(a(x, key=7)[0], PairedDegradation(CHAIN, seed=4)(x, key=7)[0])
    assert torch.equal(a(x, key=7)[0], a(x, key=7)[0])


def test_paired_without_key_is_a_reproducible_sequence():
    x = torch.rand(1, 16, 16, generator=gen())
    a, b = PairedDegradation(CHAIN, seed=1), PairedDegradation(CHAIN, seed=1)
    first, second = a(x)[0], a(x)[0]
    assert not torch.equal(first, second)
    assert torch.equal(b(x)[0], first) and torch.equal(b(x)[0], second)


@pytest.mark.parametrize("shape", [(1, 35, 33), (2, 17, 18, 21)])
@pytest.mark.parametrize("factor", [2, 4])
def test_paired_shapes_match_scale_and_input_untouched(shape, factor):
    x = torch.rand(shape, generator=gen(), dtype=torch.float64)
    before = x.clone()
    pair = PairedDegradation(
        [Degradation("downsample", factor=factor), Degradation("rician_noise", sigma=0.02)]
    )
    degraded, target = pair(x, key="k")
    assert pair.scale == factor
    assert tuple(s * pair.scale for s in degraded.shape[1:]) == tuple(target.shape[1:])
    assert target.shape[1:] == tuple(s - s % factor for s in shape[1:])
    assert degraded.dtype == target.dtype == torch.float32
    assert torch.equal(target, x[(...,) + tuple(slice(0, s) for s in target.shape[1:])].float())
    assert torch.equal(x, before)
    target += 1  # the target is not a view of the input
    assert torch.equal(x, before)


def test_paired_thick_slices_crops_only_that_axis():
    pair = PairedDegradation("thick_slices:factor=3,axis=0")
    degraded, target = pair(torch.rand(1, 10, 7, 5, generator=gen()), key=0)
    assert pair.scale == 1 and pair.shrinks_axis == 0
    assert target.shape == (1, 9, 7, 5) and degraded.shape == (1, 3, 7, 5)


def test_paired_relative_noise_uses_the_clean_range():
    x = torch.linspace(-1000, 1000, 64 * 64).reshape(1, 64, 64)
    degraded, target = PairedDegradation("gaussian_noise:sigma=0.01")(x, key="a")
    assert (degraded - target).std().item() == pytest.approx(0.01 * robust_range(x), rel=0.05)


# --------------------------------------------------------------------------- MONAI


def _sample(case: str = "c1") -> dict:
    img = MetaTensor(torch.rand(1, 16, 17, generator=gen()))
    return {"image": img, "case": case}


def test_dictionary_transform_reproduces_with_set_random_state():
    def run(seed):
        pipeline = Compose([PairedDegradationd("image", CHAIN)]).set_random_state(seed=seed)
        return [pipeline(_sample()) for _ in range(2)]

    first, again, other = run(5), run(5), run(6)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["input"], b["input"]) and torch.equal(a["target"], b["target"])
    assert not torch.equal(first[0]["input"], first[1]["input"])  # fresh draw per call
    assert not torch.equal(first[0]["input"], other[0]["input"])
    out = first[0]
    assert type(out["input"]) is torch.Tensor and out["input"].dtype == torch.float32
    assert out["input"].shape == (1, 8, 8) and out["target"].shape == (1, 16, 16)
    assert isinstance(out["image"], MetaTensor) and out["image"].shape == (1, 16, 17)


def test_dictionary_transform_key_field_is_deterministic_per_case():
    t = PairedDegradationd(
        keys="image", degradations=CHAIN, key_field="case", input_key="lr", target_key="hr"
    )
    a, b, c = t(_sample("c1")), t(_sample("c1")), t(_sample("c2"))
    assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
    assert not torch.equal(a["lr"], c["lr"])
    same = PairedDegradation(CHAIN, seed=0)(_sample()["image"].as_tensor(), key="c1")
    assert torch.equal(a["lr"], same[0])
    t.set_random_state(seed=99)  # the RNG state does not matter when the case is known
    assert torch.equal(t(_sample("c1"))["lr"], a["lr"])


def test_dictionary_transform_validates():
    with pytest.raises(ValueError, match="degradations"):
        PairedDegradationd("image")
    with pytest.raises(ValueError, match="one key"):
        PairedDegradationd(["image", "label"], CHAIN)
