"""Input conventions shared by the SAM-family 2-D nets (DB-SAM, SAM2-SGP): the config checks,
the choice of the three input channels that form SAM's RGB input, and the image-shape check.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

__all__ = ["check_sam_config", "pick_rgb", "rgb_channels"]


def check_sam_config(
    name: str,
    *,
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    rgb: Sequence[int] | None,
) -> tuple[int, int, int]:
    """Validate a SAM-family net's data config; returns its RGB channel triple.

    Raises:
        ValueError: ``spatial_dims != 2`` (2-D nets; 3-D by propagation), ``out_channels < 2``
            (classes incl. background), or an unusable ``rgb`` (see :func:`rgb_channels`).
    """
    if spatial_dims != 2:
        raise ValueError(f"{name} is a 2-D net (3-D by propagation), got {spatial_dims}")
    if out_channels < 2:
        raise ValueError(f"out_channels counts classes incl. background, got {out_channels}")
    return rgb_channels(in_channels, rgb)


def rgb_channels(in_channels: int, rgb: Sequence[int] | None) -> tuple[int, int, int]:
    """The three input channels that form a SAM-family RGB input (validated): default
    ``(0, 0, 0)`` for one channel and ``(0, 1, 2)`` for three; anything else must be given."""
    if rgb is None:
        if in_channels == 1:
            return (0, 0, 0)
        if in_channels == 3:
            return (0, 1, 2)
        raise ValueError(f"{in_channels} input channels: choose three with rgb_channels")
    out = tuple(int(c) for c in rgb)
    if len(out) != 3 or not all(0 <= c < in_channels for c in out):
        raise ValueError(f"rgb_channels must be 3 indices < in_channels={in_channels}: {rgb}")
    return out  # type: ignore[return-value]


def pick_rgb(images: Tensor, in_channels: int, size: int, rgb: Sequence[int]) -> Tensor:
    """``images (B, in_channels, size, size)`` -> ``(B, 3, size, size)``: the ``rgb`` channels.

    Raises:
        ValueError: ``images`` has another shape.
    """
    if images.ndim != 4 or tuple(images.shape[1:]) != (in_channels, size, size):
        raise ValueError(
            f"images must be (B, {in_channels}, {size}, {size}), got {tuple(images.shape)}"
        )
    return images[:, list(rgb)]
