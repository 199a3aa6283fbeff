"""One Dice (``medseg.metrics.dice``) with one documented rule for a label empty in both maps:
NaN by default (``medseg evaluate``, as the README says), ``empty=1.0`` where a caller counts two
empty masks as agreement (``medseg.inference.stats.dice``, the downstream check)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.inference.downstream import dice_per_label
from medseg.inference.evaluation import label_metrics
from medseg.inference.stats import dice as stats_dice
from medseg.metrics import dice


def test_the_rule_for_empty_masks_and_the_keyword_for_the_other_value():
    empty = np.zeros((3, 4), bool)
    full = np.ones((3, 4), bool)
    assert math.isnan(dice(empty, empty))
    assert dice(empty, empty, empty=1.0) == 1.0
    assert dice(empty, full) == 0.0 and dice(full, empty, empty=1.0) == 0.0
    assert dice(full, full) == 1.0
    assert stats_dice(empty, empty) == 1.0  # the statistics module's documented choice


def test_values_dtypes_and_shapes():
    a = np.zeros((4, 4), np.uint8)
    a[:2] = 3  # non-zero = inside
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5) == stats_dice(a, b)
    with pytest.raises(ValueError, match="different shapes"):
        dice(a, b[:3])


def test_every_caller_uses_it_with_its_rule():
    pred = np.zeros((4, 4, 2), np.uint8)
    gt = np.zeros((4, 4, 2), np.uint8)
    pred[:2, :2] = 1
    gt[1:3, :2] = 1
    rows = label_metrics(pred, gt, [1, 2], (1.0, 1.0, 1.0), hd95=False)
    assert rows[0]["dice"] == pytest.approx(dice(pred == 1, gt == 1)) == pytest.approx(0.5)
    assert math.isnan(rows[1]["dice"])  # label 2 is empty in both: NaN (README)
    assert dice_per_label(pred, gt) == {1: pytest.approx(0.5)}
