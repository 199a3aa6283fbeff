"""Blocks shared by several models. ``attention`` is the only module that imports :mod:`kernels`."""

from .attention import (
    WindowCrossAttention,
    check_impl,
    linear_attention,
    region_attention,
    region_plan,
)

__all__ = [
    "WindowCrossAttention",
    "check_impl",
    "linear_attention",
    "region_attention",
    "region_plan",
]
