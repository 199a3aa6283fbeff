"""Attention kernels for medseg's models: the torch reference is the spec, one dispatcher per op.

``window_attention(q, k, v, *, q_window, kv_window, impl=None)`` is WAU's window cross-attention
(see :mod:`kernels.window`). ``impl`` is ``"auto"``, ``"torch"`` or ``"triton"``; ``None`` reads
``$MEDSEG_KERNELS`` (default ``"auto"``). Only the torch reference exists today: the Triton path
lands with the kernels issue, and asking for it raises :class:`KernelUnavailableError`.

Note: PyPI has an unrelated distribution called ``kernels``; medseg never depends on it.
"""

from ._dispatch import ENV_VAR, IMPLS, KernelUnavailableError, resolve_impl
from .window import window_attention, window_attention_torch

__all__ = [
    "ENV_VAR",
    "IMPLS",
    "KernelUnavailableError",
    "resolve_impl",
    "window_attention",
    "window_attention_torch",
]
