"""Rendering without a browser: windows, overlay colours and opacity, montage, aspect."""

from __future__ import annotations

import numpy as np
import pytest

from medseg import viz


def test_apply_window_maps_level_and_width():
    img = np.array([[-1000.0, 40.0 - 200.0, 40.0, 240.0, 3000.0]])
    out = viz.apply_window(img, 40.0, 400.0)
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 0, 127, 255, 255]]
    with pytest.raises(ValueError):
        viz.apply_window(img, 0, 0)


def test_window_presets_are_clinical_values():
    assert viz.WINDOW_PRESETS["soft_tissue"] == (40.0, 400.0)
    assert viz.WINDOW_PRESETS["lung"] == (-600.0, 1500.0)
    assert viz.WINDOW_PRESETS["bone"] == (480.0, 2500.0)


def test_percentile_window_ignores_background():
    img = np.zeros((10, 10))
    img[2:8, 2:8] = np.linspace(100, 200, 36).reshape(6, 6)
    level, width = viz.percentile_window(img, 0, 100)
    assert level - width / 2 == pytest.approx(100)
    assert level + width / 2 == pytest.approx(200)


def test_overlay_colour_and_opacity():
    grey = np.full((4, 4), 100, np.uint8)
    labels = np.zeros((4, 4), np.int32)
    labels[1:3, 1:3] = 2
    out = viz.overlay_labels(grey, labels, opacity=0.5)
    colour = np.array(viz.label_color(2))
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])
    np.testing.assert_array_equal(out[1, 1], np.rint(0.5 * 100 + 0.5 * colour))
    opaque = viz.overlay_labels(grey, labels, opacity=1.0)
    np.testing.assert_array_equal(opaque[2, 2], colour)
    hidden = viz.overlay_labels(grey, labels, opacity=1.0, visible=[1])
    np.testing.assert_array_equal(hidden[2, 2], [100, 100, 100])


def test_outline_draws_only_the_border():
    grey = np.zeros((7, 7), np.uint8)
    labels = np.zeros((7, 7), np.uint8)
    labels[1:6, 1:6] = 1
    out = viz.overlay_labels(grey, labels, outline=True)
    assert out[3, 3].sum() == 0 and out[1, 3].sum() > 0


def test_label_colours_distinct_and_stable():
    colours = {viz.label_color(i) for i in range(1, 30)}
    assert len(colours) == 29
    assert viz.label_color(42) == viz.label_color(42)
    with pytest.raises(ValueError):
        viz.label_color(0)


def test_montage_and_aspect():
    tiles = [np.full((3, 5, 3), i, np.uint8) for i in range(5)]
    out = viz.montage(tiles, columns=2, pad=1)
    assert out.shape == (3 * 4 + 1, 2 * 6 + 1, 3)
    stretched = viz.resample_aspect(np.zeros((4, 6, 3), np.uint8), (3.0, 1.0))
    assert stretched.shape == (12, 6, 3)


def test_pick_slices_prefers_the_object():
    stack = np.zeros((50, 4, 4), bool)
    stack[20:30, 1, 1] = True
    picks = viz.pick_slices(stack, 4)
    assert picks[0] == 20 and picks[-1] == 29 and len(picks) == 4
    assert len(viz.pick_slices(np.zeros((3, 2, 2), bool), 8)) == 3


def test_png_bytes_roundtrip():
    from io import BytesIO

    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 255, (5, 6, 3), dtype=np.uint8)
    back = np.asarray(Image.open(BytesIO(viz.png_bytes(rgb))))
    np.testing.assert_array_equal(back, rgb)
