"""Per-label statistics: voxel counts, mL on anisotropic grids, bounding boxes."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.inference.stats import dice, label_statistics


def test_volumes_in_ml_and_bbox():
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:4, 3:6, 1:2] = 1  # 6 voxels
    labels[7, 7, 7] = 3
    aff = np.diag([2.0, 2.0, 5.0, 1.0])  # 20 mm^3 per voxel
    aff[:3, 3] = [-10, 0, 100]
    stats = label_statistics(labels, aff, {1: "liver"})
    assert stats["voxel_volume_ml"] == pytest.approx(0.02)
    one, three = stats["labels"]
    assert (one["label"], one["name"], one["voxels"]) == (1, "liver", 6)
    assert one["volume_ml"] == pytest.approx(0.12)
    assert one["bbox_voxel"] == {"min": [2, 3, 1], "max": [3, 5, 1]}
    assert one["bbox_mm"]["min"] == [-6.0, 6.0, 105.0]
    assert three["name"] == "label_3" and three["voxels"] == 1


def test_empty_labels():
    assert label_statistics(np.zeros((2, 2, 2), np.uint8), np.eye(4))["labels"] == []


def test_dice():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
