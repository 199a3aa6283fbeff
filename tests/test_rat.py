"""RAT: shapes and padding, zero-init identities, R-MSA against a dense masked reference,
memory at 512 x 512, parameter counts, and the Focal Region Loss."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from medseg.losses import FocalRegionLoss
from medseg.models.layers.attention import region_plan
from medseg.models.rat import RAT, BasicLayer, NAFBlock, RegionAttention, rat, tiny


def _rand(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _regions(batch: int, height: int, width: int, count: int, seed: int = 0) -> Tensor:
    """Blocky random region map (``count`` ids on a coarse grid, upsampled)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, count, (batch, 1, (height + 7) // 8, (width + 7) // 8), generator=gen)
    return F.interpolate(coarse.float(), scale_factor=8, mode="nearest")[
        :, 0, :height, :width
    ].long()


def _nonzero_scales(net: torch.nn.Module, value: float = 0.5) -> None:
    """Make every zero-init layer scale nonzero (random, so no branch is symmetric)."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.rsplit(".", 1)[-1] in {"beta", "gamma", "lambda_ra", "lambda_wa"}:
                p.copy_(value * (torch.rand(p.shape, generator=gen) + 0.5))


# ---------------------------------------------------------------- shapes and padding


@pytest.mark.parametrize("size", [(64, 64), (50, 37), (16, 16), (3, 5)])
def test_tiny_output_shape_any_size(size):
    net = tiny().eval()
    _nonzero_scales(net)
    x = _rand(2, 1, *size)
    with torch.no_grad():
        out = net(x, _regions(2, *size, count=4))
        assert out.shape == x.shape
        assert torch.isfinite(out).all()
        assert net(x).shape == x.shape  # regions=None: one region


def test_scale_two_upsamples_first():
    net = tiny(scale=2).eval()
    x = _rand(1, 1, 24, 20)
    with torch.no_grad():
        out = net(x, _regions(1, 48, 40, count=3))
    assert out.shape == (1, 1, 48, 40)
    with pytest.raises(ValueError, match="output size"):
        net(x, _regions(1, 24, 20, count=3))  # regions must be at the output resolution


def test_attributes_and_argument_checks():
    net = tiny()
    assert (net.scale, net.spatial_dims, net.size_divisor) == (1, 2, 16)
    assert tiny(out_channels=2)(_rand(1, 1, 32, 32)).shape == (1, 2, 32, 32)
    with pytest.raises(ValueError):
        tiny(impl="cuda-magic")
    with pytest.raises(ValueError):
        tiny(qk_scale="sqrt")
    with pytest.raises(ValueError):
        tiny(num_heads=5)
    with pytest.raises(ValueError, match="integer"):
        net(_rand(1, 1, 32, 32), torch.zeros(1, 32, 32))


def test_odd_sizes_are_reflect_padded_and_cropped():
    """50 x 37 is run as its bottom/right reflect padding to 64 x 48, then cropped."""
    net = tiny().eval()
    _nonzero_scales(net)
    x = _rand(1, 1, 50, 37)
    regions = _regions(1, 50, 37, count=4)
    padded_regions = F.pad(regions[:, None].float(), (0, 11, 0, 14), mode="replicate")
    with torch.no_grad():
        out = net(x, regions)
        ref = net(F.pad(x, (0, 11, 0, 14), mode="reflect"), padded_regions[:, 0].long())
    assert torch.allclose(out, ref[:, :, :50, :37], atol=1e-6)


# ---------------------------------------------------------------- zero-init identities


def test_zero_init_attention_and_naf_branches_are_identities():
    torch.manual_seed(0)
    net = tiny().eval()
    x = _rand(1, 1, 32, 32)
    naf = next(m for m in net.modules() if isinstance(m, NAFBlock))
    feat = _rand(1, naf.conv1.in_channels, 16, 16)
    with torch.no_grad():
        assert torch.equal(naf(feat), feat)
        # lambda_ra = lambda_wa = 0: the region map cannot matter, and randomising the
        # attention weights changes nothing
        ref = net(x, _regions(1, 32, 32, count=5))
        assert torch.equal(net(x), ref)
        for m in net.modules():
            if isinstance(m, BasicLayer):
                for p in [*m.ra.parameters(), *m.wa.parameters()]:
                    p.normal_()
        assert torch.equal(net(x, _regions(1, 32, 32, count=3, seed=1)), ref)
        net.ending.weight.zero_()
        net.ending.bias.zero_()
        assert torch.equal(net(x), x)  # global residual


# ---------------------------------------------------------------- R-MSA


def _dense_rmsa(layer: RegionAttention, x: Tensor, ids: Tensor, mask: bool = True) -> Tensor:
    """Hand-written reference: dense (B, N, N) same-region mask, num_heads ** -0.5 scale."""
    b, c, h, w = x.shape
    heads = layer.num_heads
    q, k, v = layer.qkv(x).chunk(3, dim=1)
    q, k, v = (t.reshape(b, heads, c // heads, h * w).transpose(-1, -2) for t in (q, k, v))
    scores = (q @ k.transpose(-1, -2)) * heads**-0.5
    if mask:
        same = ids[:, None, :, None] == ids[:, None, None, :]
        scores = scores.masked_fill(~same, float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(-1, -2).reshape(b, c, h, w)
    return layer.project_out(out)


def _layer(channels: int = 32, heads: int = 8) -> RegionAttention:
    torch.manual_seed(0)
    return RegionAttention(channels, heads, scale=heads**-0.5, impl="torch")


@pytest.mark.parametrize("count", [1, 3, 7])
def test_region_attention_matches_dense_reference(count):
    layer = _layer()
    x = _rand(2, 32, 12, 10).requires_grad_()
    ids = _regions(2, 12, 10, count=count).flatten(1)
    if count == 7:
        ids[0, 5] = 99  # a one-token region
    out = layer(x, region_plan(ids))
    ref = _dense_rmsa(layer, x, ids)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)
    g = _rand(*out.shape, seed=5)
    grads = torch.autograd.grad(out, [x, *layer.parameters()], g)
    grads_ref = torch.autograd.grad(ref, [x, *layer.parameters()], g)
    for a, b in zip(grads, grads_ref, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


def test_single_region_is_global_attention():
    layer = _layer()
    x = _rand(1, 32, 8, 8)
    with torch.no_grad():
        out = layer(x, region_plan(torch.zeros(1, 64, dtype=torch.long)))
        ref = _dense_rmsa(layer, x, torch.zeros(1, 64), mask=False)
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-5)


def test_other_regions_do_not_leak():
    layer = _layer()
    ids = _regions(1, 16, 16, count=3).flatten(1)
    x = _rand(1, 32, 16, 16)
    y = x.clone().flatten(2)
    y[:, :, ids[0] == 2] += 10 * _rand(32, int((ids[0] == 2).sum()), seed=7)
    with torch.no_grad():
        a = layer(x, region_plan(ids)).flatten(2)
        b = layer(y.view_as(x), region_plan(ids)).flatten(2)
    keep = ids[0] != 2
    assert torch.equal(a[:, :, keep], b[:, :, keep])
    assert not torch.allclose(a[:, :, ~keep], b[:, :, ~keep])


def test_rat_uses_region_attention_with_one_plan(monkeypatch):
    """One region_plan per forward, shared by all BasicLayers (3 in tiny)."""
    import medseg.models.rat.blocks as blocks
    import medseg.models.rat.model as model

    plans, calls = [], []
    real_plan, real_attn = model.region_plan, blocks.region_attention
    monkeypatch.setattr(model, "region_plan", lambda r: plans.append(real_plan(r)) or plans[-1])
    monkeypatch.setattr(
        blocks, "region_attention", lambda *a, **k: calls.append(a[3]) or real_attn(*a, **k)
    )
    net = tiny(num_heads=4)
    net(_rand(1, 1, 32, 32), _regions(1, 32, 32, count=4))
    assert len(plans) == 1 and len(calls) == 3 and all(c is plans[0] for c in calls)
    assert plans[0].tokens == 8 * 8  # 32 / 2**2 per side


# ---------------------------------------------------------------- training-related


def test_every_parameter_gets_a_gradient():
    net = tiny().train()
    _nonzero_scales(net)
    out = net(_rand(2, 1, 32, 32), _regions(2, 32, 32, count=4))
    FocalRegionLoss()(out, _rand(2, 1, 32, 32, seed=1), _regions(2, 32, 32, count=4)).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_layer_scales_get_gradients_at_init():
    net = tiny().train()
    net(_rand(1, 1, 32, 32), _regions(1, 32, 32, count=3)).square().mean().backward()
    for name, p in net.named_parameters():
        if name.rsplit(".", 1)[-1] in {"lambda_ra", "lambda_wa", "beta", "gamma"}:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_parameter_counts():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(rat()) == pytest.approx(15.95e6, rel=0.01)  # measured on the released code
    assert count(tiny()) == pytest.approx(0.28e6, rel=0.03)


def test_head_dim_scale_option():
    a, b = tiny(num_heads=4), tiny(num_heads=4, qk_scale="head_dim")
    for net, scale in ((a, 4**-0.5), (b, (64 // 4) ** -0.5)):  # bottleneck width 64
        assert isinstance(net, RAT)
        assert {m.scale for m in net.modules() if hasattr(m, "scale") and m is not net} == {scale}


# ---------------------------------------------------------------- memory at 512 x 512


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor (bytes) any op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


def test_512_inference_never_builds_a_dense_mask():
    net = tiny().eval()
    _nonzero_scales(net)
    regions = _regions(1, 512, 512, count=30, seed=2)
    regions = torch.unique(regions, return_inverse=True)[1]
    tokens = (512 // 4) ** 2
    spy = _LargestTensor()
    with torch.no_grad(), spy:
        out = net(_rand(1, 1, 512, 512), regions)
    assert out.shape == (1, 1, 512, 512) and torch.isfinite(out).all()
    assert spy.largest > 0
    assert spy.largest < tokens * tokens  # a bool N x N mask alone would be 268 MB
    assert spy.largest < 64 * 2**20


# ---------------------------------------------------------------- Focal Region Loss


def test_focal_region_loss_vs_l1():
    pred, target = _rand(2, 3, 8, 8), _rand(2, 3, 8, 8, seed=1)
    regions = _regions(2, 8, 8, count=3)
    l1 = F.l1_loss(pred, target)
    assert torch.allclose(FocalRegionLoss(beta=0)(pred, target, regions), l1)
    assert torch.allclose(FocalRegionLoss(beta=1)(pred, target, None), l1)
    for beta in (1e-3, 1.0, 10.0):
        assert FocalRegionLoss(beta)(pred, target, regions) >= l1
    same = FocalRegionLoss(1.0)(pred, pred, regions)
    assert same == 0 and torch.isfinite(same)


def test_focal_region_loss_weights_hand_computed():
    # one image, one channel, 4 x 4; errors 0..15 row-major; regions: left half / right half
    pred = torch.arange(16.0).view(1, 1, 4, 4)
    target = torch.zeros_like(pred)
    regions = torch.tensor([[0, 0, 5, 5]] * 4)[None]
    left = torch.tensor([0.0, 1, 4, 5, 8, 9, 12, 13]).mean()  # 6.5
    right = torch.tensor([2.0, 3, 6, 7, 10, 11, 14, 15]).mean()  # 8.5
    weight = torch.tensor([[left, left, right, right]] * 4) / right
    expected = (pred[0, 0] * (1 + 0.5 * weight)).mean()
    assert torch.allclose(FocalRegionLoss(beta=0.5)(pred, target, regions), expected)


def test_focal_region_loss_regions_are_per_image():
    """The same id in two images is two regions; the normaliser is the batch-wide max."""
    pred = torch.stack([torch.full((1, 2, 2), 1.0), torch.full((1, 2, 2), 3.0)])
    target = torch.zeros_like(pred)
    regions = torch.zeros(2, 2, 2, dtype=torch.long)
    # weights 1/3 and 1: loss = mean(1 * (1 + b/3), 3 * (1 + b))
    beta = 0.3
    expected = (1 * (1 + beta / 3) + 3 * (1 + beta)) / 2
    assert torch.allclose(FocalRegionLoss(beta)(pred, target, regions), torch.tensor(expected))


def test_focal_region_loss_gradient_is_reweighted_l1():
    pred = _rand(1, 2, 6, 6).requires_grad_()
    target = _rand(1, 2, 6, 6, seed=1)
    regions = _regions(1, 6, 6, count=2)
    beta = 2.0
    FocalRegionLoss(beta)(pred, target, regions).backward()
    # reference: the weight as a constant
    diff = (pred - target).detach().abs()
    sums = torch.zeros(2).index_add_(0, regions.flatten(), diff.sum(1).flatten())
    counts = torch.bincount(regions.flatten(), minlength=2) * 2
    w = (sums / counts.clamp(min=1))[regions][:, None]
    w = w / w.max()
    expected = torch.sign(pred - target).detach() * (1 + beta * w) / pred.numel()
    assert torch.allclose(pred.grad, expected, atol=1e-7)


def test_focal_region_loss_rejects_bad_regions():
    pred = _rand(1, 1, 4, 4)
    with pytest.raises(ValueError):
        FocalRegionLoss()(pred, pred, torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError):
        FocalRegionLoss()(pred, pred, torch.zeros(1, 4, 4))
