"""Sliding-window geometry shared by automatic segmentation and restoration: the window size
rule, how many windows MONAI visits, and the checks on a user's window size and batch that run
before any window is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from medseg.errors import InputError
from medseg.inference.memory import check_memory, window_need

__all__ = [
    "check_windows",
    "choose_roi",
    "count_windows",
    "has_window_statistics",
    "size_divisor",
]


def check_windows(
    extent: Sequence[int],
    roi: Sequence[int],
    batch: int,
    *,
    windows: int,
    explicit: bool,
    cap: Sequence[int] | None = None,
    upscale: int = 1,
    grid: str = "the image",
) -> None:
    """Refuse, before any window is allocated, a window size or batch that cannot work.

    Args:
        extent: spatial size the windows slide over.
        roi: window size (``len(extent)`` ints).
        batch: windows per forward pass (``--batch-size``).
        windows: how many windows the whole run visits (the batch never holds more).
        explicit: ``roi`` was given by the user (``--roi``): it may not exceed ``cap``.
        cap: largest useful window per axis (default ``extent``).
        upscale: output voxels per input voxel of a window (super-resolution).
        grid: how the message names what ``extent`` measures.

    Raises:
        InputError: ``bad_argument`` (an explicit window larger than ``cap``), or
            ``not_enough_memory`` (one batch of windows does not fit, see
            :func:`medseg.inference.memory.window_need`).
    """
    cap = list(extent) if cap is None else list(cap)
    sizes = ",".join(str(int(r)) for r in roi)
    if explicit and any(int(r) > int(c) for r, c in zip(roi, cap, strict=True)):
        most = ",".join(str(int(c)) for c in cap)
        raise InputError(
            "bad_argument",
            f"--roi {sizes} is larger than {grid} ({'x'.join(str(int(e)) for e in extent)}); "
            f"use sizes up to {most}",
        )
    per_pass = max(min(int(batch), int(windows)), 1)
    check_memory(
        window_need(math.prod(int(r) for r in roi), per_pass, upscale=upscale),
        what=f"a batch of {per_pass} window(s) of {sizes}",
        fix="lower --batch-size or --roi",
    )


def choose_roi(
    extent: Sequence[int], patch: Sequence[int], divisor: int, max_voxels: int
) -> list[int]:
    """Sliding-window size for an image of spatial size ``extent``.

    Starts at ``patch`` (rounded up to a multiple of ``divisor``) and grows one axis at a time by
    ``divisor`` (the axis that has grown least relative to the patch first) while the window
    holds at most ``max_voxels`` and no axis exceeds the image rounded up to ``divisor``.
    """
    d = max(int(divisor), 1)
    up = [d * math.ceil(int(p) / d) for p in patch]
    cap = [max(u, d * math.ceil(int(e) / d)) for u, e in zip(up, extent, strict=True)]
    roi = list(up)
    while True:
        order = sorted(range(len(roi)), key=lambda i: roi[i] / up[i])
        for i in order:
            grown = roi[:i] + [roi[i] + d] + roi[i + 1 :]
            if roi[i] < cap[i] and math.prod(grown) <= max_voxels:
                roi = grown
                break
        else:
            return roi


def size_divisor(net: nn.Module) -> int | None:
    """Spatial sizes the net accepts are multiples of this: its ``size_divisor`` attribute, or
    for MONAI's ``UNet`` the product of its strides; None when unknown."""
    if hasattr(net, "size_divisor"):
        return int(net.size_divisor)
    from monai.networks.nets import UNet

    if isinstance(net, UNet):
        total = 1
        for stride in net.strides:
            total *= int(max(stride) if isinstance(stride, Sequence) else stride)
        return total
    return None


def has_window_statistics(net: nn.Module) -> bool:
    """True when the net's output depends on the window it sees: a layer normalises over
    spatial positions per sample (instance or group norm), or the net says so with a true
    ``window_dependent`` attribute (global attention, e.g. HER-Seg)."""
    if getattr(net, "window_dependent", False):
        return True
    kinds = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm)
    return any(isinstance(m, kinds) for m in net.modules())


def count_windows(extent: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Number of windows MONAI's sliding window visits for one image."""
    n = 1
    for e, r in zip(extent, roi, strict=True):
        step = max(int(r * (1 - overlap)), 1)
        n *= 1 if e <= r else math.ceil((e - r) / step) + 1
    return n
