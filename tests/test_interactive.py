"""Key slices, stopping, corrections and merging of prompted 3D segmentation
(:mod:`medseg.inference.interactive`), on an oracle predictor whose answers are known, and the
exactness of the old path with the shipped LiteMedSAM."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.inference.interactive import (
    Key,
    StopRule,
    click_prompt,
    correct,
    merge_objects,
    segment_keys,
)

S, H, W = 30, 40, 40


def _tube(lo: int = 5, hi: int = 24) -> np.ndarray:
    """A square tube along the slices ``lo..hi``: rows/cols 12..27."""
    gt = np.zeros((S, H, W), dtype=bool)
    gt[lo : hi + 1, 12:28, 12:28] = True
    return gt


class Oracle:
    """Answers with the truth inside the prompt box; positive clicks add the
    truth's square around them, negative clicks remove it. ``iou(index, step)`` is the
    predicted IoU; ``leak`` slices answer with the whole slice."""

    def __init__(self, truth: np.ndarray, iou=lambda index, step: 0.9, leak=()) -> None:
        self.stack = np.zeros(truth.shape, dtype=np.uint8)
        self.truth, self.iou, self.leak, self.calls = truth, iou, set(leak), []

    def predict(self, index, box=None, points=None, point_labels=None, step=0):
        self.calls.append(index)
        if index in self.leak:
            return np.ones(self.truth.shape[1:], bool), self.iou(index, step)
        mask = np.zeros(self.truth.shape[1:], dtype=bool)
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            mask[y0 : y1 + 1, x0 : x1 + 1] = True
            mask &= self.truth[index]
        for (x, y), lab in zip(points if points is not None else [],
                               point_labels if point_labels is not None else [],
                               strict=True):  # fmt: skip
            near = np.zeros_like(mask)
            near[max(int(y) - 8, 0) : int(y) + 8, max(int(x) - 8, 0) : int(x) + 8] = True
            mask = mask | (near & self.truth[index]) if lab else mask & ~near
        return mask, self.iou(index, step)

    def follow(self, index, previous, *, limit):
        rows, cols = np.nonzero(previous)
        box = (cols.min(), rows.min(), cols.max(), rows.max())
        return self.predict(index, box, step=1 if limit >= index else -1)


def _extent(masks: np.ndarray) -> tuple[int, int]:
    found = np.flatnonzero(masks.reshape(len(masks), -1).any(1))
    return int(found[0]), int(found[-1])


def test_one_key_follows_the_object_to_its_ends():
    truth = _tube()
    masks, ious = segment_keys(Oracle(truth), [Key(14, (12, 12, 27, 27))])
    assert _extent(masks) == (5, 24) and (masks == truth).all()
    assert np.isnan(ious[:5]).all() and (ious[5:25] > 0).all()


def test_stop_rule_ends_a_leak_and_keeps_the_object():
    truth = _tube()
    leaky = Oracle(truth, leak={25, 26, 27, 28, 29})  # past the end, the model fills the slice
    masks, _ = segment_keys(leaky, [Key(14, (12, 12, 27, 27))])
    assert _extent(masks) == (5, 29)  # the old rule: until the mask vanishes
    masks, _ = segment_keys(leaky, [Key(14, (12, 12, 27, 27))], rule=StopRule(max_growth=1.5))
    assert _extent(masks) == (5, 24) and (masks == truth).all()
    low = Oracle(truth, iou=lambda index, step: 0.3 if index > 20 else 0.9)
    masks, _ = segment_keys(low, [Key(14, (12, 12, 27, 27))], rule=StopRule(min_iou=0.5))
    assert _extent(masks) == (5, 20)


def test_relative_iou_rule_follows_the_key_slices_own_confidence():
    """A faint object (key IoU 0.6 everywhere inside) is followed to its ends by the relative
    rule, where an absolute 0.7 stops at the key; past the end the IoU halves and it stops."""
    truth = _tube()
    faint = Oracle(truth, iou=lambda index, step: 0.6 if 5 <= index <= 24 else 0.3,
                   leak={25, 26, 27, 28, 29})  # fmt: skip
    masks, _ = segment_keys(faint, [Key(14, (12, 12, 27, 27))], rule=StopRule(min_iou=0.7))
    assert _extent(masks) == (14, 14)
    masks, _ = segment_keys(faint, [Key(14, (12, 12, 27, 27))], rule=StopRule(relative_iou=0.8))
    assert _extent(masks) == (5, 24) and (masks == truth).all()
    both = StopRule(min_iou=0.7, relative_iou=0.8)  # the default's form: below both to stop
    masks, _ = segment_keys(faint, [Key(14, (12, 12, 27, 27))], rule=both)
    assert _extent(masks) == (5, 24)
    # a confident key (0.95) and weaker ends (0.72): above 0.7, kept although below 0.8 x 0.95
    sure = Oracle(truth, iou=lambda index, step: 0.95 if index == 14 else 0.72 if 5 <= index <= 24
                  else 0.3, leak={25, 26, 27, 28, 29})  # fmt: skip
    masks, _ = segment_keys(sure, [Key(14, (12, 12, 27, 27))], rule=StopRule(relative_iou=0.8))
    assert _extent(masks) == (14, 14)
    masks, _ = segment_keys(sure, [Key(14, (12, 12, 27, 27))], rule=both)
    assert _extent(masks) == (5, 24) and (masks == truth).all()


def test_two_keys_fill_between_from_the_nearer_key_or_the_better_iou():
    truth = _tube(2, 27)
    up_better = Oracle(truth, iou=lambda index, step: 0.9 if step > 0 else 0.6)
    keys = [Key(6, (12, 12, 27, 27)), Key(20, (12, 12, 27, 27))]
    _, nearer = segment_keys(up_better, keys)
    _, best = segment_keys(up_better, keys, between="iou")
    # slices 7..13 are nearer key 6 (walked up), 14..19 nearer key 20 (walked down)
    assert (nearer[7:14] == np.float32(0.9)).all() and (nearer[14:20] == np.float32(0.6)).all()
    assert (best[7:20] == np.float32(0.9)).all()
    with pytest.raises(ValueError, match="distinct key slices"):
        segment_keys(up_better, [Key(6, (1, 1, 5, 5)), Key(6, (1, 1, 5, 5))])


def test_a_correction_repropagates_only_while_the_result_changes():
    truth = _tube()
    oracle = Oracle(truth)
    masks, ious = segment_keys(oracle, [Key(14, (12, 12, 20, 20))])  # a box on part of it
    assert (masks[5:25].sum((1, 2)) == 81).all()
    # a positive click on the missed part of slice 18: every slice it changes is redone
    new, _, changed = correct(oracle, masks, ious, Key(18, None, [(25, 25, 1)]), anchors=[14])
    assert new[18].sum() > 81 and (new[19:25] == truth[19:25]).all()
    assert new[14].sum() == 81  # the anchor stays
    assert changed == [15, 16, 17, 18, 19, 20, 21, 22, 23, 24]

    # a slice damaged alone: the fix stops after two slices that agree with the old mask
    masks, ious = segment_keys(oracle, [Key(14, (12, 12, 27, 27))])
    masks[18, 20:] = False
    oracle.calls.clear()
    new, _, changed = correct(oracle, masks, ious, Key(18, None, [(20, 25, 1)]), anchors=[14])
    assert (new == truth).all() and changed == [16, 17, 18, 19, 20]
    assert sorted(set(oracle.calls)) == [16, 17, 18, 19, 20]  # no slice beyond is computed


def test_a_click_on_a_missed_second_part_adds_it_without_one_box_around_both():
    """Only the left part of an object is segmented: a positive click far from it segments
    the clicked part by its own box (not one box spanning both and the gap between), and
    re-propagation follows each part by its own box."""

    class Boxy(Oracle):  # answers the whole box: a box across the gap would fill it
        def predict(self, index, box=None, points=None, point_labels=None, step=0):
            return super().predict(index, box, None, None, step)

    boxy = Boxy(np.ones((S, H, W), dtype=bool))
    masks, ious = segment_keys(boxy, [Key(14, (4, 4, 11, 11))], lo=5, hi=24)
    assert (masks[5:25].sum((1, 2)) == 64).all()
    new, _, changed = correct(boxy, masks, ious, Key(14, None, [(30, 30, 1)]), anchors=[])
    assert new[14, 4:12, 4:12].all() and new[14, 30, 30]
    assert not new[:, 13:28, 13:28].any()  # nothing between the parts, on any slice
    assert new[13, 30, 30] and new[15, 30, 30] and 13 in changed and 15 in changed


def test_a_correction_stops_where_the_model_trusted_the_old_mask_more():
    truth = _tube()
    sure = Oracle(truth, iou=lambda index, step: 0.95 if index < 16 else 0.6)
    masks, ious = segment_keys(sure, [Key(14, (12, 12, 27, 27))])
    sure.iou = lambda index, step: 0.6  # from now on the model is unsure everywhere
    new, _, changed = correct(sure, masks, ious, Key(18, (12, 12, 20, 20)), anchors=[])
    assert changed == [16, 17, 18, 19, 20, 21, 22, 23, 24]  # 15 was predicted at 0.95
    assert (new[:16] == masks[:16]).all() and new[16].sum() == 81


def test_a_negative_correction_that_empties_a_slice_removes_the_mask_beyond():
    truth = _tube()
    leaky = Oracle(truth, leak={25, 26})
    masks, ious = segment_keys(leaky, [Key(14, (12, 12, 27, 27))])
    assert _extent(masks) == (5, 26)
    leaky.leak = set()  # the negative click removes what is on slice 25
    new, _, changed = correct(leaky, masks, ious, Key(25, (0, 0, 39, 39), [(20, 20, 0)]),
                              anchors=[14])  # fmt: skip
    assert not new[25:].any() and _extent(new) == (5, 24) and changed == [25, 26]


def test_a_lone_click_tries_boxes_and_keeps_the_best_iou():
    truth = _tube()
    sizes = []

    def iou(index, step):
        return 0.5

    class Sized(Oracle):
        def predict(self, index, box=None, points=None, point_labels=None, step=0):
            mask, _ = super().predict(index, box, points, point_labels, step)
            sizes.append(None if box is None else box[2] - box[0])
            return mask, 1.0 - abs(mask.sum() - 256) / 256.0  # best when it has the square

    mask, best = click_prompt(Sized(truth, iou), Key(14, None, [(20, 20, 1)]))
    assert len(sizes) == 4 and best == pytest.approx(1.0) and mask.sum() == 256


def test_merge_gives_overlaps_to_the_higher_predicted_iou():
    a = np.zeros((2, 4, 4), bool)
    b = a.copy()
    a[:, :2], b[:, 1:3] = True, True  # overlap in column 1 of rows 0..1
    ious_a, ious_b = np.array([0.9, 0.5], np.float32), np.array([0.7, 0.8], np.float32)
    out = merge_objects([(1, a, ious_a), (300, b, ious_b)])
    assert out.dtype == np.uint16
    assert (out[0, 1] == 1).all() and (out[1, 1] == 300).all()
    assert (out[:, 0] == 1).all() and (out[:, 2] == 300).all() and (out[:, 3] == 0).all()


def test_one_key_without_a_stop_rule_is_the_old_litemedsam_propagation():
    from testkit import ellipsoid_volume

    from medseg.inference.litemedsam import LiteMedSAMPredictor, to_uint8
    from medseg.models.litemedsam import load_litemedsam

    image, mask = ellipsoid_volume((48, 40, 12), radii=(12, 9, 4))
    stack = np.ascontiguousarray(to_uint8(np.moveaxis(image, -1, 0)))
    predictor = LiteMedSAMPredictor(load_litemedsam(device="cpu"), device="cpu")
    predictor.set_stack(stack)
    box = (10, 10, 30, 38)
    old = predictor.propagate(6, box)
    new, ious = segment_keys(predictor, [Key(6, box)])
    np.testing.assert_array_equal(old, new)
    assert old.any() and np.isfinite(ious[old.reshape(len(old), -1).any(1)]).all()
