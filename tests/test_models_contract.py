"""Contract every registered segmentation net's ``tiny`` preset must meet (timm-style).

A segmentation net takes ``(B, C_in, *S)`` and returns logits ``(B, K, *S)``; its tiny preset
accepts ``in_channels``/``out_channels`` overrides (and ``spatial_dims`` when its class takes
it, in which case 2D and 3D are both tested) and exposes ``size_divisor``: spatial sizes that
are not multiples of it raise ``ValueError``. A class that takes ``deep_supervision`` returns a
list ``[full, 1/2, ...]`` in training mode and one tensor in eval mode. Models that need
pretrained weights to build are listed in ``NEEDS_WEIGHTS`` and skipped.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable

import pytest
import torch
from torch import nn

from medseg.models import MODELS, build_model

NEEDS_WEIGHTS: frozenset[str] = frozenset()
SEGMENTATION = sorted(
    name
    for name, entry in MODELS.items()
    if entry.task == "segmentation" and name not in NEEDS_WEIGHTS
)
SIZES = {2: (64, 64), 3: (32, 32, 32)}
IN, OUT, BATCH = 2, 3, 2


def _factory(name: str) -> Callable[..., nn.Module]:
    module, _, attr = MODELS[name].tiny.partition(":")
    return getattr(importlib.import_module(module), attr)


def _build(name: str, spatial_dims: int, seed: int = 0, **overrides: object) -> nn.Module:
    torch.manual_seed(seed)
    net = _factory(name)(in_channels=IN, out_channels=OUT, **overrides)
    takes = inspect.signature(type(net)).parameters
    if spatial_dims == 3 and "spatial_dims" not in takes:
        pytest.skip(f"{name} is 2D only")
    if "spatial_dims" in takes:
        torch.manual_seed(seed)
        net = _factory(name)(
            in_channels=IN, out_channels=OUT, spatial_dims=spatial_dims, **overrides
        )
    return net


def _input(spatial_dims: int) -> torch.Tensor:
    return torch.randn(BATCH, IN, *SIZES[spatial_dims], generator=torch.Generator().manual_seed(1))


def _grad_problems(net: nn.Module) -> list[str]:
    problems = []
    for pname, p in net.named_parameters():
        if not p.requires_grad:
            continue
        if p.grad is None:
            problems.append(f"{pname}: no grad")
        elif not torch.isfinite(p.grad).all():
            problems.append(f"{pname}: non-finite grad")
    return problems


def test_there_are_segmentation_models() -> None:
    assert {"unet", "wau"} <= set(SEGMENTATION)


@pytest.mark.parametrize("name", SEGMENTATION)
def test_table_builds_base_and_tiny(name: str) -> None:
    base, small = build_model(name), build_model(name, tiny=True, out_channels=OUT)
    n_base = sum(p.numel() for p in base.parameters())
    n_small = sum(p.numel() for p in small.parameters())
    assert n_small < n_base
    assert small.size_divisor >= 1


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", SEGMENTATION)
def test_forward_shape(name: str, spatial_dims: int) -> None:
    net = _build(name, spatial_dims).eval()
    x = _input(spatial_dims)
    assert all(s % net.size_divisor == 0 for s in x.shape[2:])
    with torch.no_grad():
        out = net(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (BATCH, OUT, *SIZES[spatial_dims])
    assert out.dtype == x.dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", SEGMENTATION)
def test_every_parameter_gets_a_finite_gradient(name: str, spatial_dims: int) -> None:
    net = _build(name, spatial_dims).train()
    out = net(_input(spatial_dims))
    assert not torch.isnan(out).any()
    out.square().mean().backward()
    assert _grad_problems(net) == []


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", SEGMENTATION)
def test_state_dict_round_trip(name: str, spatial_dims: int) -> None:
    a = _build(name, spatial_dims, seed=0).eval()
    b = _build(name, spatial_dims, seed=1).eval()
    x = _input(spatial_dims)
    with torch.no_grad():
        assert not torch.equal(a(x), b(x))
        b.load_state_dict(a.state_dict(), strict=True)
        assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("name", SEGMENTATION)
def test_rejects_sizes_that_are_not_multiples(name: str) -> None:
    net = _build(name, 2).eval()
    x = torch.zeros(1, IN, 64 + net.size_divisor // 2 + 1, 64)
    with pytest.raises(ValueError, match="multiple"):
        net(x)
    with pytest.raises(ValueError):
        net(torch.zeros(1, IN + 1, 64, 64))


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("name", SEGMENTATION)
def test_deep_supervision_outputs(name: str, spatial_dims: int) -> None:
    probe = _build(name, 2)
    if "deep_supervision" not in inspect.signature(type(probe)).parameters:
        pytest.skip(f"{name} has no deep supervision")
    net = _build(name, spatial_dims, deep_supervision=True).train()
    x = _input(spatial_dims)
    outs = net(x)
    assert isinstance(outs, list) and len(outs) >= 2
    size = torch.tensor(SIZES[spatial_dims])
    for i, out in enumerate(outs):
        assert out.shape == (BATCH, OUT, *(size // 2**i).tolist()), f"output {i}"
        assert torch.isfinite(out).all()
    sum(o.square().mean() for o in outs).backward()
    assert _grad_problems(net) == []
    with torch.no_grad():
        assert net.eval()(x).shape == (BATCH, OUT, *SIZES[spatial_dims])
