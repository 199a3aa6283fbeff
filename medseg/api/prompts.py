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

__all__ = [
    "AXES",
    "Box",
    "Object",
    "Point",
    "Prompt",
    "display_keys",
    "objects_from_json",
    "prompts_from_json",
    "read_objects",
    "read_prompts",
]

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


@dataclass(frozen=True)
class Object:
    """One object of a run: its key prompts, then corrections, written as ``label``.

    ``prompts``: boxes and/or points on one or more slices of one plane (one box per slice;
    a millimetre box whose corners lie on different slices is a 3D box: the object is searched
    between them). ``corrections``: clicks or boxes applied in order after the object is
    segmented, each re-segmenting its slice and re-propagating locally; clicks on the same slice
    accumulate. ``color``: ``(r, g, b)`` 0..255 for the outputs that carry colours.
    """

    prompts: tuple[Prompt, ...]
    label: int = 1
    name: str | None = None
    color: tuple[int, int, int] | None = None
    corrections: tuple[Prompt, ...] = ()

    def __post_init__(self) -> None:
        items = (self.prompts,) if isinstance(self.prompts, (Box, Point)) else self.prompts
        fixes = self.corrections
        fixes = (fixes,) if isinstance(fixes, (Box, Point)) else fixes
        object.__setattr__(self, "prompts", tuple(items))
        object.__setattr__(self, "corrections", tuple(fixes))
        if not self.prompts:
            raise InputError("bad_prompt", f"object {self.label}: give at least one prompt")
        if any(p.space != "pixel" or p.slice is None for p in self.corrections):
            raise InputError("bad_prompt", "corrections are display-pixel prompts with a slice")
        if self.color is not None:
            rgb = tuple(int(v) for v in self.color)
            if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
                raise InputError("bad_prompt", f"color must be (r, g, b) in 0..255: {self.color}")
            object.__setattr__(self, "color", rgb)


def read_prompts(path: str | os.PathLike[str]) -> list[Prompt]:
    """Prompts from a JSON file (see the module docstring), or ``InputError`` naming the entry."""
    return _read_json(path, prompts_from_json)


def read_objects(path: str | os.PathLike[str]) -> list[Object]:
    """Objects from a JSON prompts file: ``{"objects": [{"label": 2, "name": "liver",
    "color": [r, g, b], "prompts": [...], "corrections": [...]}, ...]}``, or a plain list of
    prompts (one object, label 1). ``InputError`` naming the entry otherwise."""
    return _read_json(path, objects_from_json)


def _read_json(path: str | os.PathLike[str], parse):
    """``parse(data)`` of the JSON prompts file ``path``; errors name the file."""
    from medseg.files import check_regular_file

    check_regular_file(path, what="prompts file")
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError("bad_prompt", f"not a JSON prompts file ({err})", path=str(path)) from err
    try:
        return parse(data)
    except InputError as err:
        raise InputError(err.code, err.message, path=str(path)) from None


def objects_from_json(data: Any) -> list[Object]:
    """:class:`Object` list from the parsed JSON form (see :func:`read_objects`)."""
    if not (isinstance(data, dict) and "objects" in data):
        return [Object(tuple(prompts_from_json(data)))]
    entries = data["objects"]
    if not isinstance(entries, list) or not entries:
        raise InputError("bad_prompt", "'objects' must be a non-empty list")
    out, labels = [], set()
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError("bad_prompt", f"object {n}: not a JSON object")
        unknown = set(entry) - {"label", "name", "color", "prompts", "corrections"}
        if unknown or "prompts" not in entry:
            extra = f" (unknown keys {sorted(unknown)})" if unknown else ""
            raise InputError("bad_prompt", f"object {n}: needs 'prompts'{extra}")
        label = entry.get("label", n + 1)
        if label in labels:
            raise InputError("bad_prompt", f"object {n}: label {label} is used twice")
        labels.add(label)
        fixes = entry.get("corrections", [])
        try:
            out.append(Object(
                tuple(prompts_from_json(entry["prompts"])), label=label, name=entry.get("name"),
                color=entry.get("color"),
                corrections=tuple(prompts_from_json(fixes)) if fixes else (),
            ))  # fmt: skip
        except InputError as err:
            raise InputError("bad_prompt", f"object {n}: {err.message}") from None
    return out


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


def display_keys(prompts: Iterable[Prompt], volume):
    """``(axis, key prompts, box range)``: the prompts of one object as one
    :class:`medseg.inference.prompted.Prompt` per key slice in display pixels of ``volume``
    (boxes not yet clipped or checked), and ``(lo, hi)`` when a millimetre box spans several
    slices (a 3D box: the object lies between them), else None.

    Pixel prompts need their ``slice``; prompts on the same slice form one key (one box per
    slice). Millimetre prompts form one key: the given ``slice``, or the slice nearest to their
    mean position along the plane normal.
    """
    from medseg.inference.prompted import Prompt as DisplayPrompt

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
    axis, space = items[0].axis, items[0].space
    if space == "mm":
        return axis, *_mm_key(items, volume, axis)
    if any(p.slice is None for p in items):
        raise InputError("bad_prompt", "--slice K is required with --box/--point")
    keys = []
    for index in sorted({p.slice for p in items}):
        here = [p for p in items if p.slice == index]
        boxes = [p.corners for p in here if isinstance(p, Box)]
        if len(boxes) > 1:
            raise InputError("bad_prompt", f"one box per slice (slice {index} has {len(boxes)})")
        points = [(*p.position, p.label) for p in here if isinstance(p, Point)]
        keys.append(DisplayPrompt(axis, index, boxes[0] if boxes else None, points))
    return axis, keys, None


def _mm_key(items: list[Prompt], volume, axis: str):
    from medseg.inference.prompted import prompt_from_mm
    from medseg.transforms.planes import PlaneView, world_to_voxel

    boxes = [p for p in items if isinstance(p, Box)]
    if len(boxes) > 1:
        raise InputError("bad_prompt", "one millimetre box per object")
    slices = {p.slice for p in items if p.slice is not None}
    if len(slices) > 1:
        raise InputError("bad_prompt", f"millimetre prompts on several slices {sorted(slices)}")
    span = None
    if boxes:
        import numpy as np

        view = PlaneView.from_affine(volume.affine, volume.spatial_shape, axis)
        corners = world_to_voxel(volume.affine, np.asarray(boxes[0].corners).reshape(2, 3))
        ends = sorted(int(round(view.to_display(c)[0])) for c in corners)
        if ends[1] > ends[0]:
            span = (max(ends[0], 0), min(ends[1], view.num_slices - 1))
    key = prompt_from_mm(
        volume,
        axis,
        box_mm=boxes[0].corners if boxes else None,
        points_mm=[(*p.position, p.label) for p in items if isinstance(p, Point)],
        slice_index=next(iter(slices), None),
    )
    return [key], span


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
