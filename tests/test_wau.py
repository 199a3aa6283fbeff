"""WAU-specific behaviour: the zero-init identity, windows, variants, and that it learns."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import kernels
from medseg.models.wau import WAU, WindowAttentionUpsample, tiny, wau_base

# (spatial_dims, low size, interpolation mode); 7 x 5 and 3 x 5 x 2 need padded windows
IDENTITY_CASES = [
    (2, (4, 6), "bilinear"),
    (2, (7, 5), "bilinear"),
    (3, (4, 4, 4), "trilinear"),
    (3, (3, 5, 2), "trilinear"),
]


def _block(spatial_dims: int, **kw) -> WindowAttentionUpsample:
    torch.manual_seed(0)
    return WindowAttentionUpsample(
        spatial_dims=spatial_dims, low_channels=12, skip_channels=8, head_dim=4, **kw
    )


def _pair(spatial_dims: int, low_size: tuple[int, ...]):
    gen = torch.Generator().manual_seed(1)
    low = torch.randn(2, 12, *low_size, generator=gen)
    skip = torch.randn(2, 8, *(2 * s for s in low_size), generator=gen)
    return low, skip


@pytest.mark.parametrize("self_attention", [False, True])
@pytest.mark.parametrize("spatial_dims, low_size, mode", IDENTITY_CASES)
def test_zero_init_block_is_exactly_interpolation(spatial_dims, low_size, mode, self_attention):
    block = _block(spatial_dims, self_attention=self_attention).train()
    low, skip = _pair(spatial_dims, low_size)
    out = block(low, skip)
    plain = F.interpolate(block.proj(low), scale_factor=2, mode=mode, align_corners=False)
    assert out.shape == (2, 8, *(2 * s for s in low_size))
    assert torch.equal(out, plain)


def test_zero_init_zeroes_exactly_the_output_projections():
    block = _block(2, self_attention=True)

    def zeroed(block):  # LayerNorm biases start at zero anyway
        return {n for n, p in block.named_parameters() if not p.any() and "norm" not in n}

    projections = ("cross_attn.out_proj", "self_attn.out_proj", "mlp.2")
    assert zeroed(block) == {f"{m}.{w}" for m in projections for w in ("weight", "bias")}
    assert zeroed(_block(2, zero_init=False, self_attention=True)) == set()


def test_zero_init_output_projection_learns_and_breaks_the_identity():
    block = _block(2)
    low, skip = _pair(2, (4, 4))
    block(low, skip).square().mean().backward()
    assert block.cross_attn.out_proj.weight.grad.abs().sum() > 0
    with torch.no_grad():
        block.cross_attn.out_proj.weight.normal_()
    plain = F.interpolate(block.proj(low), scale_factor=2, mode="bilinear")
    out = block(low, skip)
    assert not torch.allclose(out, plain)
    # the skip map now conditions the upsampling
    assert not torch.allclose(block(low, torch.randn_like(skip)), out)


def test_without_zero_init_every_parameter_gets_a_nonzero_gradient():
    block = _block(3, zero_init=False, self_attention=True)
    low, skip = _pair(3, (2, 4, 4))
    block(low, skip).square().mean().backward()
    assert [n for n, p in block.named_parameters() if not p.grad.abs().sum() > 0] == []


def test_block_rejects_mismatched_sizes():
    block = _block(2)
    with pytest.raises(ValueError, match="twice"):
        block(torch.zeros(1, 12, 4, 4), torch.zeros(1, 8, 8, 9))


def test_attention_is_local_to_windows():
    block = _block(2, zero_init=False)
    block.mlp[2].weight.data.zero_()  # isolate the attention path (R is local by construction)
    block.mlp[2].bias.data.zero_()
    low, skip = _pair(2, (8, 8))
    with torch.no_grad():
        plain = block(low, skip) - F.interpolate(block.proj(low), scale_factor=2, mode="bilinear")
        skip2 = skip.clone()
        skip2[..., :8, :8] = torch.randn(2, 8, 8, 8)  # queries of high-res window (0, 0) only
        moved = block(low, skip2) - F.interpolate(block.proj(low), scale_factor=2, mode="bilinear")
    changed = (moved - plain).abs().amax(dim=(0, 1)) > 1e-6
    assert changed[:8, :8].all() and not changed[8:].any() and not changed[:, 8:].any()


@pytest.mark.parametrize("spatial_dims, size", [(2, (48, 40)), (3, (24, 16, 8))])
def test_sizes_that_are_not_window_multiples(spatial_dims, size):
    net = tiny(spatial_dims=spatial_dims).eval()  # skip maps 12 x 10 / 6 x 4 x 2 < 8-windows
    with torch.no_grad():
        out = net(torch.randn(1, 1, *size))
    assert out.shape == (1, 2, *size) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    "kw", [{"upsample": "transpose"}, {"replace_concat": True}, {"norm": "instance"}]
)
def test_variants(kw):
    net = tiny(**kw, out_channels=4).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, 32, 32)).shape == (2, 4, 32, 32)
    if kw.get("upsample") == "transpose":
        assert not any(isinstance(m, WindowAttentionUpsample) for m in net.modules())


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"spatial_dims": 1}, "spatial_dims"),
        ({"channels": (8,)}, "channels"),
        ({"upsample": "nearest"}, "upsample"),
        ({"norm": "group"}, "norm"),
    ],
)
def test_bad_config_raises(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(**kw)


def test_kernel_choice_is_checked_at_construction_and_resolved_per_call(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="must be one of auto, torch, triton"):
        tiny(attn_impl="flex")
    net = tiny(attn_impl="triton")  # valid name; whether it can run depends on the inputs
    with pytest.raises(kernels.KernelUnavailableError, match="need CUDA"):
        net(torch.randn(1, 1, 32, 32))


def test_base_preset_matches_fidelity_notes():
    net = wau_base()
    assert isinstance(net, WAU) and net.size_divisor == 16
    blocks = [m for m in net.modules() if isinstance(m, WindowAttentionUpsample)]
    assert [b.cross_attn.num_heads for b in blocks] == [16, 8, 4, 2]
    assert [b.cross_attn.kv_window for b in blocks] == [(4, 4)] * 4
    assert [b.cross_attn.q_window for b in blocks] == [(8, 8)] * 4


def test_tiny_learns_a_toy_segmentation():
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    centres = torch.rand(8, 2) * 16 + 8
    dist = (yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2
    target = (dist < 36).long()  # (8, 32, 32) discs of radius 6
    images = target[:, None].float() + 0.3 * torch.randn(8, 1, 32, 32)
    net = tiny(deep_supervision=True).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(6):
        outs = net(images)
        loss = sum(
            F.cross_entropy(
                o, F.interpolate(target[:, None].float(), size=o.shape[2:])[:, 0].long()
            )
            for o in outs
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
