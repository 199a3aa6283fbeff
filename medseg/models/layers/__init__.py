"""Blocks shared by several models. ``attention`` is the only module that imports :mod:`kernels`."""

from .attention import WindowCrossAttention

__all__ = ["WindowCrossAttention"]
