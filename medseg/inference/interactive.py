"""Prompted 3D segmentation of one object on a display stack: key slices, stopping, corrections.

Works with any SAM-family predictor holding an ``(S, H, W)`` stack
(:class:`~medseg.inference.litemedsam.LiteMedSAMPredictor`, DB-SAM's ``BoxPromptPredictor``):
``predict(index, box=, points=, point_labels=) -> (mask (H, W) bool, predicted IoU)`` and,
when it has one, ``follow(index, previous_mask, limit=)`` (LiteMedSAM's exact propagation step);
other predictors follow a mask by its bounding box with LiteMedSAM's 3 px (256-scale) margin.

- **Key slices** (:func:`segment_keys`): every prompted slice is segmented from its prompt; the
  mask then travels outwards from the outermost keys and, between two keys, from both ends;
  each slice between keys keeps the prediction of the nearer key (``between="nearer"``, ties
  to the higher predicted IoU) or of the higher predicted IoU (``between="iou"``).
- **Stopping** (:class:`StopRule`): a step ends a direction when the new mask vanishes, when
  the model's predicted IoU falls below ``min_iou`` and/or ``relative_iou`` times the IoU of
  the slice the walk started from (below both when both are set), or when the mask grows by
  more than ``max_growth`` times the previous slice's area (a leak into a neighbour).
- **Corrections** (:func:`correct`): clicks or a box on one slice re-segment it (decoder only,
  the embedding is cached; clicks correct the part of the mask they are near, a positive
  click near no part adds a part: :func:`predict_parts`) and re-propagate outwards, each part
  by its own box, only while the result changes: a direction stops after ``settle``
  consecutive slices agreeing with the previous mask at Dice >= ``agree``, or at a slice whose
  old mask had a predicted IoU over ``WORSE`` higher than the new one; when the new mask
  vanishes, the old mask beyond it is removed, unless a key slice lies further that way (the
  mask there came from it); when the stopping rule ends the walk, the old mask beyond is kept.
- **A lone click** (:func:`click_prompt`): LiteMedSAM was trained with boxes, so positive
  clicks without a box are tried with boxes of growing size around them and the prediction
  with the highest predicted IoU is kept.

Masks are ``(S, H, W)`` bool; ``ious`` is ``(S,)`` float32, NaN on slices never segmented.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medseg.metrics import dice

__all__ = ["StopRule", "click_prompt", "correct", "merge_objects", "segment_keys"]

MARGIN_256 = 3  # px at 256 scale around a followed mask (the official propagation box)
CLICK_HALF_SIZES_256 = (8, 16, 32, 64)  # half-sizes of the boxes tried around a lone click
NEAR_256 = 8  # px at 256 scale: a click this close to a part's box corrects that part
WORSE = 0.05  # a re-propagated slice whose predicted IoU is this much below the old one's stops
MIN_PART = 0.05  # parts of a mask smaller than this share of its area are not followed
Progress = Callable[[int], object] | None


@dataclass(frozen=True)
class StopRule:
    """When propagation stops in one direction (see the module docstring).

    ``min_iou=0`` and ``max_growth=inf`` give the old rule: until the mask vanishes.
    """

    min_iou: float = 0.0
    max_growth: float = float("inf")
    relative_iou: float = 0.0

    def stops(self, area: int, previous_area: int, iou: float, start_iou: float = 1.0) -> bool:
        """``start_iou``: the predicted IoU of the slice the walk started from. With both
        ``min_iou`` and ``relative_iou`` set, the IoU must fall below both to stop."""
        start_iou = 1.0 if np.isnan(start_iou) else start_iou
        floors = [self.min_iou] if self.min_iou > 0 else []
        floors += [self.relative_iou * start_iou] if self.relative_iou > 0 else []
        if area == 0 or (floors and iou < min(floors)):
            return True
        return previous_area > 0 and area > self.max_growth * previous_area


NO_STOP = StopRule()


@dataclass
class Key:
    """A prompt on one display slice: ``box (x0, y0, x1, y1)`` and ``points [(x, y, label)]``
    in display pixels (already checked against the slice)."""

    index: int
    box: tuple[float, float, float, float] | None = None
    points: Sequence[tuple[float, float, int]] = ()


def predict_key(predictor, key: Key) -> tuple[np.ndarray, float]:
    """``(mask (H, W), predicted IoU)`` of one key slice (a lone click via
    :func:`click_prompt`)."""
    if key.box is None and key.points and all(lab == 1 for *_, lab in key.points):
        return click_prompt(predictor, key)
    points = labels = None
    if key.points:
        points = np.array([(x, y) for x, y, _ in key.points], dtype=np.float32)
        labels = np.array([lab for *_, lab in key.points], dtype=np.int64)
    return predictor.predict(key.index, box=key.box, points=points, point_labels=labels)


def click_prompt(predictor, key: Key) -> tuple[np.ndarray, float]:
    """Positive clicks without a box: boxes of half-size 8, 16, 32 and 64 px (256 scale)
    around the clicks, each with the clicks; the mask of the highest predicted IoU."""
    height, width = predictor.stack.shape[1:]
    scale = max(height, width) / 256.0
    xy = np.array([(x, y) for x, y, _ in key.points], dtype=np.float32)
    labels = np.ones(len(xy), dtype=np.int64)
    best: tuple[np.ndarray, float] | None = None
    for half in CLICK_HALF_SIZES_256:
        h = half * scale
        box = (max(0.0, float(xy[:, 0].min()) - h), max(0.0, float(xy[:, 1].min()) - h),
               min(width - 1.0, float(xy[:, 0].max()) + h),
               min(height - 1.0, float(xy[:, 1].max()) + h))  # fmt: skip
        mask, iou = predictor.predict(key.index, box=box, points=xy, point_labels=labels)
        if mask.any() and (best is None or iou > best[1]):
            best = (mask, iou)
    return best if best is not None else predictor.predict(key.index, points=xy,
                                                           point_labels=labels)  # fmt: skip


def segment_keys(
    predictor,
    keys: Sequence[Key],
    *,
    lo: int = 0,
    hi: int | None = None,
    rule: StopRule = NO_STOP,
    between: str = "nearer",
    propagate: bool = True,
    progress: Progress = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(masks (S, H, W) bool, ious (S,))`` of one object from its key slices, within slices
    ``lo..hi`` (inclusive; default the whole stack). Keys must lie in that range, one per
    slice; ``propagate=False`` segments the key slices only."""
    count = predictor.stack.shape[0]
    hi = count - 1 if hi is None else hi
    keys = sorted(keys, key=lambda k: k.index)
    indices = [k.index for k in keys]
    if not keys or len(set(indices)) != len(indices) or not lo <= indices[0] <= indices[-1] <= hi:
        raise ValueError(f"need distinct key slices within {lo}..{hi}, got {indices}")
    if between not in ("nearer", "iou"):
        raise ValueError(f"between must be 'nearer' or 'iou', got {between!r}")
    masks = np.zeros(predictor.stack.shape, dtype=bool)
    ious = np.full(count, np.nan, dtype=np.float32)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0])

    for key in keys:
        masks[key.index], ious[key.index] = predict_key(predictor, key)
        tick()
    if not propagate:
        return masks, ious
    for index, mask, iou in walk(
        predictor, masks[indices[-1]], indices[-1], 1, hi, rule, start_iou=ious[indices[-1]]
    ):
        masks[index], ious[index] = mask, iou
        tick()
    for index, mask, iou in walk(
        predictor, masks[indices[0]], indices[0], -1, lo, rule, start_iou=ious[indices[0]]
    ):
        masks[index], ious[index] = mask, iou
        tick()
    for a, b in zip(indices[:-1], indices[1:], strict=False):
        up = {
            i: (m, q) for i, m, q in walk(predictor, masks[a], a, 1, b - 1, rule, start_iou=ious[a])
        }
        down = {
            i: (m, q)
            for i, m, q in walk(predictor, masks[b], b, -1, a + 1, rule, start_iou=ious[b])
        }
        for index in range(a + 1, b):
            pick = _pick(up.get(index), down.get(index), index - a, b - index, between)
            if pick is not None:
                masks[index], ious[index] = pick
            tick()
    return masks, ious


def walk(predictor, start: np.ndarray, index: int, step: int, limit: int, rule: StopRule,
         why: list[str] | None = None, start_iou: float = 1.0, parts: bool = False):  # fmt: skip
    """Yield ``(index, mask, iou)`` from slice ``index + step`` towards ``limit`` (inclusive),
    each slice from the previous one's mask, until ``rule`` stops (the stopping slice is not
    yielded; ``start_iou``: the predicted IoU of ``start``). ``why`` receives the reason:
    ``"limit"``, ``"vanished"`` or ``"rule"``. ``parts=True`` follows each separate part of
    a mask by its own box (:func:`follow_parts`); False is LiteMedSAM's official step."""
    step_fn = follow_parts if parts else follow
    previous, index = start, index + step
    reason = "limit"
    while (index - limit) * step <= 0:
        found = step_fn(predictor, index, previous, limit) if previous.any() else None
        if found is None or not found[0].any():
            reason = "vanished"
            break
        if rule.stops(int(found[0].sum()), int(previous.sum()), found[1], start_iou):
            reason = "rule"
            break
        yield index, found[0], found[1]
        previous, index = found[0], index + step
    if why is not None:
        why.append(reason)


def follow(predictor, index: int, previous: np.ndarray, limit: int):
    """One step: slice ``index`` from its neighbour's mask (None when the mask vanished)."""
    own = getattr(predictor, "follow", None)
    if own is not None:
        return own(index, previous, limit=limit)
    rows, cols = np.nonzero(previous)
    if rows.size == 0:
        return None
    h, w = previous.shape
    m = MARGIN_256 * max(h, w) / 256.0
    box = (max(0.0, cols.min() - m), max(0.0, rows.min() - m),
           min(w - 1.0, cols.max() + m), min(h - 1.0, rows.max() + m))  # fmt: skip
    return predictor.predict(index, box=box)


def parts_of(mask: np.ndarray) -> list[np.ndarray]:
    """The separate parts (8-connected) of an ``(H, W)`` mask holding at least
    ``MIN_PART`` of its area, largest first."""
    labelled, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count <= 1:
        return [mask] if mask.any() else []
    sizes = ndimage.sum(mask, labelled, range(1, count + 1))
    order = np.argsort(sizes)[::-1]
    return [labelled == i + 1 for i in order if sizes[i] >= MIN_PART * mask.sum()]


def follow_parts(predictor, index: int, previous: np.ndarray, limit: int):
    """:func:`follow` for each part of ``previous`` (:func:`parts_of`) by its own box, so a
    mask in two pieces (an arch, two vessels) is not followed by one box around both.
    ``(union mask, area-weighted predicted IoU)``, or None when every part vanished."""
    found = [follow(predictor, index, part, limit) for part in parts_of(previous)]
    return _union([f for f in found if f is not None and f[0].any()])


def predict_parts(predictor, key: Key, current: np.ndarray) -> tuple[np.ndarray, float]:
    """Clicks (no box) on a slice that has a mask: each part of the mask is re-segmented from
    its box, grown to hold the positive clicks near it (within ``NEAR_256`` px at 256 scale)
    with the clicks near it; a positive click near no part starts a new part
    (:func:`click_prompt`); a negative click near no part changes nothing."""
    parts = parts_of(current)
    scale = max(current.shape) / 256.0
    boxes = [_box_of(part) for part in parts]
    groups: list[list] = [[] for _ in boxes]
    lone = []
    for x, y, lab in key.points:
        near = [i for i, (x0, y0, x1, y1) in enumerate(boxes)
                if x0 - NEAR_256 * scale <= x <= x1 + NEAR_256 * scale
                and y0 - NEAR_256 * scale <= y <= y1 + NEAR_256 * scale]  # fmt: skip
        if near:
            groups[near[0]].append((x, y, lab))
        elif lab:
            lone.append((x, y, lab))
    found = []
    for (x0, y0, x1, y1), points in zip(boxes, groups, strict=True):
        xs = [x0, x1] + [x for x, _, lab in points if lab]
        ys = [y0, y1] + [y for _, y, lab in points if lab]
        box = (min(xs), min(ys), max(xs), max(ys))
        found.append(predict_key(predictor, Key(key.index, box, points)))
    found += [click_prompt(predictor, Key(key.index, None, [point])) for point in lone]
    union = _union([f for f in found if f[0].any()])
    return union if union is not None else (np.zeros_like(current), float(found[0][1]))


def correct(
    predictor,
    masks: np.ndarray,
    ious: np.ndarray,
    key: Key,
    *,
    anchors: Sequence[int] = (),
    lo: int = 0,
    hi: int | None = None,
    rule: StopRule = NO_STOP,
    agree: float = 0.95,
    settle: int = 2,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Re-segment slice ``key.index`` from ``key`` (clicks alone keep the current mask's box
    there) and re-propagate outwards while the result changes (module docstring). ``anchors``:
    the object's other key slices, never changed. Returns new ``(masks, ious, changed slices)``;
    the inputs are not modified."""
    masks, ious = masks.copy(), ious.copy()
    hi = predictor.stack.shape[0] - 1 if hi is None else hi
    if key.box is None and masks[key.index].any():  # clicks on the mask's parts
        masks[key.index], ious[key.index] = predict_parts(predictor, key, masks[key.index])
    else:
        masks[key.index], ious[key.index] = predict_key(predictor, key)
    changed = [key.index]
    fixed = set(anchors) - {key.index}
    for step, limit in ((1, hi), (-1, lo)):
        ahead = [a for a in fixed if (a - key.index) * step > 0]
        stop = min(ahead, key=lambda a: abs(a - key.index)) if ahead else limit + step
        last, agreeing, why = key.index, 0, []
        for index, mask, iou in walk(predictor, masks[key.index], key.index, step, stop - step,
                                     rule, why, ious[key.index], parts=True):  # fmt: skip
            if iou < ious[index] - WORSE:  # the model trusts the old mask more: keep it
                break
            agreeing = agreeing + 1 if _agrees(mask, masks[index], agree) else 0
            masks[index], ious[index] = mask, iou
            changed.append(index)
            last = index
            if agreeing >= settle:
                break
        if why == ["vanished"] and not ahead:  # the object ends here now: the rest goes too
            for j in range(last + step, stop, step):
                if masks[j].any():
                    masks[j], ious[j] = False, np.nan
                    changed.append(j)
    return masks, ious, sorted(set(changed))


def merge_objects(objects: Sequence[tuple[int, np.ndarray, np.ndarray]]) -> np.ndarray:
    """One label stack ``(S, H, W)`` uint8/uint16 from ``[(label, masks, ious)]``: where
    objects overlap, the one with the higher predicted IoU on that slice wins (then the later
    object)."""
    if not objects:
        raise ValueError("no objects")
    top = max(label for label, *_ in objects)
    shape = objects[0][1].shape
    out = np.zeros(shape, dtype=np.uint8 if top <= 255 else np.uint16)
    best = np.full(shape, -np.inf, dtype=np.float32)
    for label, masks, ious in objects:
        score = np.where(np.isnan(ious), -1.0, ious).astype(np.float32)[:, None, None]
        win = masks & (score >= best)
        out[win] = label
        best = np.where(win, score, best)
    return out


def _union(found: list[tuple[np.ndarray, float]]) -> tuple[np.ndarray, float] | None:
    if not found:
        return None
    masks = np.stack([mask for mask, _ in found])
    areas = masks.reshape(len(masks), -1).sum(1).astype(np.float64)
    return masks.any(axis=0), float(np.average([iou for _, iou in found], weights=areas))


def _box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    rows, cols = np.nonzero(mask)
    return float(cols.min()), float(rows.min()), float(cols.max()), float(rows.max())


def _agrees(new: np.ndarray, old: np.ndarray, threshold: float) -> bool:
    if not new.any() and not old.any():
        return True
    return float(dice(new, old)) >= threshold


def _pick(up, down, from_a: int, from_b: int, between: str):
    if up is None or down is None:
        return up if down is None else down
    if between == "iou" or from_a == from_b:
        return up if up[1] >= down[1] else down
    return up if from_a < from_b else down
