"""The preview PNG: a montage of slices through the object with the label overlay."""

from __future__ import annotations

import numpy as np

from medseg.transforms.planes import PlaneView
from medseg.viz.core import (
    apply_window,
    montage,
    overlay_labels,
    percentile_window,
    pick_slices,
    png_bytes,
    resample_aspect,
)


def render_preview(
    image: np.ndarray,
    affine: np.ndarray,
    labels: np.ndarray,
    axis: str,
    *,
    window: tuple[float, float] | None = None,
    count: int = 8,
    opacity: float = 0.35,
) -> bytes:
    """PNG bytes of up to ``count`` ``axis`` slices spread over the object (display orientation).

    ``image`` is ``(X, Y, Z)`` (or ``(C, X, Y, Z)``: channel 0 is shown) with voxel -> RAS
    ``affine (4, 4)``; ``labels`` is ``(X, Y, Z)`` on the same grid; ``window`` is
    ``(level, width)`` or None for the MR percentile window.
    """
    image = image if image.ndim == 3 else image[0]
    view = PlaneView.from_affine(affine, image.shape, axis)
    level, width = window if window is not None else percentile_window(image)
    img_stack, lab_stack = view.stack(image), view.stack(labels)
    tiles = []
    for index in pick_slices(lab_stack, count):
        grey = apply_window(img_stack[index], level, width)
        labels_2d = np.ascontiguousarray(lab_stack[index])
        rgb = overlay_labels(grey, labels_2d, opacity=opacity)
        rgb = overlay_labels(rgb, labels_2d, outline=True)  # edges stay visible on bright tissue
        tiles.append(resample_aspect(rgb, view.pixel_spacing))
    return png_bytes(montage(tiles, columns=4))
