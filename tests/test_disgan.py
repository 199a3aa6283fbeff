"""DISGAN: Haar DWT, generator, wavelet U-Net discriminator, frozen features, GAN losses and one
manual G-then-D optimisation step on the tiny preset."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medseg.errors import ModelError
from medseg.losses import (
    FeatureLoss,
    instance_noise_sigma,
    ragan_discriminator_loss,
    ragan_generator_loss,
)
from medseg.models import build_model
from medseg.models.disgan import (
    DISGAN,
    DWTUNetDiscriminator,
    PixelShuffle3d,
    ResNet10Features,
    RRDBGenerator,
    disgan,
    haar_dwt3d,
    haar_idwt3d,
    tiny,
)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- Haar DWT


def test_dwt_perfect_reconstruction_and_energy() -> None:
    x = _randn(2, 3, 8, 6, 4)
    y = haar_dwt3d(x)
    assert y.shape == (2, 24, 4, 3, 2)
    assert (haar_idwt3d(y) - x).abs().max() < 1e-5
    assert torch.allclose(y.square().sum(), x.square().sum(), rtol=1e-5)


def test_dwt_lll_of_constant_and_layout() -> None:
    levels = torch.tensor([1.0, -2.0, 3.5]).view(1, 3, 1, 1, 1)
    y = haar_dwt3d(levels.expand(2, 3, 4, 4, 4).contiguous())
    assert torch.allclose(y[:, :3], (levels * 2**1.5).expand(2, 3, 2, 2, 2))
    assert y[:, 3:].abs().max() < 1e-6
    # alternating along W only -> only sub-band s = 1 (high along W) is non-zero
    w_alt = torch.tensor([1.0, -1.0]).repeat(2).view(1, 1, 1, 1, 4).expand(1, 1, 4, 4, 4)
    bands = haar_dwt3d(w_alt.contiguous()).abs().flatten(2).amax(-1)[0]
    assert bands.nonzero().flatten().tolist() == [1]


@pytest.mark.parametrize("shape", [(1, 1, 7, 4, 4), (1, 1, 4, 5, 4), (1, 1, 4, 4, 3)])
def test_dwt_rejects_odd_sizes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="even"):
        haar_dwt3d(torch.zeros(shape))


def test_idwt_rejects_bad_channels() -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        haar_idwt3d(torch.zeros(1, 4, 2, 2, 2))


# ---------------------------------------------------------------- generator


def _unshuffle(x: torch.Tensor, r: int) -> torch.Tensor:
    b, c, d, h, w = x.shape
    out = x.reshape(b, c, d // r, r, h // r, r, w // r, r).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return out.reshape(b, c * r**3, d // r, h // r, w // r)


def test_pixel_shuffle3d_shape_and_inverse() -> None:
    shuffle = PixelShuffle3d(2)
    x = _randn(2, 16, 3, 4, 5)
    y = shuffle(x)
    assert y.shape == (2, 2, 6, 8, 10)
    assert torch.equal(_unshuffle(y, 2), x)
    z = _randn(1, 3, 6, 4, 2, seed=1)
    assert torch.equal(shuffle(_unshuffle(z, 2)), z)
    # channel c*8 + 4i + 2j + k lands at offset (i, j, k)
    assert y[0, 0, 1, 0, 1] == x[0, 5, 0, 0, 0]


def test_generator_doubles_each_dim() -> None:
    torch.manual_seed(0)
    g = tiny().generator
    assert (g.scale, g.spatial_dims) == (2, 3)
    out = g(_randn(1, 1, 16, 16, 16))
    assert out.shape == (1, 1, 32, 32, 32)
    assert g(_randn(2, 1, 4, 6, 8)).shape == (2, 1, 8, 12, 16)


def test_generator_scale_rules() -> None:
    g4 = RRDBGenerator(filters=8, num_res_blocks=1, growth=8, scale=4)
    assert g4(torch.zeros(1, 1, 4, 4, 4)).shape == (1, 1, 16, 16, 16)
    with pytest.raises(ValueError, match="scale"):
        RRDBGenerator(scale=3)


# ---------------------------------------------------------------- discriminator


def test_discriminator_output_matches_input() -> None:
    torch.manual_seed(0)
    d = tiny().discriminator
    assert d.levels == 3 and d.size_divisor == 8
    assert d(_randn(2, 1, 32, 32, 32)).shape == (2, 1, 32, 32, 32)
    d.train()
    assert d(_randn(1, 1, 16, 8, 24)).shape == (1, 1, 16, 8, 24)  # batch 1, any multiple of 8
    with pytest.raises(ValueError, match="multiple"):
        d(torch.zeros(1, 1, 20, 32, 32))


def test_discriminator_depth_rule() -> None:
    assert DWTUNetDiscriminator().levels == 6  # 64 -> 1
    assert DWTUNetDiscriminator(nf=4, patch_size=32, min_size=2).levels == 4
    for patch, low in [(48, 1), (32, 16), (16, 0)]:
        with pytest.raises(ValueError, match="power of two"):
            DWTUNetDiscriminator(patch_size=patch, min_size=low)


def test_discriminator_released_init_flag() -> None:
    torch.manual_seed(0)
    default = DWTUNetDiscriminator(nf=8, patch_size=32, min_size=4)
    released = DWTUNetDiscriminator(nf=8, patch_size=32, min_size=4, released_init=True)
    w_default, w_released = default.tail[0].weight.std(), released.tail[0].weight.std()
    assert w_default < 0.1 and 0.9 < w_released < 1.1


@pytest.mark.slow
def test_full_discriminator_on_64_cubed() -> None:
    d = disgan().discriminator.eval()
    with torch.no_grad():
        assert d(_randn(1, 1, 64, 64, 64)).shape == (1, 1, 64, 64, 64)


# ---------------------------------------------------------------- feature extractor


def test_feature_extractor_is_frozen_and_stays_eval() -> None:
    fe = tiny().feature_extractor
    assert not any(p.requires_grad for p in fe.parameters())
    assert fe.train() is fe and not fe.training
    assert not any(m.training for m in fe.modules())
    x = _randn(2, 1, 32, 32, 32).requires_grad_()
    out = fe(x)
    assert out.shape == (2, 64, 4, 4, 4)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_feature_extractor_loads_medicalnet_style_file(tmp_path) -> None:
    torch.manual_seed(0)
    source = ResNet10Features(widths=(8, 16, 32, 64))
    payload = {"module." + k: v for k, v in source.state_dict().items()}
    payload["module.conv_seg.0.weight"] = torch.zeros(2, 2, 1, 1, 1)
    path = tmp_path / "resnet_10.pth"
    torch.save({"state_dict": payload}, path)
    torch.manual_seed(1)
    loaded = ResNet10Features(widths=(8, 16, 32, 64), weights=str(path))
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training

    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(ModelError, match="no conv weight"):
        ResNet10Features(widths=(8, 16, 32, 64), weights=str(tmp_path / "other.pth"))
    with pytest.raises(ModelError, match="shape"):
        ResNet10Features(widths=(4, 16, 32, 64), weights=str(path))
    with pytest.raises(ModelError, match="not found"):
        ResNet10Features(weights=str(tmp_path / "missing.pth"))


# ---------------------------------------------------------------- presets


def test_preset_parameter_counts() -> None:
    torch.manual_seed(0)
    full = build_model("disgan")
    assert isinstance(full, DISGAN) and (full.scale, full.spatial_dims) == (2, 3)
    assert _count(full.generator) == pytest.approx(16.04e6, rel=0.02)
    assert _count(full.feature_extractor) == pytest.approx(14.36e6, rel=0.02)
    assert _count(full.discriminator) == pytest.approx(42.65e6, rel=0.10)
    small = build_model("disgan", tiny=True)
    assert _count(small.generator) == pytest.approx(0.381e6, rel=0.01)
    assert small.discriminator.levels == 3


def test_overrides_are_routed() -> None:
    net = tiny(in_channels=2, generator_num_res_blocks=2, discriminator_nf=4, feature_weights=None)
    assert len(net.generator.trunk) == 2 and net.discriminator.stem[0].out_channels == 4
    assert net.feature_extractor.conv1.in_channels == 2
    assert net(torch.zeros(1, 2, 4, 4, 4)).shape == (1, 2, 8, 8, 8)
    assert tiny(scale=4).scale == 4
    with pytest.raises(TypeError, match="unknown DISGAN override"):
        tiny(filters=8)


# ---------------------------------------------------------------- losses


def _softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_ragan_losses_hand_checked() -> None:
    zeros = torch.zeros(2, 1, 2, 2, 2)
    assert ragan_generator_loss(zeros, zeros).item() == pytest.approx(math.log(2))
    assert ragan_discriminator_loss(zeros, zeros).item() == pytest.approx(math.log(2))
    real = torch.tensor([1.0, 3.0]).view(2, 1, 1, 1, 1)  # batch mean 2
    fake = torch.tensor([0.0, 2.0]).view(2, 1, 1, 1, 1)  # batch mean 1
    # G: BCE(fake - 2, 1) = softplus(2 - fake) averaged
    g = (_softplus(2.0) + _softplus(0.0)) / 2
    assert ragan_generator_loss(real, fake).item() == pytest.approx(g, rel=1e-6)
    # D: real - 1 = [0, 2] with target 1; fake - 2 = [-2, 0] with target 0
    d_real = (_softplus(0.0) + _softplus(-2.0)) / 2
    d_fake = (_softplus(-2.0) + _softplus(0.0)) / 2
    assert ragan_discriminator_loss(real, fake).item() == pytest.approx(
        (d_real + d_fake) / 2, rel=1e-6
    )
    with pytest.raises(ValueError, match="shape"):
        ragan_generator_loss(real, zeros)


def test_ragan_mean_is_over_the_batch_only() -> None:
    real = _randn(3, 1, 2, 2, 2)
    fake = _randn(3, 1, 2, 2, 2, seed=1)
    expected = F.binary_cross_entropy_with_logits(
        fake - real.mean(0, keepdim=True), torch.ones_like(fake)
    )
    assert torch.allclose(ragan_generator_loss(real, fake), expected)


def test_ragan_gradients_and_direction() -> None:
    real = _randn(2, 1, 2, 2, 2).requires_grad_()
    fake = _randn(2, 1, 2, 2, 2, seed=1).requires_grad_()
    ragan_generator_loss(real, fake).backward()
    assert real.grad is None and fake.grad is not None  # real logits are constants for G
    base = ragan_discriminator_loss(real, fake).item()
    better = ragan_discriminator_loss(real.detach() + 1, fake.detach() - 1).item()
    assert better < base
    assert ragan_generator_loss(real, fake + 1).item() < ragan_generator_loss(real, fake).item()


def test_feature_loss_gradient_reaches_sr_only() -> None:
    fe = ResNet10Features(widths=(4, 4, 8, 8))
    loss_fn = FeatureLoss(fe)
    sr = _randn(1, 1, 16, 16, 16).requires_grad_()
    hr = _randn(1, 1, 16, 16, 16, seed=1).requires_grad_()
    loss = loss_fn(sr, hr)
    assert loss.item() > 0 and loss_fn(hr, hr).item() == 0
    loss.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0 and hr.grad is None


def test_instance_noise_sigma_schedule() -> None:
    sigmas = [instance_noise_sigma(e, 20) for e in range(20)]
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0
    assert all(a > b for a, b in zip(sigmas, sigmas[1:], strict=False))
    assert instance_noise_sigma(25, 20) == 0.0
    assert instance_noise_sigma(0, 1) == 0.0
    with pytest.raises(ValueError):
        instance_noise_sigma(0, 0)


# ---------------------------------------------------------------- one manual G then D step


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _changed(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}


def test_manual_generator_then_discriminator_step() -> None:
    torch.manual_seed(0)
    net = tiny().train()
    g, d, fe = net.generator, net.discriminator, net.feature_extractor
    feature_loss = FeatureLoss(fe)
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-4)
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-4)
    hr = _randn(2, 1, 16, 16, 16)  # smaller than the tiny patch (32) to keep the test fast
    lr = F.interpolate(hr, size=(8, 8, 8))  # nearest decimation, as released
    noise = instance_noise_sigma(0, 20) * _randn(*hr.shape, seed=3)
    fe_before = _snapshot(fe)
    g_before, d_before = _snapshot(g), _snapshot(d)

    opt_g.zero_grad()
    sr = net(lr)
    adv = ragan_generator_loss(d(hr + noise), d(sr + noise))
    loss_g = F.l1_loss(sr, hr) + 5e-3 * adv + 1e-2 * feature_loss(sr, hr)
    loss_g.backward()
    opt_g.step()
    assert torch.isfinite(loss_g)
    assert _changed(g, g_before) == {n for n, _ in g.named_parameters()}
    assert _changed(d, d_before) == set()

    g_after = _snapshot(g)
    opt_d.zero_grad()
    loss_d = ragan_discriminator_loss(d(hr + noise), d(sr.detach() + noise))
    loss_d.backward()
    opt_d.step()
    assert torch.isfinite(loss_d)
    assert _changed(g, g_after) == set()
    # D's last bias shifts D(HR) and D(SR) alike and cancels in the relativistic differences:
    # its gradient is zero up to rounding, so it may or may not move. Every other weight moves.
    names = [n for n, _ in d.named_parameters()]
    assert names[-1].endswith("bias")
    assert set(names[:-1]) <= _changed(d, d_before)
    fe_after = fe.state_dict()
    assert all(torch.equal(fe_after[k], v) for k, v in fe_before.items())
