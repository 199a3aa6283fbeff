"""Device and precision resolution for inference (``device="auto"`` everywhere, DESIGN rule 10).

:func:`resolve_device` is defined once, in :mod:`medseg.models.device` (the model loaders need it
too), and re-exported here beside the precision choice.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from pathlib import Path
from typing import Literal

import torch

from medseg.models.device import resolve_device

__all__ = [
    "Precision",
    "configure_cpu_allocator",
    "cpu_has_fast_bf16",
    "resolve_device",
    "resolve_precision",
]

Precision = Literal["fp32", "bf16"]

_BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """``"auto"`` -> ``"bf16"`` on CUDA with bf16 support and on CPUs with native bf16
    instructions (AMX-BF16 or AVX512-BF16), else ``"fp32"``; ``"fp32"``/``"bf16"`` pass through.

    Raises:
        ValueError: ``precision`` is not one of ``"auto"``, ``"fp32"``, ``"bf16"``.
    """
    if precision in ("fp32", "bf16"):
        return precision  # type: ignore[return-value]
    if precision != "auto":
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_fast_bf16() else "fp32"


def cpu_has_fast_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """True when this CPU runs bf16 matmuls natively (AMX-BF16 or AVX512-BF16).

    Without those instructions bf16 is emulated and slower than fp32. torch's
    ``get_cpu_capability()`` only says "AVX512" even on AMX parts, so the kernel's CPU flags are
    read (Linux); elsewhere torch's own AVX512-BF16/AMX probes are used when present.
    """
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AMX", "AVX512_BF16"):
        return False
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return _torch_reports_bf16()
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(_BF16_CPU_FLAGS & set(line.partition(":")[2].split()))
    return _torch_reports_bf16()


def _torch_reports_bf16() -> bool:
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def configure_cpu_allocator(keep_bytes: int = 1 << 30) -> bool:
    """Process-wide, for entry points only: let glibc keep large freed blocks for reuse.

    By default glibc serves every block above 32 MiB with a fresh ``mmap`` and unmaps it on
    free, so each large activation (LiteMedSAM's first stage is 32-64 MiB per tensor) is
    page-faulted in again on every forward pass. Raising the mmap and trim thresholds to
    ``keep_bytes`` keeps those pages in the heap. Measured on a 2-core AVX512 CPU: LiteMedSAM
    encoder fp32 1.38 -> 0.67 s, bf16 0.50 -> 0.34 s per slice. The cost is that up to
    ``keep_bytes`` of freed memory is not returned to the OS.

    Returns True when applied (Linux with glibc), False elsewhere. Library code never calls
    this; the CLI or an application may, once, at start-up.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    value = min(int(keep_bytes), 2**31 - 1)
    return bool(mallopt(_M_MMAP_THRESHOLD, value)) and bool(mallopt(_M_TRIM_THRESHOLD, value))
