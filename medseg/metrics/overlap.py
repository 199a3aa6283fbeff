"""Dice of two binary masks in numpy: the one Dice of medseg outside the training metrics.

**Empty masks.** Dice ``2|A∩B| / (|A| + |B|)`` is undefined when both masks are empty. The rule,
as in :class:`medseg.metrics.SegmentationMetrics`, nnU-Net and Metrics Reloaded: the score is
**NaN** (the case says nothing about that label and is left out of means; ``medseg evaluate``
writes NaN there). A caller that wants two empty masks to count as perfect agreement says so
with ``empty=1.0``. Exactly one empty mask scores 0.

Imports only numpy (no torch), so the statistics and evaluation code stays light.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["dice"]


def dice(a: np.ndarray, b: np.ndarray, *, empty: float = math.nan) -> float:
    """Dice coefficient of two masks of the same shape (any dims; non-zero = inside).

    Args:
        a, b: masks, bool or numeric, equal shapes.
        empty: the value when both masks are empty (default NaN; see the module docstring).

    Returns:
        ``2|A∩B| / (|A| + |B|)`` in ``[0, 1]``, or ``empty``.

    Raises:
        ValueError: the shapes differ.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"masks of different shapes: {a.shape} and {b.shape}")
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return float(empty)
    return 2.0 * int(np.count_nonzero(a & b)) / total
