"""Viewer pictures without a browser: orientation, aspect, windows, overlays, crosshair, export.

Everything here is numpy on tiny synthetic volumes (no model, no Gradio server).
"""

from __future__ import annotations

import numpy as np
import pytest

from apps.viewer import callbacks as cb
from apps.viewer.render import render_plane
from apps.viewer.state import new_session
from medseg.io import load_volume
from medseg.io.volume import Volume
from medseg.transforms.planes import AXES, voxel_to_world, world_to_voxel
from medseg.viz import (
    CROSSHAIR_COLOR,
    WINDOW_PRESETS,
    LabelStyle,
    Viewport,
    apply_window,
    label_color,
    render_slice,
)

SHAPE = (20, 24, 16)


def rotation_z(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


def make_affine(kind: str, spacing=(1.0, 1.0, 1.0)) -> np.ndarray:
    direction = {
        "RAS": np.eye(3),
        "LPS": np.diag([-1.0, -1.0, 1.0]),
        "oblique": rotation_z(30),
    }[kind]
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(spacing)[None, :]
    affine[:3, 3] = -affine[:3, :3] @ (np.asarray(SHAPE) / 2.0)
    return affine


def marker_volume(affine: np.ndarray, world: np.ndarray) -> tuple[Volume, tuple[int, int, int]]:
    """A volume whose only bright voxel is the one nearest to RAS point ``world``."""
    ijk = tuple(int(v) for v in np.rint(world_to_voxel(affine, world)))
    array = np.zeros(SHAPE, np.float32)
    array[ijk] = 100.0
    array[0, 0, 0] = 1.0  # not constant
    return Volume(array, affine), ijk  # type: ignore[return-value]


def session_for(volume: Volume):
    return new_session(volume, "test", window=(50.0, 100.0), preset="manual")


@pytest.mark.parametrize("kind", ["RAS", "LPS", "oblique"])
def test_patient_right_anterior_is_top_left_of_axial(kind):
    """Radiological display from the affine: a voxel at patient right-anterior appears in the
    top-left quadrant of the axial picture, whatever the voxel order; letters say so."""
    affine = make_affine(kind)
    volume, ijk = marker_volume(affine, np.array([5.0, 6.0, 0.0]))  # R +5 mm, A +6 mm
    session = session_for(volume)
    session.crosshair = ijk
    session.style = LabelStyle(opacity=0.0)
    view = session.views["axial"]
    assert view.labels() == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert session.views["coronal"].labels() == {"top": "S", "bottom": "I", "left": "R",
                                                 "right": "L"}  # fmt: skip
    assert session.views["sagittal"].labels() == {"top": "S", "bottom": "I", "left": "A",
                                                  "right": "P"}  # fmt: skip
    s, row, col = view.to_display(np.array(ijk))
    assert row < view.height / 2 and col < view.width / 2
    picture = render_plane(session, "axial")
    x, y = session.viewports["axial"].to_image(row, col)
    h, w = picture.shape[:2]
    assert x < w / 2 and y < h / 2
    # the marker's own pixel (crosshair leaves a gap around it) is bright
    assert picture[int(round(y)), int(round(x))].min() == 255


def test_letters_are_drawn_at_the_edges():
    volume, _ = marker_volume(make_affine("RAS"), np.zeros(3))
    session = session_for(volume)
    session.size = 200
    picture = render_plane(session, "axial")
    top_band = picture[:14, 80:120]
    assert (top_band == 255).all(axis=-1).any()  # white glyph pixels of "A"


@pytest.mark.parametrize("kind", ["RAS", "LPS", "oblique"])
def test_orientation_letters_follow_the_affine_axes(kind):
    """Each plane's row/column voxel axes point where its letters say (signs from the affine)."""
    affine = make_affine(kind)
    volume, _ = marker_volume(affine, np.zeros(3))
    session = session_for(volume)
    letter_axis = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}
    for axis in AXES:
        view = session.views[axis]
        centre = np.array(SHAPE) // 2
        s, r, c = view.to_display(centre)
        down = voxel_to_world(affine, view.to_voxel(s, r + 1, c)) - voxel_to_world(
            affine, view.to_voxel(s, r, c)
        )
        right = voxel_to_world(affine, view.to_voxel(s, r, c + 1)) - voxel_to_world(
            affine, view.to_voxel(s, r, c)
        )
        letters = view.labels()
        w_axis, sign = letter_axis[letters["bottom"]]
        assert np.sign(down[w_axis]) == sign and abs(down[w_axis]) >= 0.5 * np.linalg.norm(down)
        w_axis, sign = letter_axis[letters["right"]]
        assert np.sign(right[w_axis]) == sign and abs(right[w_axis]) >= 0.5 * np.linalg.norm(right)


def test_aspect_ratio_of_anisotropic_voxels():
    """1 x 1 x 4 mm voxels: the coronal picture is as tall (mm) as it is on the patient."""
    affine = make_affine("RAS", spacing=(1.0, 1.0, 4.0))
    volume, _ = marker_volume(affine, np.zeros(3))
    session = session_for(volume)
    picture = render_plane(session, "coronal")  # rows = S (16 x 4 mm), cols = R-L (20 x 1 mm)
    h, w = picture.shape[:2]
    assert h / w == pytest.approx(64 / 20, rel=0.02)
    axial = render_plane(session, "axial")  # 24 x 20 mm
    assert axial.shape[0] / axial.shape[1] == pytest.approx(24 / 20, rel=0.02)


def test_viewport_zoom_maps_clicks_both_ways():
    vp = Viewport.fit(100, 80, (1.0, 2.0), size=300, zoom=2.5, center=(10, 70))
    assert vp.out_w > vp.out_h  # 80 x 2 mm wider than 100 x 1 mm
    assert vp.r0 == 0.0 and vp.c0 + vp.cols == pytest.approx(80)  # clamped inside the slice
    rows, cols = vp.sample_indices()
    for y in range(0, vp.out_h, 7):
        for x in range(0, vp.out_w, 11):
            assert vp.to_slice(x, y) == (rows[y], cols[x])
    for r in range(0, 40, 3):
        for c in range(48, 80, 3):
            assert vp.to_slice(*vp.to_image(r, c)) == (r, c)


def test_window_presets_match_ohif():
    assert WINDOW_PRESETS["soft_tissue"] == (40.0, 400.0)
    assert WINDOW_PRESETS["lung"] == (-600.0, 1500.0)
    assert WINDOW_PRESETS["liver"] == (90.0, 150.0)
    assert WINDOW_PRESETS["bone"] == (480.0, 2500.0)
    assert WINDOW_PRESETS["brain"] == (40.0, 80.0)
    hu = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0])
    assert apply_window(hu, *WINDOW_PRESETS["soft_tissue"]).tolist() == [0, 0, 127, 255, 255]


def test_preset_changes_the_picture_not_the_data():
    volume, _ = marker_volume(make_affine("RAS"), np.zeros(3))
    session = session_for(volume)
    before = render_plane(session, "axial").copy()
    cb.set_preset(session, "bone")
    assert session.window == WINDOW_PRESETS["bone"]
    assert not np.array_equal(before, render_plane(session, "axial"))
    cb.set_window(session, 50.0, 100.0)
    assert session.preset == "manual"
    assert np.array_equal(before, render_plane(session, "axial"))


def test_overlay_colours_opacity_visibility_outline():
    image = np.full((10, 12), 100.0, np.float32)
    labels = np.zeros((10, 12), np.uint16)
    labels[2:8, 2:6] = 1
    labels[2:8, 7:11] = 3
    vp = Viewport.fit(10, 12, size=12)
    window = (127.5, 255.0)  # 100 -> grey 100
    full = render_slice(image, vp, window, labels, LabelStyle(opacity=1.0))
    assert tuple(full[4, 3]) == label_color(1) and tuple(full[4, 8]) == label_color(3)
    assert tuple(full[0, 0]) == (100, 100, 100)
    half = render_slice(image, vp, window, labels, LabelStyle(opacity=0.5))
    expected = np.rint(0.5 * 100 + 0.5 * np.array(label_color(1))).astype(int)
    assert np.array_equal(half[4, 3], expected)
    hidden = render_slice(image, vp, window, labels, LabelStyle(1.0, visible=frozenset({3})))
    assert tuple(hidden[4, 3]) == (100, 100, 100) and tuple(hidden[4, 8]) == label_color(3)
    outline = render_slice(image, vp, window, labels, LabelStyle(0.2, outline=True))
    assert tuple(outline[2, 3]) == label_color(1)  # edge: opaque
    assert tuple(outline[4, 3]) == (100, 100, 100)  # inside: not drawn
    clear = render_slice(image, vp, window, labels, LabelStyle(opacity=0.0))
    assert (clear == 100).all()


@pytest.mark.parametrize("kind", ["RAS", "LPS", "oblique"])
def test_click_moves_the_crosshair_to_the_same_voxel_in_all_planes(kind):
    volume, _ = marker_volume(make_affine(kind, spacing=(0.8, 1.0, 2.5)), np.zeros(3))
    session = session_for(volume)
    session.zoom = 1.5
    rng = np.random.default_rng(0)
    for axis in AXES:
        cb.set_view(session, 1.5, 0.5, False, [])
        for _ in range(3):
            render_plane(session, axis)
            vp = session.viewports[axis]
            x, y = rng.uniform(0, vp.out_w - 1), rng.uniform(0, vp.out_h - 1)
            before_slice = session.slice_of(axis)
            cb.click(session, axis, x, y, hub=None)
            assert session.slice_of(axis) == before_slice  # a click never changes the slice
            ijk = np.array(session.crosshair)
            for other in AXES:
                picture = render_plane(session, other)
                view, port = session.views[other], session.viewports[other]
                s, row, col = view.to_display(ijk)
                assert np.array_equal(view.to_voxel(s, *port.to_slice(*port.to_image(row, col))),
                                      ijk)  # fmt: skip
                # the crosshair line is drawn through that point
                cx, cy = (int(round(v)) for v in port.to_image(row, col))
                line = picture[cy, :] if 0 <= cy < picture.shape[0] else None
                assert line is not None and (line == CROSSHAIR_COLOR).all(axis=-1).any()
                del cx


def test_slider_moves_only_its_own_axis():
    volume, _ = marker_volume(make_affine("oblique"), np.zeros(3))
    session = session_for(volume)
    start = {a: session.slice_of(a) for a in AXES}
    cb.set_slice(session, "coronal", 3)
    assert session.slice_of("coronal") == 3
    assert session.slice_of("axial") == start["axial"]
    assert session.slice_of("sagittal") == start["sagittal"]


@pytest.mark.parametrize("kind", ["LPS", "oblique"])
def test_export_is_on_the_original_grid(tmp_path, kind):
    import nibabel as nib

    affine = make_affine(kind, spacing=(0.7, 0.9, 3.0))
    array = np.random.default_rng(1).normal(size=SHAPE).astype(np.float32)
    src = tmp_path / "scan.nii.gz"
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    img.to_filename(src)
    session = cb.open_file(str(src), str(tmp_path))
    session.labels[3:6, 4:9, 2:5] = 2
    session.names[2] = "lesion"
    paths = cb.export(session, str(tmp_path))
    out = load_volume(paths[0], role="label")
    np.testing.assert_allclose(out.affine, affine, atol=1e-5)
    assert out.array.shape == SHAPE
    assert np.array_equal(out.array, session.labels)
    header = nib.load(paths[0]).header
    assert int(header["qform_code"]) == 1 and int(header["sform_code"]) == 2


def test_viewer_and_cli_agree_when_qform_differs_from_sform(tmp_path):
    """C.2 row 17: on an input whose qform (what SimpleITK uses) and sform (nibabel, MONAI, us)
    disagree, ``medseg segment``'s label map opens in the viewer as an overlay on the very same
    voxels, and the viewer's export of it is the CLI's file voxel for voxel, grid and both forms.
    (Runs the CLI on one prompted slice with the shipped LiteMedSAM: a few seconds.)"""
    import nibabel as nib

    from medseg.cli.main import main
    from medseg.transforms.planes import PlaneView

    sform = make_affine("oblique", spacing=(0.7, 0.9, 3.0))
    qform = make_affine("LPS", spacing=(0.7, 0.9, 3.0))  # a different grid altogether
    array = np.random.default_rng(2).normal(100.0, 10.0, size=SHAPE).astype(np.float32)
    array[6:14, 8:17, 5:11] += 400.0  # a bright box to segment
    img = nib.Nifti1Image(array, None)
    img.header.set_qform(qform, code=1)
    img.header.set_sform(sform, code=2)
    src = tmp_path / "forms.nii.gz"
    img.to_filename(src)

    view = PlaneView.from_affine(sform, SHAPE, "axial")
    rows, cols = np.nonzero(view.stack(array > 300)[8])
    box = f"{cols.min() - 2},{rows.min() - 2},{cols.max() + 2},{rows.max() + 2}"
    out = tmp_path / "cli"
    rc = main(["segment", str(src), "-o", str(out), "-q", "--no-propagate", "--axis", "axial",
               "--slice", "8", "--box", box])  # fmt: skip
    assert rc == 0
    cli_path = out / "forms_seg.nii.gz"
    cli = nib.load(str(cli_path))
    cli_labels = np.asarray(cli.dataobj)
    assert cli_labels.any()
    np.testing.assert_allclose(cli.affine, sform, atol=1e-5)  # the sform, not the qform

    session = cb.open_file(str(src), str(tmp_path))
    np.testing.assert_allclose(session.image.affine, sform, atol=1e-5)
    assert session.views["axial"] == PlaneView.from_affine(cli.affine, cli.shape, "axial")
    cb.open_label_file(session, str(cli_path))  # refused if not on the image grid
    assert np.array_equal(session.labels, cli_labels)

    paths = cb.export(session, str(tmp_path))
    exported = nib.load(paths[0])
    assert np.array_equal(np.asarray(exported.dataobj), cli_labels)
    np.testing.assert_allclose(exported.affine, cli.affine, atol=1e-5)
    for form in ("get_qform", "get_sform"):
        ours, ours_code = getattr(exported.header, form)(coded=True)
        theirs, theirs_code = getattr(cli.header, form)(coded=True)
        assert int(ours_code) == int(theirs_code)
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_picture_file_is_the_rendered_picture(tmp_path):
    from PIL import Image

    from apps.viewer.render import picture_file

    volume, _ = marker_volume(make_affine("LPS"), np.zeros(3))
    session = session_for(volume)
    picture = render_plane(session, "sagittal")
    path = picture_file(session, "sagittal", picture, tmp_path)
    assert np.array_equal(np.asarray(Image.open(path)), picture)


def test_window_limits_follow_the_image_range():
    from apps.viewer.render import window_limits

    mr = window_limits(0.0, 1.0, ct=False)
    assert mr["level"] == {"minimum": 0.0, "maximum": 1.0, "step": 0.001}
    assert mr["width"]["minimum"] == 0.001 and mr["width"]["maximum"] == 2.0
    big = window_limits(0.0, 4095.0, ct=False)
    assert big["width"]["step"] == 1.0 and big["level"]["maximum"] == 4095.0
    ct = window_limits(-1000.0, 1500.0, ct=True)  # every HU preset fits
    assert ct["level"]["minimum"] == -1024.0 and ct["level"]["maximum"] == 3071.0
    assert ct["width"]["step"] == 1.0 and ct["width"]["maximum"] >= 4095.0
