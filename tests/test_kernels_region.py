"""kernels.region_attention: the torch path equals the dense reference; plans; dispatcher rules.

The Triton path is checked in test_kernels_triton.py (interpreter subprocess and GPU).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels import region_attention, region_attention_reference, region_plan


def _maps(name: str, batch: int, tokens: int) -> torch.Tensor:
    """``(B, N)`` region maps; every image gets a different one."""
    gen = torch.Generator().manual_seed(1)
    if name == "one-region":
        return torch.full((batch, tokens), 7)
    if name == "singletons":  # every token its own region, ids scrambled
        return torch.stack([torch.randperm(tokens, generator=gen) * 3 - 50 for _ in range(batch)])
    if name == "unsorted-ids":  # few regions, negative and non-contiguous ids, interleaved
        return torch.randint(-3, 4, (batch, tokens), generator=gen) * 11
    if name == "mixed":  # one large region, small ones, singletons
        maps = torch.randint(0, 40, (batch, tokens), generator=gen)
        maps[0, : tokens // 2] = 1000
        maps[-1, ::3] = 5
        return maps
    raise KeyError(name)


MAPS = ["one-region", "singletons", "unsorted-ids", "mixed"]


def _inputs(batch=2, tokens=96, heads=2, dim=8, dim_v=5, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(batch, tokens, heads, dim, generator=gen).to(dtype)
    k = torch.randn(batch, tokens, heads, dim, generator=gen).to(dtype)
    v = torch.randn(batch, tokens, heads, dim_v, generator=gen).to(dtype)
    return [t.requires_grad_() for t in (q, k, v)]


def _grads(out: torch.Tensor, inputs, grad: torch.Tensor):
    return torch.autograd.grad(out, inputs, grad)


@pytest.mark.parametrize("chunk", [1, 4, 64])
@pytest.mark.parametrize("name", MAPS)
def test_torch_path_equals_reference(name: str, chunk: int) -> None:
    q, k, v = _inputs()
    regions = _maps(name, 2, 96)
    plan = region_plan(regions, chunk=chunk)
    out = region_attention(q, k, v, plan, scale=0.3, impl="torch")
    ref = region_attention_reference(q, k, v, regions, scale=0.3)
    assert out.shape == (2, 96, 2, 5)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    for got, want in zip(_grads(out, (q, k, v), grad), _grads(ref, (q, k, v), grad), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_gradcheck_float64() -> None:
    q, k, v = _inputs(batch=2, tokens=11, heads=1, dim=3, dim_v=2, dtype=torch.float64)
    regions = torch.tensor([[3, 1, 3, 3, 9, 1, 1, 0, 3, 9, 9], [2] * 6 + [4] * 5])
    plan = region_plan(regions, chunk=2)  # packed chunks and per-region calls both used
    assert plan.packing.chunks and len(plan.packing.lengths) > 1
    assert torch.autograd.gradcheck(
        lambda q, k, v: kernels.region_attention_torch(q, k, v, plan, scale=0.8), (q, k, v)
    )


def test_one_region_is_global_attention() -> None:
    q, k, v = (t.detach() for t in _inputs(batch=1, tokens=200))
    out = region_attention(q, k, v, torch.zeros(1, 200, dtype=torch.long), impl="torch")
    sdpa = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    torch.testing.assert_close(out, sdpa.transpose(1, 2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk", [4, 64])
def test_other_regions_have_exactly_zero_weight(chunk: int) -> None:
    q, k, v = (t.detach() for t in _inputs())
    regions = _maps("mixed", 2, 96)
    plan = region_plan(regions, chunk=chunk)
    out = region_attention(q, k, v, plan, impl="torch")
    inside = regions == regions[0, 3]
    k2, v2 = k.clone(), v.clone()
    k2[inside] *= 5.0
    v2[inside] += 1e4
    out2 = region_attention(q, k2, v2, plan, impl="torch")
    assert torch.equal(out2[~inside], out[~inside])  # bit-identical outside the region
    assert not torch.equal(out2[inside], out[inside])


def test_plan_sorts_by_id_and_is_reusable() -> None:
    regions = torch.tensor([[5, -2, 5, 0, -2, 5], [1, 1, 1, 1, 1, 1]])
    plan = region_plan(regions)
    assert plan.order.tolist() == [1, 4, 3, 0, 2, 5, 6, 7, 8, 9, 10, 11]
    assert plan.offsets.tolist() == [0, 2, 3, 6, 12]
    assert plan.sizes == (2, 1, 3, 6) and plan.max_size == 6
    assert torch.equal(plan.order[plan.inverse], torch.arange(12))
    q, k, v = (t.detach() for t in _inputs(tokens=6))
    ref = region_attention(q, k, v, regions, impl="torch")
    for _ in range(2):  # the same plan again, e.g. the next layer
        assert torch.equal(region_attention(q, k, v, plan, impl="torch"), ref)


def test_memory_is_linear_in_tokens() -> None:
    regions = _maps("mixed", 2, 96)
    pack = region_plan(regions, chunk=16).packing
    assert pack.mask.numel() <= 2 * 96 * 16 * 2  # chunks are at least half full
    assert pack.gather.numel() <= 2 * 2 * 96


def test_bf16_close_to_float32_reference() -> None:
    q, k, v = (t.detach() for t in _inputs(tokens=64, dim=16, dim_v=16))
    regions = _maps("mixed", 2, 64)
    out = region_attention(*(t.bfloat16() for t in (q, k, v)), regions, impl="torch")
    assert out.dtype == torch.bfloat16
    ref = region_attention_reference(*(t.bfloat16().float() for t in (q, k, v)), regions)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(
    "regions, match",
    [
        (torch.zeros(2, 95, dtype=torch.long), r"regions are for \(B, N\) = \(2, 95\)"),
        (torch.zeros(2, 96), "integer ids"),
        (torch.zeros(2, 96, dtype=torch.bool), "integer ids"),
        (torch.zeros(192, dtype=torch.long), r"\(B, N\) tensor"),
    ],
)
def test_bad_region_maps_raise(regions, match) -> None:
    q, k, v = (t.detach() for t in _inputs())
    with pytest.raises(ValueError, match=match):
        region_attention(q, k, v, regions)


def test_bad_shapes_raise() -> None:
    q, k, v = (t.detach() for t in _inputs())
    with pytest.raises(ValueError, match="expected q, k"):
        region_attention(q, k[:, :, :1], v, _maps("mixed", 2, 96))


def test_dispatch(monkeypatch) -> None:
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v = (t.detach() for t in _inputs())
    regions = _maps("mixed", 2, 96)
    ref = kernels.region_attention_torch(q, k, v, regions)
    for impl in (None, "auto", "torch"):
        assert torch.equal(region_attention(q, k, v, regions, impl=impl), ref)
    with pytest.raises(kernels.KernelUnavailableError, match=r"need CUDA \(or TRITON_INTERPRET"):
        region_attention(q, k, v, regions, impl="triton")
    monkeypatch.setenv(kernels.ENV_VAR, "triton")
    with pytest.raises(kernels.KernelUnavailableError, match=r"\$MEDSEG_KERNELS"):
        region_attention(q, k, v, regions)
    assert torch.equal(region_attention(q, k, v, regions, impl="torch"), ref)
    with pytest.raises(ValueError, match="impl must be one of"):
        region_attention(q, k, v, regions, impl="flex")


def test_no_tokens() -> None:
    q = torch.zeros(2, 0, 2, 4)
    out = region_attention(q, q, q, torch.zeros(2, 0, dtype=torch.long), impl="torch")
    assert out.shape == (2, 0, 2, 4)
