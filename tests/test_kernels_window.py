"""kernels.window_attention: the torch path equals the dense reference; dispatcher rules.

The Triton path is checked in test_kernels_triton.py (interpreter subprocess and GPU).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import kernels
from kernels.window import (
    _partition,
    _unpartition,
    window_attention_reference,
    window_attention_torch,
)
from medseg.models.layers import WindowCrossAttention

ROOT = Path(__file__).resolve().parents[1]

# (q size, kv size, q window, kv window, heads, head dim, value dim)
CASES = {
    "2d-wau": ((16, 16), (8, 8), 8, 4, 2, 8, 8),
    "2d-pad": ((13, 10), (7, 5), 4, 2, 3, 5, 7),
    "2d-self": ((9, 11), (9, 11), 4, 4, 1, 4, 4),
    "2d-one-window": ((6, 6), (3, 3), 8, 4, 2, 4, 4),
    "3d-wau": ((8, 8, 8), (4, 4, 4), 4, 2, 2, 4, 4),
    "3d-pad-aniso": ((8, 6, 10), (4, 3, 5), (4, 2, 4), (2, 1, 2), 4, 3, 6),
}


def _inputs(case, dtype=torch.float32, batch=2):
    q_size, kv_size, _, _, heads, dim, dim_v = case
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(batch, *q_size, heads, dim, generator=gen, dtype=dtype)
    k = torch.randn(batch, *kv_size, heads, dim, generator=gen, dtype=dtype)
    v = torch.randn(batch, *kv_size, heads, dim_v, generator=gen, dtype=dtype)
    return [t.requires_grad_() for t in (q, k, v)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_windowed_equals_dense_forward_and_grads(name: str) -> None:
    case = CASES[name]
    windows = {"q_window": case[2], "kv_window": case[3]}
    q, k, v = _inputs(case)
    out = kernels.window_attention(q, k, v, **windows, impl="torch")
    ref = window_attention_reference(q, k, v, **windows)
    assert out.shape == (2, *case[0], case[4], case[6])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (q, k, v), grad)
    want = torch.autograd.grad(ref, (q, k, v), grad)
    for a, b in zip(got, want, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_gradcheck_float64_with_padding() -> None:
    q, k, v = _inputs(((5, 3), (3, 2), 2, 1, 1, 2, 2), dtype=torch.float64, batch=1)

    def fn(q, k, v):
        return window_attention_torch(q, k, v, q_window=(2, 2), kv_window=(1, 1), scale=0.7)

    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_scale_is_passed() -> None:
    q, k, v = _inputs(CASES["2d-pad"])
    out = window_attention_torch(q, k, v, q_window=4, kv_window=2, scale=0.1)
    want = window_attention_reference(q, k, v, q_window=4, kv_window=2, scale=0.1)
    torch.testing.assert_close(out, want)


def test_queries_only_see_their_window() -> None:
    q, k, v = (t.detach() for t in _inputs(CASES["2d-wau"]))
    out = window_attention_torch(q, k, v, q_window=8, kv_window=4)
    v2 = v.clone()
    v2[:, 4:, :4] += 10.0  # low-res window (1, 0) -> high-res rows 8:16, cols 0:8
    out2 = window_attention_torch(q, k, v2, q_window=8, kv_window=4)
    changed = (out2 - out).abs().amax(dim=(0, 3, 4)) > 0
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[8:, :8] = True
    assert torch.equal(changed, expected)


@pytest.mark.parametrize("size, window", [((8, 12), (4, 3)), ((4, 6, 2), (2, 3, 1))])
def test_partition_round_trip(size, window) -> None:
    x = torch.randn(2, *size, 3, 5)
    parts = _partition(x, window)
    grid = [s // w for s, w in zip(size, window, strict=True)]
    assert parts.shape == (2 * torch.Size(grid).numel(), 3, torch.Size(window).numel(), 5)
    assert torch.equal(_unpartition(parts, 2, grid, window), x)
    # the first window holds the top-left block, raster order inside
    block = x[(0, *(slice(0, w) for w in window))]
    assert torch.equal(parts[0], block.reshape(-1, 3, 5).transpose(0, 1))


@pytest.mark.parametrize(
    "q_shape, kv_shape, windows, match",
    [
        ((1, 16, 16, 2, 4), (1, 4, 4, 2, 4), (8, 1), "window grids differ"),
        ((1, 16, 2, 4), (1, 8, 2, 4), (8, 4), "2 or 3 spatial axes"),
        ((1, 8, 8, 2, 4), (1, 4, 4, 2, 4), ((8,), 4), "q_window"),
        ((1, 8, 8, 2, 4), (1, 4, 4, 1, 4), (8, 4), "share batch, heads"),
    ],
)
def test_bad_shapes_raise(q_shape, kv_shape, windows, match) -> None:
    q, k = torch.zeros(q_shape), torch.zeros(kv_shape)
    with pytest.raises(ValueError, match=match):
        kernels.window_attention(q, k, k, q_window=windows[0], kv_window=windows[1])


def test_dispatch_auto_and_env(monkeypatch) -> None:
    q, k, v = (t.detach() for t in _inputs(CASES["2d-wau"]))
    ref = window_attention_torch(q, k, v, q_window=8, kv_window=4)
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    for impl in (None, "auto", "torch"):
        assert torch.equal(
            kernels.window_attention(q, k, v, q_window=8, kv_window=4, impl=impl), ref
        )
    monkeypatch.setenv("MEDSEG_KERNELS", "torch")
    assert torch.equal(kernels.window_attention(q, k, v, q_window=8, kv_window=4), ref)
    monkeypatch.setenv("MEDSEG_KERNELS", "triton")
    with pytest.raises(kernels.KernelUnavailableError, match=r"\$MEDSEG_KERNELS.*need CUDA"):
        kernels.window_attention(q, k, v, q_window=8, kv_window=4)
    # an explicit argument wins over the environment
    assert torch.equal(kernels.window_attention(q, k, v, q_window=8, kv_window=4, impl="auto"), ref)
    monkeypatch.setenv("MEDSEG_KERNELS", "cuda")
    with pytest.raises(ValueError, match=r"\$MEDSEG_KERNELS must be one of auto, torch, triton"):
        kernels.window_attention(q, k, v, q_window=8, kv_window=4)


def test_explicit_triton_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    q, k, v = (t.detach() for t in _inputs(CASES["2d-wau"]))
    with pytest.raises(kernels.KernelUnavailableError) as err:
        kernels.window_attention(q, k, v, q_window=8, kv_window=4, impl="triton")
    assert "tensors are on cpu; Triton kernels need CUDA (or TRITON_INTERPRET=1)" in str(err.value)
    with pytest.raises(ValueError, match="impl must be one of"):
        kernels.window_attention(q, k, v, q_window=8, kv_window=4, impl="flex")


def test_seam_checks_name_at_construction_and_device_per_call(monkeypatch) -> None:
    sizes = {"spatial_dims": 2, "q_dim": 8, "kv_dim": 6, "dim": 8, "num_heads": 2}
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("MEDSEG_KERNELS", "cuda")
    with pytest.raises(ValueError, match="must be one of"):
        WindowCrossAttention(**sizes, q_window=8, kv_window=4)
    monkeypatch.setenv("MEDSEG_KERNELS", "triton")
    attn = WindowCrossAttention(**sizes, q_window=8, kv_window=4)  # may move to a GPU later
    query, key = torch.randn(2, 16, 12, 8), torch.randn(2, 8, 6, 6)
    with pytest.raises(kernels.KernelUnavailableError, match="need CUDA"):
        attn(query, key)
    attn = WindowCrossAttention(**sizes, q_window=8, kv_window=4, out_dim=5, impl="torch")
    assert attn(query, key).shape == (2, 16, 12, 5)


def test_kernels_is_this_projects_package() -> None:
    assert Path(kernels.__file__).resolve().is_relative_to(ROOT)
    assert kernels.window_attention.__module__ == "kernels.window"
