"""Triton segment kernels (region and window attention) against the references.

Without a GPU the kernels run in Triton's interpreter, which Triton selects when it decorates
them, i.e. when ``kernels._triton_segments`` is first imported with ``TRITON_INTERPRET=1``. So
the interpreter checks run in a fresh subprocess (``python tests/test_kernels_triton.py``) that
sets the variable before anything imports triton, and the variable never leaks into this test
process (where other tests assert that ``impl="triton"`` is refused on CPU). The subprocess
prints one JSON object of maximum errors per case; the tests below assert on it.

With CUDA the ``gpu`` tests run the compiled kernels in this process, in float32 (IEEE dot
products, tolerance 1e-4) and bfloat16 (compared with the float32 reference on the same rounded
inputs; tolerance ``3e-2 * max(1, max |ref|)`` for the output, ``6e-2 * max(1, max |ref grad|)``
for the gradients).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

CASES = ["segments-tiled", "region-mixed", "region-one", "window-2d-pad", "window-3d-aniso"]
FP32_TOL = 1e-5


def _inputs(shape_qk, shape_v, device, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(shape_qk, generator=gen)
    k = torch.randn(shape_qk, generator=gen)
    v = torch.randn(shape_v, generator=gen)
    return [t.to(device=device, dtype=dtype).requires_grad_() for t in (q, k, v)]


def _case(name: str, device: str, dtype: torch.dtype):
    """``(triton_fn, reference_fn, inputs)``; the reference runs in float32 on the same device."""
    import kernels
    from kernels._triton_segments import segment_attention

    if name == "segments-tiled":  # several 16-row tiles per segment, empty segments, cross-attn
        lq, lk = [5, 40, 1, 17, 0, 3], [7, 33, 2, 17, 4, 0]
        cu_q = torch.tensor([0, *torch.tensor(lq).cumsum(0).tolist()], device=device)
        cu_kv = torch.tensor([0, *torch.tensor(lk).cumsum(0).tolist()], device=device)
        gen = torch.Generator().manual_seed(0)
        inputs = [
            torch.randn(sum(lq), 2, 8, generator=gen),
            torch.randn(sum(lk), 2, 8, generator=gen),
            torch.randn(sum(lk), 2, 5, generator=gen),
        ]
        inputs = [t.to(device=device, dtype=dtype).requires_grad_() for t in inputs]

        def reference(q, k, v):
            outs = []
            for s in range(len(lq)):
                qs = q[cu_q[s] : cu_q[s + 1]].transpose(0, 1)
                ks = k[cu_kv[s] : cu_kv[s + 1]].transpose(0, 1)
                vs = v[cu_kv[s] : cu_kv[s + 1]].transpose(0, 1)
                if ks.shape[1] == 0:
                    outs.append(qs.new_zeros(qs.shape[1], 2, 5))
                    continue
                p = (qs @ ks.transpose(1, 2) * 0.3).softmax(-1)
                outs.append((p @ vs).transpose(0, 1))
            return torch.cat(outs)

        def triton(q, k, v):
            return segment_attention(q, k, v, cu_q, cu_kv, scale=0.3, block=16)

        return triton, reference, inputs
    if name.startswith("region"):
        batch, tokens = (2, 48) if name == "region-mixed" else (1, 40)
        gen = torch.Generator().manual_seed(3)
        regions = torch.randint(-2, 6, (batch, tokens), generator=gen) * 7
        if name == "region-one":
            regions = torch.full((batch, tokens), 4)
        else:
            regions[0, :20] = 99  # one region longer than a tile
            regions[1, 5] = -100  # a region of one token
        regions = regions.to(device)
        inputs = _inputs((batch, tokens, 2, 6), (batch, tokens, 2, 4), device, dtype)

        def triton(q, k, v):
            return kernels.region_attention(q, k, v, regions, impl="triton")

        def reference(q, k, v):
            if name == "region-one":  # plain global attention
                out = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)))
                return out.transpose(1, 2)
            return kernels.region_attention_reference(q, k, v, regions)

        return triton, reference, inputs
    sizes = {
        "window-2d-pad": ((13, 10), (7, 5), 4, 2, 2, 5, 7),
        "window-3d-aniso": ((8, 6, 10), (4, 3, 5), (4, 2, 4), (2, 1, 2), 2, 3, 6),
    }[name]
    q_size, kv_size, q_win, kv_win, heads, dim, dim_v = sizes
    gen = torch.Generator().manual_seed(4)
    inputs = [
        torch.randn(1, *q_size, heads, dim, generator=gen),
        torch.randn(1, *kv_size, heads, dim, generator=gen),
        torch.randn(1, *kv_size, heads, dim_v, generator=gen),
    ]
    inputs = [t.to(device=device, dtype=dtype).requires_grad_() for t in inputs]
    win = {"q_window": q_win, "kv_window": kv_win}

    def triton(q, k, v):
        return kernels.window_attention(q, k, v, **win, impl="triton")

    def reference(q, k, v):
        return kernels.window_attention_reference(q, k, v, **win)

    return triton, reference, inputs


def _errors(name: str, device: str, dtype: torch.dtype) -> dict[str, float]:
    """Max abs errors of the Triton path vs the float32 reference: out, dq, dk, dv, and scales."""
    triton, reference, inputs = _case(name, device, dtype)
    ref_inputs = [t.detach().float().requires_grad_() for t in inputs]
    out, ref = triton(*inputs), reference(*ref_inputs)
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(9)).to(ref.device)
    got = torch.autograd.grad(out, inputs, grad.to(out.dtype))
    want = torch.autograd.grad(ref, ref_inputs, grad)
    errors = {"out": (out.float() - ref).abs().max().item(), "out_scale": ref.abs().max().item()}
    for key, a, b in zip(("dq", "dk", "dv"), got, want, strict=True):
        errors[key] = (a.float() - b).abs().max().item()
        errors[key + "_scale"] = b.abs().max().item()
    errors["dtype_ok"] = float(out.dtype == dtype and all(g.dtype == dtype for g in got))
    return errors


def _cross_region_change(device: str) -> float:
    """Largest output change outside a region when its keys and values are perturbed."""
    import kernels

    q, k, v = (t.detach() for t in _inputs((2, 48, 2, 6), (2, 48, 2, 4), device, torch.float32))
    regions = (torch.arange(96).view(2, 48) % 5).to(device)
    plan = kernels.region_plan(regions)
    out = kernels.region_attention(q, k, v, plan, impl="triton")
    inside = regions == 2
    k2, v2 = k.clone(), v.clone()
    k2[inside] *= 5.0
    v2[inside] += 1e4
    out2 = kernels.region_attention(q, k2, v2, plan, impl="triton")
    return (out2[~inside] - out[~inside]).abs().max().item()


def _interpreter_report() -> dict:
    report = {name: _errors(name, "cpu", torch.float32) for name in CASES}
    report["cross-region-change"] = _cross_region_change("cpu")
    import kernels._triton_segments as seg

    report["interpreted"] = type(seg._fwd_kernel).__name__ == "InterpretedFunction"
    return report


@pytest.fixture(scope="module")
def interpreter_report() -> dict:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop("MEDSEG_KERNELS", None)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_interpreter_really_interprets(interpreter_report) -> None:
    assert interpreter_report["interpreted"]
    assert "TRITON_INTERPRET" not in os.environ or os.environ["TRITON_INTERPRET"] != "1"


@pytest.mark.parametrize("name", CASES)
def test_interpreter_matches_reference(interpreter_report, name: str) -> None:
    errors = interpreter_report[name]
    assert errors["dtype_ok"]
    for key in ("out", "dq", "dk", "dv"):
        assert errors[key] <= FP32_TOL * max(1.0, errors[key + "_scale"]), (key, errors)


def test_interpreter_cross_region_weights_are_exactly_zero(interpreter_report) -> None:
    assert interpreter_report["cross-region-change"] == 0.0


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="compiles real kernels")
def test_kernels_compile_for_hopper_without_a_gpu() -> None:
    """The interpreter accepts code the compiler rejects: build bf16 sm_90 binaries here."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from kernels import _triton_segments as seg

    constants = {"D": 32, "DV": 32, "BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_D": 32, "BLOCK_DV": 32}
    constants["PRECISION"] = "tf32"
    tables, floats = {"TILE_SEG", "TILE_ROW", "CU_Q", "CU_KV"}, {"LSE", "DELTA"}
    for kernel in (seg._fwd_kernel, seg._bwd_dkdv_kernel, seg._bwd_dq_kernel):
        signature = {}
        for arg in kernel.arg_names:
            if arg in constants:
                signature[arg] = "constexpr"
            elif arg in tables or arg in floats:
                signature[arg] = "*i32" if arg in tables else "*fp32"
            elif arg.isupper():  # other pointers: q, k, v, outputs, gradients
                signature[arg] = "*bf16"
            else:
                signature[arg] = "fp32" if "scale" in arg else "i32"
        source = ASTSource(fn=kernel, signature=signature, constexprs=constants)
        options = {"enable_fp_fusion": True}  # as the launches pass it
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
        assert compiled.asm["cubin"]


@pytest.mark.gpu
@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_gpu_matches_reference(name: str, dtype: torch.dtype) -> None:
    errors = _errors(name, "cuda", dtype)
    assert errors["dtype_ok"]
    tol = (1e-4, 1e-4) if dtype == torch.float32 else (3e-2, 6e-2)
    for key in ("out", "dq", "dk", "dv"):
        bound = tol[key != "out"] * max(1.0, errors[key + "_scale"])
        assert errors[key] <= bound, (key, errors)


@pytest.mark.gpu
def test_gpu_cross_region_and_auto_dispatch() -> None:
    import kernels

    assert _cross_region_change("cuda") == 0.0
    assert kernels.resolve_impl("auto", op="region_attention", device="cuda") == "triton"
    q = torch.randn(1, 300, 4, 32, device="cuda", dtype=torch.bfloat16)
    regions = torch.randint(0, 9, (1, 300), device="cuda")
    out = kernels.region_attention(q, q, q, regions)  # auto: Triton
    ref = kernels.region_attention_torch(q, q, q, regions)
    torch.testing.assert_close(out, ref, rtol=3e-2, atol=3e-2)


if __name__ == "__main__":  # the interpreter subprocess of interpreter_report
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise SystemExit("run with TRITON_INTERPRET=1")
    torch.set_num_threads(1)
    print(json.dumps(_interpreter_report()))
