"""Which implementation of a kernel runs: explicit argument > ``$MEDSEG_KERNELS`` > ``"auto"``.

``"torch"`` is the reference (the spec; runs everywhere). ``"triton"`` is the accelerator path,
which lands with the kernels issue; asking for it explicitly (argument or environment) raises
:class:`KernelUnavailableError` naming why. ``"auto"`` picks the fastest path that can run and
currently always means ``"torch"``.
"""

from __future__ import annotations

import os
from typing import Literal

__all__ = ["ENV_VAR", "IMPLS", "Impl", "KernelUnavailableError", "resolve_impl"]

Impl = Literal["auto", "torch", "triton"]
IMPLS: tuple[str, ...] = ("auto", "torch", "triton")
ENV_VAR = "MEDSEG_KERNELS"


class KernelUnavailableError(RuntimeError):
    """An implementation was requested explicitly but cannot run here (the message says why)."""


def resolve_impl(impl: str | None, *, op: str) -> Impl:
    """Validate and return the requested implementation name.

    Args:
        impl: ``"auto"``, ``"torch"``, ``"triton"``, or ``None`` to read ``$MEDSEG_KERNELS``
            (unset or empty means ``"auto"``).
        op: the kernel's name, used in error messages.

    Returns:
        ``"auto"`` or ``"torch"`` (``"triton"`` cannot run yet).

    Raises:
        ValueError: the name is not one of :data:`IMPLS`.
        KernelUnavailableError: ``"triton"`` was requested.
    """
    source = "argument impl"
    if impl is None:
        impl = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
        source = f"${ENV_VAR}"
    if impl not in IMPLS:
        raise ValueError(f"{op}: {source} must be one of {', '.join(IMPLS)}; got {impl!r}")
    if impl == "triton":
        raise KernelUnavailableError(
            f"{op}: impl='triton' (from {source}) is not available yet: the Triton path lands "
            "with the kernels issue; use 'torch' or 'auto'"
        )
    return impl  # type: ignore[return-value]
