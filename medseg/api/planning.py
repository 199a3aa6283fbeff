"""Prompted runs planned on the volume before any model work: objects -> checked display keys.

:func:`plan_objects` turns the user's :class:`~medseg.api.prompts.Object` s (or the prompts of
one object) into :class:`ObjectPlan` s on one display plane of the volume: key prompts checked
against the slices (boxes clipped, points on the slice), the slice range each object stays
within (``slices`` of the call, narrowed by a 3D box) and the corrections in display pixels
with the clicks of each slice accumulated. Every refusal is an ``InputError`` raised here,
before the model loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from medseg.errors import InputError
from medseg.io.volume import Volume

from . import options as opt
from .prompts import Box, Object, Point, display_keys

__all__ = ["ObjectPlan", "objects_of", "plan_objects"]


@dataclass
class ObjectPlan:
    """One object ready to run: ``keys`` and ``corrections`` are display prompts
    (``medseg.inference.prompted.Prompt``) of plane ``axis``; ``stop_at`` the inclusive slice
    range it stays within (None: the whole stack)."""

    label: int
    name: str
    color: tuple[int, int, int] | None
    keys: list[Any]
    stop_at: tuple[int, int] | None
    corrections: list[Any] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "name": self.name,
            **({"color": list(self.color)} if self.color else {}),
            "keys": [k.as_dict() for k in self.keys],
            "slice_range": None if self.stop_at is None else list(self.stop_at),
            "corrections": [c.as_dict() for c in self.corrections],
        }


def objects_of(
    prompts: Box | Point | Sequence[Box | Point | Object] | None,
    label: int,
    label_name: str | None,
) -> list[Object]:
    """The objects of a call: ``prompts`` may be Box/Point prompts (one object, ``label``,
    ``label_name``) or :class:`Object` s (labels 1..65535, each used once)."""
    items = [prompts] if isinstance(prompts, (Box, Point, Object)) else list(prompts or [])
    objects = [p for p in items if isinstance(p, Object)]
    if objects and len(objects) != len(items):
        raise InputError("bad_prompt", "give Box/Point prompts or Object s, not both")
    if not objects:
        return [Object(tuple(items), label=label, name=label_name)] if items else []
    labels = [opt.check_label(o.label) for o in objects]
    if len(set(labels)) != len(labels):
        raise InputError("bad_prompt", f"each object needs its own label, got {labels}")
    return objects


def plan_objects(
    objects: Sequence[Object], volume: Volume, slices: tuple[int, int] | None
) -> tuple[str, list[ObjectPlan]]:
    """``(axis, plans)``; all objects must be prompted on one plane."""
    from medseg.inference.prompted import Prompt, check_stop_at, validate_prompt
    from medseg.transforms.planes import PlaneView

    plans, axes = [], set()
    for obj in objects:
        axis, keys, span = display_keys(obj.prompts, volume)
        axes.add(axis)
        if len(axes) > 1:
            raise InputError("bad_prompt", f"all objects on one plane, got {sorted(axes)}")
        view = PlaneView.from_affine(volume.affine, volume.spatial_shape, axis)
        keys = [validate_prompt(k, view) for k in keys]
        stop = _narrow(slices, span, obj.label)
        for key in keys:
            check_stop_at(stop, key.slice_index, view.num_slices, axis)
        fixes, clicks = [], {}
        for fix in obj.corrections:
            if fix.axis != axis:
                raise InputError("bad_prompt", f"correction on {fix.axis}, object on {axis}")
            here = clicks.setdefault(fix.slice, [])
            box = fix.corners if isinstance(fix, Box) else None
            if isinstance(fix, Point):
                here.append((*fix.position, fix.label))
            fixes.append(validate_prompt(Prompt(axis, fix.slice, box, list(here)), view))
        name = obj.name or ("object" if len(objects) == 1 else f"object {obj.label}")
        plans.append(ObjectPlan(opt.check_label(obj.label), name, obj.color, keys, stop, fixes))
    return axes.pop(), plans


def _narrow(slices, span, label: int) -> tuple[int, int] | None:
    if span is None or slices is None:
        return span if slices is None else tuple(slices)
    lo, hi = max(slices[0], span[0]), min(slices[1], span[1])
    if lo > hi:
        raise InputError("bad_prompt", f"object {label}: its 3D box lies outside --slices")
    return lo, hi
