"""Label-map post-processing: keep the largest connected component per label (nnU-Net's only
post-processing, ANCHORS.md §1.5).

MONAI's ``KeepLargestConnectedComponent`` needs scikit-image (not a medseg dependency), so this
uses ``scipy.ndimage.label`` (SciPy comes with MONAI's metrics and nilearn). Removed voxels become
background (0), as in nnU-Net.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

__all__ = ["keep_largest_component"]


def keep_largest_component(
    labels: np.ndarray, which: Iterable[int] | None = None, *, connectivity: int | None = None
) -> np.ndarray:
    """Keep, for each label in ``which`` (default: every non-zero label present), only its
    largest connected component; the other components become 0.

    Args:
        labels: ``(X, Y, Z)`` (or any N-D) integer label map; not modified.
        which: label values to clean; labels absent from the map are ignored.
        connectivity: neighbourhood, 1 (faces) .. ``labels.ndim`` (full, the default: 26 in 3-D).

    Returns:
        A new array, same shape and dtype. Ties between equally large components keep the one
        with the lowest component index (first in C order).
    """
    from scipy import ndimage

    out = np.array(labels, copy=True)
    rank = out.ndim
    conn = rank if connectivity is None else int(connectivity)
    if not 1 <= conn <= rank:
        raise ValueError(f"connectivity must be in 1..{rank}, got {connectivity}")
    structure = ndimage.generate_binary_structure(rank, conn)
    present = {int(v) for v in np.unique(out) if v != 0}
    targets = present if which is None else present & {int(v) for v in which}
    for value in sorted(targets):
        mask = out == value
        components, count = ndimage.label(mask, structure=structure)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())[1:]
        keep = int(np.argmax(sizes)) + 1
        out[mask & (components != keep)] = 0
    return out
