"""The viewer's link to the prompted-segmentation service: one
:class:`~medseg.inference.prompted.PromptedVolume` per session and plane, and corrections of a
propagated object (the same code as ``medseg segment --prompts`` corrections)."""

from __future__ import annotations

import numpy as np

from medseg.inference.prompted import Prompt

from .models import ModelHub
from .state import ObjectPrompt, Session

__all__ = ["correct_object", "prompted_volume"]


def prompted_volume(session: Session, hub: ModelHub, axis: str):
    """This session's :class:`~medseg.inference.prompted.PromptedVolume` of the displayed image
    cut along ``axis`` at the current window (rebuilt when either changes)."""
    key = (axis, *session.window)
    if session.predictor is None:
        session.predictor = hub.session_predictor()
    if session.predictor_key != key or session.prompted is None:
        session.prompted = None  # the old stack goes before the new one is built
        session.prompted = session.predictor.prompt_volume(
            session.image, axis=axis, window=session.window
        )
        session.predictor_key = key
    return session.prompted


def correct_object(session: Session, hub: ModelHub, obj: ObjectPrompt, prompt: Prompt) -> str:
    """A prompt on a propagated object: its slice is re-segmented and the change re-propagated
    while it lasts (:meth:`medseg.inference.prompted.PromptedVolume.correct`)."""
    stack = session.views[prompt.axis].stack(session.labels)  # writable views of the labels
    masks = stack == obj.label
    ious = obj.ious if obj.ious is not None and len(obj.ious) == len(masks) else None
    ious = np.full(len(masks), np.nan, dtype=np.float32) if ious is None else ious
    anchors = [k for k in obj.keys if k != prompt.slice_index]
    prompted = prompted_volume(session, hub, prompt.axis)
    new, obj.ious, changed = prompted.correct(masks, ious, prompt, anchors=anchors)
    for index in changed:
        plane = stack[index]
        plane[plane == obj.label] = 0
        plane[new[index] & (plane == 0)] = obj.label
    obj.keys = sorted({*obj.keys, prompt.slice_index})
    return (f"{obj.name}: corrected {prompt.axis} slice {prompt.slice_index}; "
            f"{len(changed)} slice(s) updated")  # fmt: skip
