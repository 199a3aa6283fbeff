"""kernels.linear_attention: torch and Triton paths == the reference; memory; dispatcher rules.

Triton runs on CPU under ``TRITON_INTERPRET=1``, which triton reads when ``@triton.jit`` decorates
a function (i.e. when :mod:`kernels._triton_linear` is imported), so those checks run in a
subprocess with the variable set.
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

import kernels
from kernels.linear import linear_attention_reference, linear_attention_torch

ROOT = Path(__file__).resolve().parents[1]

# (B, N, h, d, d_v, chunk_size, rope)
CASES = {
    "rope-odd-n": (2, 37, 3, 6, 5, 8, "shared"),
    "rope-per-head": (1, 50, 2, 8, 8, 16, "per-head"),
    "rope-one-chunk": (2, 9, 4, 4, 6, 64, "shared"),
    "plain-odd-d": (2, 33, 3, 5, 7, 10, None),
    "plain-chunk-1": (1, 7, 2, 4, 3, 1, None),
    "plain-her-seg": (1, 64, 24, 4, 4, 20, None),
}


def make_inputs(b, n, h, d, d_v, rope, dtype=torch.float32, seed=0):
    """Non-negative ``q, k`` (``elu + 1``), ``v``, and ``(cos, sin)`` tables (or None)."""
    gen = torch.Generator().manual_seed(seed)
    q = F.elu(torch.randn(b, n, h, d, generator=gen)) + 1
    k = F.elu(torch.randn(b, n, h, d, generator=gen)) + 1
    v = torch.randn(b, n, h, d_v, generator=gen)
    tables = None
    if rope is not None:
        angle = torch.randn(n, h if rope == "per-head" else 1, d // 2, generator=gen) * 3
        tables = (angle.cos(), angle.sin())
    return [t.to(dtype).requires_grad_() for t in (q, k, v)], tables


def forward_and_grads(fn, inputs, grad, **kwargs):
    out = fn(*inputs, **kwargs)
    return out, torch.autograd.grad(out, inputs, grad)


@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_path_equals_reference(name: str) -> None:
    b, n, h, d, d_v, chunk, rope = CASES[name]
    inputs, tables = make_inputs(b, n, h, d, d_v, rope)
    grad = torch.randn(b, n, h, d_v)
    got, got_g = forward_and_grads(
        linear_attention_torch, inputs, grad, rope=tables, chunk_size=chunk
    )
    want, want_g = forward_and_grads(linear_attention_reference, inputs, grad, rope=tables)
    assert got.shape == (b, n, h, d_v) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for a, w in zip(got_g, want_g, strict=True):
        torch.testing.assert_close(a, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rope", [None, "per-head"])
def test_torch_path_gradcheck_float64(rope: str | None) -> None:
    inputs, tables = make_inputs(2, 11, 2, 4, 3, rope, dtype=torch.float64)
    tables = tables and tuple(t.double() for t in tables)

    def fn(q, k, v):
        return linear_attention_torch(q, k, v, rope=tables, chunk_size=4)

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("rope", [None, "shared"])
def test_torch_path_bf16(rope: str | None) -> None:
    """bf16 in and out, float32 accumulation: within bf16 rounding (2 ** -8) of the reference."""
    inputs, tables = make_inputs(2, 301, 4, 8, 16, rope, dtype=torch.bfloat16)
    grad = torch.randn(2, 301, 4, 16).bfloat16()
    got, got_g = forward_and_grads(linear_attention_torch, inputs, grad, rope=tables, chunk_size=64)
    want, want_g = forward_and_grads(linear_attention_reference, inputs, grad, rope=tables)
    assert got.dtype == torch.bfloat16 and all(g.dtype == torch.bfloat16 for g in got_g)
    torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2)
    for a, w in zip(got_g, want_g, strict=True):
        torch.testing.assert_close(a, w, rtol=2e-2, atol=2e-2)


def test_strided_inputs_and_partial_grads() -> None:
    """q and k as views of one projection (HER-Seg's ``Linear(dim, 2 dim)``); only v needs grad."""
    gen = torch.Generator().manual_seed(1)
    qk = F.elu(torch.randn(2, 40, 2, 3, 4, generator=gen)) + 1  # (B, N, 2, h, d)
    q, k = qk[:, :, 0], qk[:, :, 1]
    v = torch.randn(2, 40, 3, 4, generator=gen).requires_grad_()
    out = kernels.linear_attention(q, k, v, chunk_size=16, impl="torch")
    (got,) = torch.autograd.grad(out.square().sum(), v)
    ref = linear_attention_reference(q, k, v)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, torch.autograd.grad(ref.square().sum(), v)[0])


def test_rope_tables_with_grad_use_the_reference() -> None:
    inputs, (cos, sin) = make_inputs(1, 12, 2, 4, 4, "shared")
    cos, sin = cos.requires_grad_(), sin.requires_grad_()
    out = kernels.linear_attention(*inputs, rope=(cos, sin), impl="torch")
    got = torch.autograd.grad(out.sum(), (cos, sin))
    ref = linear_attention_reference(*inputs, rope=(cos, sin))
    for a, w in zip(got, torch.autograd.grad(ref.sum(), (cos, sin)), strict=True):
        torch.testing.assert_close(a, w)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_memory_is_linear_in_tokens() -> None:
    """N = 65,536: an N x N float32 matrix per head would be 16 GiB; forward + backward of the
    torch path stays within a small multiple of the inputs (peak resident set size, reset
    through /proc/self/clear_refs just before the call)."""
    n, h, d = 65_536, 2, 8
    inputs, _ = make_inputs(1, n, h, d, d, None)
    grad = torch.randn(1, n, h, d)
    size = grad.numel() * grad.element_size()  # 4 MiB: one of q, k, v, out

    def step():
        out = linear_attention_torch(*inputs, chunk_size=4096)
        return out, torch.autograd.grad(out, inputs, grad)

    step()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _proc_status_kib("VmRSS")
    kept = step()
    peak = (_proc_status_kib("VmHWM") - before) * 1024
    assert len(kept) == 2
    assert peak <= 6 * size, f"peak {peak / 2**20:.1f} MiB for 4 x {size / 2**20:.0f} MiB results"


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def test_dispatch_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    inputs, _ = make_inputs(1, 8, 1, 2, 2, None)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    with pytest.raises(kernels.KernelUnavailableError, match="on cpu.*TRITON_INTERPRET=1"):
        kernels.linear_attention(*inputs, impl="triton")
    monkeypatch.setenv(kernels.ENV_VAR, "triton")
    with pytest.raises(kernels.KernelUnavailableError, match=r"\$MEDSEG_KERNELS"):
        kernels.linear_attention(*inputs)
    with pytest.raises(ValueError, match="must be one of"):
        kernels.linear_attention(*inputs, impl="cuda")
    ref = linear_attention_reference(*inputs)
    for impl in ("auto", "torch"):
        torch.testing.assert_close(kernels.linear_attention(*inputs, impl=impl), ref)


@pytest.mark.parametrize(
    "shapes, rope, message",
    [
        (((1, 4, 2, 3), (1, 4, 2, 3), (1, 4, 2)), None, "expected q, k"),
        (((1, 4, 2, 3), (1, 5, 2, 3), (1, 4, 2, 3)), None, "expected q, k"),
        (((1, 0, 2, 4), (1, 0, 2, 4), (1, 0, 2, 4)), None, "at least one token"),
        (((1, 4, 2, 3), (1, 4, 2, 3), (1, 4, 2, 3)), (4, 2, 1), "even head dim"),
        (((1, 4, 2, 4), (1, 4, 2, 4), (1, 4, 2, 4)), (5, 2, 2), "do not broadcast"),
    ],
)
def test_bad_inputs(shapes, rope, message: str) -> None:
    q, k, v = (torch.rand(s) for s in shapes)
    tables = None if rope is None else (torch.ones(rope), torch.zeros(rope))
    with pytest.raises(ValueError, match=message):
        kernels.linear_attention(q, k, v, rope=tables, impl="torch")
    with pytest.raises(ValueError, match="chunk_size"):
        linear_attention_torch(*(torch.rand(1, 4, 2, 4) for _ in range(3)), chunk_size=0)


_INTERPRETER_SCRIPT = """
import json, sys, torch
sys.path.insert(0, "tests")
import kernels
from kernels import _triton_linear as tl_mod
from kernels.linear import linear_attention_reference
from test_kernels_linear import make_inputs, forward_and_grads

report = {"interpreted": type(tl_mod._out_kernel).__name__}
cases = {  # B, N, h, d, d_v, rope, dtype, block_n, splits
    "rope-odd-n-splits": (2, 37, 3, 6, 5, "shared", torch.float32, 16, 2),
    "rope-per-head": (1, 50, 2, 8, 8, "per-head", torch.float32, 16, None),
    "plain-odd-d": (1, 45, 2, 7, 4, None, torch.float32, 16, 3),
    "her-seg-d4": (1, 40, 6, 4, 4, "shared", torch.float32, 32, 1),
    "bf16": (2, 33, 2, 8, 16, "shared", torch.bfloat16, 16, 2),
}
for name, (b, n, h, d, d_v, rope, dtype, block_n, splits) in cases.items():
    inputs, tables = make_inputs(b, n, h, d, d_v, rope, dtype=dtype)
    grad = torch.randn(b, n, h, d_v).to(dtype)
    got, got_g = forward_and_grads(
        tl_mod.linear_attention_triton, inputs, grad, rope=tables, block_n=block_n, splits=splits
    )
    want, want_g = forward_and_grads(linear_attention_reference, inputs, grad, rope=tables)
    pairs = zip((got, *got_g), (want, *want_g))
    errs = [(a.float() - w.float()).abs().max().item() for a, w in pairs]
    report[name] = {"errors": errs, "dtypes": [str(t.dtype) for t in (got, *got_g)]}
inputs, tables = make_inputs(1, 20, 2, 4, 4, "shared")
out = kernels.linear_attention(*inputs, rope=tables, impl="triton")
report["dispatch"] = (out - linear_attention_reference(*inputs, rope=tables)).abs().max().item()
# strided q, k (views of one projection) and a stride-0 upstream gradient (from .sum())
qk = (torch.rand(2, 30, 2, 3, 4) + 0.1).requires_grad_()
v = torch.randn(2, 30, 3, 4).requires_grad_()
errs = []
for fn in (tl_mod.linear_attention_triton, linear_attention_reference):
    o = fn(qk[:, :, 0], qk[:, :, 1], v)
    errs.append([o, *torch.autograd.grad(o.sum(), (qk, v))])
report["strided"] = {
    "errors": [(a - w).abs().max().item() for a, w in zip(*errs)],
    "dtypes": ["torch.float32"],
}
print(json.dumps(report))
"""


def test_triton_interpreter_equals_reference() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    env.pop("MEDSEG_KERNELS", None)
    proc = subprocess.run(
        [sys.executable, "-c", _INTERPRETER_SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report.pop("interpreted") == "InterpretedFunction"
    assert report.pop("dispatch") < 1e-5
    for name, result in report.items():
        tol = 2e-2 if name == "bf16" else 1e-5
        assert max(result["errors"]) < tol, (name, result)
        want = "torch.bfloat16" if name == "bf16" else "torch.float32"
        assert set(result["dtypes"]) == {want}, (name, result)


def test_triton_kernels_compile_for_sm90() -> None:
    """The real compiler (not the interpreter) accepts every kernel: TTIR -> PTX -> cubin for
    sm_90, no GPU needed. Catches what the interpreter lets through (constexpr scoping, dot
    shapes, dtypes)."""
    pytest.importorskip("triton")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["ok"] * 4


_COMPILE_SCRIPT = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kernels import _triton_linear as m

meta = {"HAS_ROPE": True, "BLOCK_N": 64, "BLOCK_H": 16, "BLOCK_V": 16}
for fn in (m._reduce_kernel, m._out_kernel, m._grad_q_kernel, m._grad_kv_kernel):
    sig = {}
    for a in fn.arg_names:
        if a in meta:
            sig[a] = "constexpr"
        elif a.endswith("_ptr") or a.startswith("part"):
            small = a.startswith(("part", "s_", "ds_", "kbar", "dkbar", "cos", "sin"))
            sig[a] = "*fp32" if small else "*bf16"
        else:
            sig[a] = "fp32" if a == "eps" else "i32"
    consts = {(fn.arg_names.index(k),): v for k, v in meta.items()}
    src = ASTSource(fn=fn, signature=sig, constexprs=consts)
    triton.compile(src, target=GPUTarget("cuda", 90, 32))
    print("ok")
"""


@pytest.mark.gpu
@pytest.mark.parametrize("rope", [None, "shared"])
@pytest.mark.parametrize(
    "shape, dtype",
    [
        ((2, 4096, 6, 16, 16), torch.float32),
        ((1, 4096, 24, 4, 4), torch.float32),
        ((1, 16_384, 4, 32, 32), torch.float32),
        ((2, 1000, 3, 6, 10), torch.float32),
        ((1, 4096, 12, 8, 8), torch.bfloat16),
    ],
)
def test_triton_cuda_equals_reference(shape, dtype, rope: str | None) -> None:
    inputs, tables = make_inputs(*shape, rope, dtype=dtype)
    inputs = [t.detach().cuda().requires_grad_() for t in inputs]
    tables = tables and tuple(t.cuda() for t in tables)
    grad = torch.randn(*shape[:3], shape[4], device="cuda").to(dtype)
    got, got_g = forward_and_grads(kernels.linear_attention, inputs, grad, rope=tables, impl="auto")
    want, want_g = forward_and_grads(linear_attention_reference, inputs, grad, rope=tables)
    tol = {"rtol": 2e-2, "atol": 2e-2} if dtype == torch.bfloat16 else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(got, want, **tol)
    for a, w in zip(got_g, want_g, strict=True):
        torch.testing.assert_close(a, w, **tol)


def test_bench_runs_on_a_tiny_size() -> None:
    """bench/kernels_linear.py's ``run`` (imported by bench/kernels.py) on N = 256."""
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "kernels_linear", ROOT / "bench/kernels_linear.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.run(argparse.Namespace(quick=True, repeats=None, sizes=[256], device="cpu"))
    assert [r["path"] for r in rows] == ["torch", "reference", "sdpa"]
    assert rows[0]["max_abs_err"] < 1e-5 and rows[0]["fwd_vs_sdpa"] > 0
    assert "| h4 d32 | 256 | torch |" in bench.table(rows)
    # the summary names every target, measured or not (N = 256 measures none of them)
    lines = bench.summary(rows).splitlines()
    assert lines == [
        "- h4 d32, N=16384: torch vs SDPA not measured in this run (target >= 30x)",
        "- h4 d32, N=65536: torch vs SDPA not measured in this run (target >= 50x)",
        "- h4 d32: torch time(65,536) / time(4,096) not measured in this run "
        "(needs both sizes; target <= 20)",
    ]
    # a measured target line carries both paths' peaks (fake rows: the numbers are the test's)
    fake = [dict(r, N=16_384) for r in rows]
    for r in fake:
        r["fwd_vs_sdpa"], r["fwd_bwd_vs_sdpa"] = 100.0, 50.0
        r["peak_fwd_mib"], r["peak_fwd_bwd_mib"] = 1.0, 2.0
    assert (
        "- h4 d32, N=16384: torch vs SDPA fwd 100x, fwd+bwd 50x (target >= 30x); "
        "peak fwd / fwd+bwd MiB: torch 1 / 2, SDPA 1 / 2" in bench.summary(fake)
    )


def test_bench_kernels_prints_the_linear_report(monkeypatch, capsys) -> None:
    """``python -m bench.kernels --op linear`` prints bench/kernels_linear.py's table and target
    lines (one source of truth: bench/kernels.py only calls its ``run`` and ``report``)."""
    import sys

    from bench import kernels as bench_kernels

    argv = ["bench.kernels", "--op", "linear", "--sizes", "256", "--repeats", "1", "--wait", "0"]
    monkeypatch.setattr(sys, "argv", argv)
    threads = torch.get_num_threads()
    try:
        bench_kernels.main()
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "### linear" in out and "| h4 d32 | 256 | sdpa |" in out
    assert "torch vs SDPA not measured in this run (target >= 50x)" in out
    assert "time(65,536) / time(4,096) not measured in this run" in out
