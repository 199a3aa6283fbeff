"""Attention kernels for medseg's models: the torch reference is the spec, one dispatcher per op.

- ``window_attention(q, k, v, *, q_window, kv_window, impl=None)``: WAU's window
  cross-attention (see :mod:`kernels.window`);
- ``region_attention(q, k, v, regions, *, impl=None)``: RAT's region self-attention, with
  ``regions`` a ``(B, N)`` id map or a reusable ``region_plan(regions)`` (see
  :mod:`kernels.region`).

Each op has a ``<op>_reference`` (the spec, for tests), a fast pure-torch path and Triton forward
and backward kernels (one varlen "segment" flash-attention pair, :mod:`kernels._triton_segments`).
``impl`` is ``"auto"``, ``"torch"`` or ``"triton"``; ``None`` reads ``$MEDSEG_KERNELS`` (default
``"auto"``: Triton for CUDA tensors, torch otherwise). Asking for ``"triton"`` where it cannot
run (CPU tensors without ``TRITON_INTERPRET=1``, no triton package) raises
:class:`KernelUnavailableError` saying why.

Note: PyPI has an unrelated distribution called ``kernels``; medseg never depends on it.
"""

from ._dispatch import ENV_VAR, IMPLS, KernelUnavailableError, check_impl, resolve_impl
from .linear import linear_attention, linear_attention_reference
from .region import (
    RegionPlan,
    region_attention,
    region_attention_reference,
    region_attention_torch,
    region_plan,
)
from .window import window_attention, window_attention_reference, window_attention_torch

__all__ = [
    "ENV_VAR",
    "IMPLS",
    "KernelUnavailableError",
    "RegionPlan",
    "check_impl",
    "linear_attention",
    "linear_attention_reference",
    "region_attention",
    "region_attention_reference",
    "region_attention_torch",
    "region_plan",
    "resolve_impl",
    "window_attention",
    "window_attention_reference",
    "window_attention_torch",
]
