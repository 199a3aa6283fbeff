"""Which implementation of a kernel runs: explicit argument > ``$MEDSEG_KERNELS`` > ``"auto"``.

Every op has three paths:

- the **reference** (``<op>_reference``): the spec, simple and obviously right; tests compare
  every other path against it (some references are quadratic in memory: tests only);
- ``"torch"``: the fast pure-torch path (runs everywhere; the CPU path);
- ``"triton"``: Triton forward and backward kernels (CUDA tensors; CPU tensors too when
  ``TRITON_INTERPRET=1``, which is how the normal test run checks them without a GPU).

``"auto"`` runs Triton for CUDA tensors when Triton is importable and the torch path otherwise.
Asking for ``"triton"`` where it cannot run raises :class:`KernelUnavailableError` saying why.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from typing import Literal

import torch

__all__ = [
    "ENV_VAR",
    "IMPLS",
    "Impl",
    "KernelUnavailableError",
    "check_impl",
    "resolve_impl",
    "triton_status",
]

Impl = Literal["auto", "torch", "triton"]
IMPLS: tuple[str, ...] = ("auto", "torch", "triton")
ENV_VAR = "MEDSEG_KERNELS"


class KernelUnavailableError(RuntimeError):
    """An implementation was requested explicitly but cannot run here (the message says why)."""


def check_impl(impl: str | None, *, op: str) -> tuple[str, str]:
    """Validate the requested name without looking at devices.

    Returns:
        ``(name, source)``: the name (``None`` reads ``$MEDSEG_KERNELS``, unset or empty means
        ``"auto"``) and where it came from, for messages.

    Raises:
        ValueError: the name is not one of :data:`IMPLS`.
    """
    source = "argument impl"
    if impl is None:
        impl = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
        source = f"${ENV_VAR}"
    if impl not in IMPLS:
        raise ValueError(f"{op}: {source} must be one of {', '.join(IMPLS)}; got {impl!r}")
    return impl, source


def triton_status(device: torch.device | str | None) -> tuple[bool, str]:
    """``(True, "")`` when Triton kernels can run on tensors of ``device``, else
    ``(False, why)``."""
    if importlib.util.find_spec("triton") is None:
        return False, "the triton package is not installed (it ships with CUDA builds of torch)"
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return True, ""
    if os.environ.get("TRITON_INTERPRET", "") == "1":
        return True, ""
    return False, f"tensors are on {dev.type}; Triton kernels need CUDA (or TRITON_INTERPRET=1)"


def resolve_impl(
    impl: str | None, *, op: str, device: torch.device | str | None = None
) -> Literal["torch", "triton"]:
    """The implementation to run for tensors on ``device``.

    Args:
        impl: ``"auto"``, ``"torch"``, ``"triton"``, or ``None`` to read ``$MEDSEG_KERNELS``.
        op: the kernel's name, used in error messages.
        device: where the inputs live (``None``: CPU).

    Raises:
        ValueError: the name is not one of :data:`IMPLS`.
        KernelUnavailableError: ``"triton"`` was requested and cannot run (the reason is named).
    """
    name, source = check_impl(impl, op=op)
    if name == "torch":
        return "torch"
    ok, why = triton_status(device)
    if name == "triton" and not ok:
        raise KernelUnavailableError(
            f"{op}: impl='triton' (from {source}) cannot run here: {why}; use 'torch' or 'auto'"
        )
    if name == "auto":
        dev = torch.device(device) if device is not None else torch.device("cpu")
        if dev.type == "cuda" and not ok:
            _log_fallback(op, why)
        return "triton" if ok and dev.type == "cuda" else "torch"
    return "triton"


@functools.cache
def _log_fallback(op: str, why: str) -> None:
    """Debug-log once per (op, reason) that ``auto`` runs the torch path on CUDA tensors."""
    logging.getLogger("kernels").debug("%s: auto uses the torch path on CUDA: %s", op, why)
