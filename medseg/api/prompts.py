"""Prompts as plain data: :class:`Box` and :class:`Point`, in display pixels or RAS millimetres.

Coordinates (the same as ``medseg segment`` and the viewer, see the README's "Coordinates"):

- ``space="pixel"``: a position on slice ``slice`` of plane ``axis`` **as displayed** by medseg
  (radiological convention, from the affine): ``x`` is the column, ``y`` the row, origin at the
  top-left pixel, inclusive. ``slice`` is the voxel index along the volume axis closest to the
  plane normal. A box is ``(x0, y0, x1, y1)``, a point ``(x, y)``.
- ``space="mm"``: RAS millimetres (what 3D Slicer shows). A box is two opposite corners
  ``(x0, y0, z0, x1, y1, z1)``, a point ``(x, y, z)``; the slice follows from the positions
  unless ``slice`` is given.

A point's ``label`` is 1 (object) or 0 (background). All prompts of one call must lie on the
same plane and slice and use one space. The JSON form (:func:`read_prompts`, ``--prompts``)
is a list of objects, or ``{"prompts": [...]}``::

    [{"box": [23, 20, 173, 210], "axis": "axial", "slice": 94},
     {"point": [100, 90], "label": 0, "axis": "axial", "slice": 94}]
    [{"box_mm": [-60, -80, 10, 60, 40, 10]}]
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medseg.errors import InputError

__all__ = ["AXES", "Box", "Point", "Prompt", "display_prompt", "prompts_from_json", "read_prompts"]

AXES = ("axial", "coronal", "sagittal")
SPACES = ("pixel", "mm")


@dataclass(frozen=True)
class Box:
    """A box prompt. ``corners``: ``(x0, y0, x1, y1)`` display pixels (``space="pixel"``) or
    ``(x0, y0, z0, x1, y1, z1)`` RAS mm (``space="mm"``). ``slice`` is required for pixels."""

    corners: tuple[float, ...]
    axis: str = "axial"
    slice: int | None = None
    space: str = "pixel"

    def __post_init__(self) -> None:
        object.__setattr__(self, "corners", _numbers(self.corners, 4 if _pixel(self) else 6))
        _check_place(self)

    def to_dict(self) -> dict[str, Any]:
        key = "box" if self.space == "pixel" else "box_mm"
        return {key: list(self.corners), "axis": self.axis, "slice": self.slice}


@dataclass(frozen=True)
class Point:
    """A click. ``position``: ``(x, y)`` display pixels or ``(x, y, z)`` RAS mm; ``label`` 1 =
    object, 0 = background."""

    position: tuple[float, ...]
    label: int = 1
    axis: str = "axial"
    slice: int | None = None
    space: str = "pixel"

    def __post_init__(self) -> None:
        object.__setattr__(self, "position", _numbers(self.position, 2 if _pixel(self) else 3))
        if self.label not in (0, 1) or isinstance(self.label, bool):
            raise InputError("bad_prompt", f"point label must be 1 (object) or 0, got {self.label}")
        _check_place(self)

    def to_dict(self) -> dict[str, Any]:
        key = "point" if self.space == "pixel" else "point_mm"
        return {key: list(self.position), "label": self.label, "axis": self.axis,
                "slice": self.slice}  # fmt: skip


Prompt = Box | Point


def read_prompts(path: str | os.PathLike[str]) -> list[Prompt]:
    """Prompts from a JSON file (see the module docstring), or ``InputError`` naming the entry."""
    from medseg.files import check_regular_file

    check_regular_file(path, what="prompts file")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError("bad_prompt", f"not a JSON prompts file ({err})", path=str(path)) from err
    try:
        return prompts_from_json(data)
    except InputError as err:
        raise InputError(err.code, err.message, path=str(path)) from None


def prompts_from_json(data: Any) -> list[Prompt]:
    """:class:`Box` / :class:`Point` list from the parsed JSON form."""
    entries = data.get("prompts") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not entries:
        raise InputError(
            "bad_prompt", "expected a non-empty list of prompts (or {'prompts': [...]})"
        )
    out: list[Prompt] = []
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError("bad_prompt", f"prompt {n}: expected an object, got {entry!r}")
        kinds = [k for k in ("box", "box_mm", "point", "point_mm") if k in entry]
        unknown = set(entry) - {"box", "box_mm", "point", "point_mm", "label", "axis", "slice"}
        if len(kinds) != 1 or unknown:
            raise InputError(
                "bad_prompt",
                f"prompt {n}: give exactly one of box, box_mm, point, point_mm"
                + (f" (unknown keys {sorted(unknown)})" if unknown else ""),
            )
        kind = kinds[0]
        place = {"axis": entry.get("axis", "axial"), "slice": entry.get("slice"),
                 "space": "mm" if kind.endswith("_mm") else "pixel"}  # fmt: skip
        try:
            if kind.startswith("box"):
                out.append(Box(tuple(entry[kind]), **place))
            else:
                out.append(Point(tuple(entry[kind]), label=entry.get("label", 1), **place))
        except (TypeError, InputError) as err:
            raise InputError("bad_prompt", f"prompt {n}: {getattr(err, 'message', err)}") from None
    return out


def grouped(prompts: Iterable[Prompt]) -> tuple[str, int | None, str, list[Prompt]]:
    """``(axis, slice, space, prompts)`` after checking the prompts share plane, slice, space."""
    items = list(prompts)
    if not items:
        raise InputError("bad_prompt", "give a prompt: --box x0,y0,x1,y1 and/or --point x,y")
    for what in ("space", "axis"):
        values = {getattr(p, what) for p in items}
        if len(values) > 1:
            hint = "use pixel prompts (--box/--point) or --box-mm/--point-mm"
            raise InputError(
                "bad_prompt",
                hint if what == "space" else f"prompts on several planes {sorted(values)}",
            )
    slices = {p.slice for p in items if p.slice is not None}
    if len(slices) > 1:
        raise InputError(
            "bad_prompt", f"prompts on several slices {sorted(slices)}: give one slice per run"
        )
    if sum(isinstance(p, Box) for p in items) > 1:
        raise InputError("bad_prompt", "one box per object and run")
    return items[0].axis, next(iter(slices), None), items[0].space, items


def display_prompt(prompts: Iterable[Prompt], volume):
    """The prompts as one :class:`medseg.inference.prompted.Prompt` in display pixels of
    ``volume`` (millimetre prompts converted; the box not yet clipped or checked)."""
    from medseg.inference.prompted import Prompt as DisplayPrompt
    from medseg.inference.prompted import prompt_from_mm

    axis, slice_index, space, items = grouped(prompts)
    boxes = [p for p in items if isinstance(p, Box)]
    points = [p for p in items if isinstance(p, Point)]
    if space == "mm":
        return prompt_from_mm(
            volume,
            axis,
            box_mm=boxes[0].corners if boxes else None,
            points_mm=[(*p.position, p.label) for p in points],
            slice_index=slice_index,
        )
    if slice_index is None:
        raise InputError("bad_prompt", "--slice K is required with --box/--point")
    box = boxes[0].corners if boxes else None
    return DisplayPrompt(axis, slice_index, box, [(*p.position, p.label) for p in points])


def _pixel(prompt: Box | Point) -> bool:
    if prompt.space not in SPACES:
        raise InputError("bad_prompt", f"space must be one of {SPACES}, got {prompt.space!r}")
    return prompt.space == "pixel"


def _check_place(prompt: Box | Point) -> None:
    if prompt.axis not in AXES:
        raise InputError("bad_prompt", f"axis must be one of {AXES}, got {prompt.axis!r}")
    if prompt.slice is not None and (
        isinstance(prompt.slice, bool) or not isinstance(prompt.slice, int) or prompt.slice < 0
    ):
        raise InputError("bad_prompt", f"slice must be a voxel index >= 0, got {prompt.slice!r}")


def _numbers(values: Sequence[float], count: int) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise InputError("bad_prompt", f"expected {count} numbers, got {values!r}") from None
    if len(out) != count or not all(math.isfinite(v) for v in out):
        raise InputError("bad_prompt", f"expected {count} finite numbers, got {list(values)}")
    return out
