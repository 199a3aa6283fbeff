"""Checks of plain option values, run before any file is read or model touched.

Every refusal is an :class:`~medseg.errors.InputError` (exit 2, ``bad_argument`` unless said
otherwise) whose line names the CLI option and the Python keyword, so the same message serves
``medseg segment`` and ``medseg.segment(...)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from medseg.errors import InputError

__all__ = [
    "MAX_LABEL",
    "RUNTIMES",
    "check_label",
    "check_overlap",
    "check_positive",
    "check_slices",
    "check_window",
    "label_list",
    "parse_roi",
]

#: the largest label value an output label map holds (uint16)
MAX_LABEL = 65535
#: where LiteMedSAM's encoder runs (mirrors ``medseg.inference.runtimes.RUNTIMES``, which loads
#: torch)
RUNTIMES = ("auto", "torch", "openvino")


def check_label(label: int) -> int:
    """A label value for the object: an integer in 1..65535 (0 is background)."""
    if isinstance(label, bool) or not isinstance(label, int) or not 1 <= label <= MAX_LABEL:
        raise InputError(
            "bad_argument",
            f"--label (label=) must be an integer from 1 to {MAX_LABEL} (0 is background), "
            f"got {label!r}",
        )
    return label


def check_window(window: Sequence[float] | None) -> tuple[float, float] | None:
    """``(level, width)`` with finite numbers and ``width > 0``, or None."""
    if window is None:
        return None
    values = tuple(float(v) for v in window)
    if len(values) != 2 or not all(math.isfinite(v) for v in values) or values[1] <= 0:
        raise InputError(
            "bad_argument",
            f"--window (window=) is level,width with width > 0 (e.g. 40,400), got "
            f"{','.join(f'{v:g}' for v in values)}",
        )
    return values  # type: ignore[return-value]


def check_slices(slices: Sequence[int] | None) -> tuple[int, int] | None:
    """``(lo, hi)`` voxel slice indices with ``0 <= lo <= hi``, or None."""
    if slices is None:
        return None
    values = tuple(slices)
    if (
        len(values) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        or not 0 <= values[0] <= values[1]
    ):
        raise InputError(
            "bad_argument",
            f"--slices (slices=) is LO,HI with 0 <= LO <= HI, got {list(values)}",
        )
    return values  # type: ignore[return-value]


def check_overlap(overlap: float) -> float:
    """A sliding-window overlap in ``[0, 1)``."""
    if not (isinstance(overlap, (int, float)) and 0 <= overlap < 1):
        raise InputError("bad_argument", f"--overlap (overlap=) must be in [0, 1), got {overlap}")
    return float(overlap)


def check_positive(value: int | None, what: str, *, minimum: int = 1) -> int | None:
    """An integer option ``>= minimum`` (or None); ``what`` names it (``"--batch-size"``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError("bad_argument", f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def parse_roi(roi: str | Sequence[int] | None, *, keywords: Sequence[str] = ("auto", "patch")):
    """``"auto"``/``"patch"`` (when allowed), None, or positive window sizes (``"96,96,96"``)."""
    if roi is None or (isinstance(roi, str) and roi in keywords):
        return roi
    try:
        sizes = [int(v) for v in (roi.replace(" ", "").split(",") if isinstance(roi, str) else roi)]
    except (TypeError, ValueError):
        allowed = " or ".join([*keywords, "sizes like 96,96,96"])
        raise InputError("bad_argument", f"--roi (roi=) takes {allowed}: {roi!r}") from None
    if not sizes or min(sizes) < 1:
        raise InputError("bad_argument", f"--roi (roi=) sizes must be positive: {roi!r}")
    return sizes


def label_list(labels: bool | str | Sequence[int] | None) -> bool | list[int]:
    """``--largest-component``: False, True (every label) or label values (``"1,3"``)."""
    if labels is None or labels is False:
        return False
    if labels is True or labels == "all":
        return True
    try:
        values = [int(v) for v in (labels.split(",") if isinstance(labels, str) else labels)]
    except (TypeError, ValueError):
        raise InputError(
            "bad_argument",
            f"--largest-component takes label values like 1,3, got {labels!r} (put the option "
            "after IN, or write --largest-component=all)",
        ) from None
    if any(not 1 <= v <= MAX_LABEL for v in values):
        raise InputError("bad_argument", f"--largest-component labels must be 1..{MAX_LABEL}")
    return values
