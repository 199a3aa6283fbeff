"""Viewer callbacks driven from Python (no browser, no server): open, errors, prompts with the
real LiteMedSAM on a small synthetic volume, objects, undo/reset, models, export, isolation.

LiteMedSAM runs on 48 x 40 slices (each slice encoded once per session and window: about
0.5-1.5 s on 2 CPU cores); the whole file takes well under a minute.
"""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from testkit import ellipsoid_volume, write_nifti

from apps.viewer import callbacks as cb
from apps.viewer.models import ModelHub
from apps.viewer.render import compare_pictures, legend_html, render_all
from apps.viewer.state import new_session
from medseg.metrics import dice

SHAPE = (48, 40, 12)


@pytest.fixture(scope="module")
def hub() -> ModelHub:
    return ModelHub(device="cpu")


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """``(path, mask (X, Y, Z))``: two bright ellipsoids (the second is the 'kidney')."""
    folder = tmp_path_factory.mktemp("scan")
    image, mask = ellipsoid_volume(SHAPE, center=(16, 20, 6), radii=(9, 8, 4))
    second, mask2 = ellipsoid_volume(SHAPE, center=(37, 20, 6), radii=(6, 6, 3), seed=1)
    image[mask2] = second[mask2]
    return write_nifti(folder / "scan.nii.gz", image), mask, mask2


def box_around(session, mask, axis="axial", margin=3):
    view = session.views[axis]
    s = session.slice_of(axis)
    rows, cols = np.nonzero(view.stack(mask)[s])
    return s, (cols.min() - margin, rows.min() - margin, cols.max() + margin, rows.max() + margin)


def open_scan(scan, tmp_path):
    return cb.open_file(str(scan[0]), str(tmp_path))


def one_line_error(excinfo) -> str:
    message = excinfo.value.message
    assert "\n" not in message and "Traceback" not in message
    return message


# opening ----------------------------------------------------------------------------------------
def test_open_file_gives_a_session(scan, tmp_path):
    session = open_scan(scan, tmp_path)
    assert session.image.spatial_shape == SHAPE
    assert session.crosshair == (24, 20, 6)
    assert session.preset == "auto" and session.window[1] > 0
    pictures = render_all(session)
    assert set(pictures) == {"axial", "coronal", "sagittal"}
    assert all(p.dtype == np.uint8 and p.shape[2] == 3 for p in pictures.values())


@pytest.mark.parametrize(
    "name, payload",
    [
        ("random.nii.gz", b"\x00\x01garbage" * 40),
        ("empty.nii", b""),
        ("fake.png", b"not a png at all"),
        ("broken.zip", b"PK\x03\x04 broken"),
        ("text.nrrd", b"hello"),
    ],
)
def test_bad_file_gives_one_line_error(tmp_path, name, payload):
    bad = tmp_path / name
    bad.write_bytes(payload)
    with pytest.raises(gr.Error) as excinfo:
        cb.open_file(str(bad), str(tmp_path))
    assert name in one_line_error(excinfo) or "zip" in excinfo.value.message


def test_server_paths_stay_under_root(scan, tmp_path):
    root = scan[0].parent
    session = cb.open_server_path("scan.nii.gz", str(root), str(tmp_path))
    assert session.image.spatial_shape == SHAPE
    for escape in ("../../etc/passwd", "/etc/passwd", "scan.nii.gz/../../x"):
        with pytest.raises(gr.Error) as excinfo:
            cb.open_server_path(escape, str(root), str(tmp_path))
        assert "outside the allowed root" in one_line_error(excinfo)
    with pytest.raises(gr.Error, match="--root"):
        cb.open_server_path("scan.nii.gz", None, str(tmp_path))


@pytest.mark.parametrize("kind", ["mhd", "nrrd"])
@pytest.mark.parametrize("target", ["absolute", "climbing"])
def test_headers_cannot_show_files_outside_their_folder(tmp_path, kind, target):
    """Issue 15.1: a header under --root (or uploaded) naming a data file elsewhere is refused,
    so the value read-out can never show another file's bytes."""
    import bad_inputs

    root = tmp_path / "root"
    root.mkdir()
    secret = tmp_path / "secret.raw"
    secret.write_bytes(bad_inputs.small_array((8, 7, 6), np.int16).tobytes(order="F"))
    name = str(secret) if target == "absolute" else "../secret.raw"
    maker = bad_inputs._mhd_naming if kind == "mhd" else bad_inputs._nrrd_naming
    header = maker(f"hostile.{kind}", lambda t: name)(root)
    for opened in (
        lambda: cb.open_server_path(header.name, str(root), str(tmp_path)),
        lambda: cb.open_file(str(header), str(tmp_path)),  # an upload lands as a path too
    ):
        with pytest.raises(gr.Error) as excinfo:
            opened()
        assert "lies outside the header's folder" in one_line_error(excinfo)


def test_png_is_shown_as_drawn(tmp_path):
    from PIL import Image

    picture = np.zeros((30, 50), np.uint8)
    picture[2:6, 3:9] = 255  # a block near the top-left corner
    Image.fromarray(picture).save(tmp_path / "photo.png")
    session = cb.open_file(str(tmp_path / "photo.png"), str(tmp_path))
    view = session.views["axial"]
    assert (view.height, view.width) == (30, 50)
    assert np.array_equal(view.stack(session.image.array)[0], picture)


def test_dicom_zip_opens(tmp_path):
    from bad_inputs import CT5N, pydicom_file

    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in sorted(pydicom_file(CT5N).iterdir()):
            z.write(f, f"CT5N/{f.name}")
    session = cb.open_file(str(archive), str(tmp_path))
    assert session.image.spatial_shape[2] == 5
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../escape.dcm", b"x")
    with pytest.raises(gr.Error, match="unsafe member"):
        cb.open_file(str(evil), str(tmp_path))


def test_label_file_must_share_the_grid(scan, tmp_path):
    session = open_scan(scan, tmp_path)
    good = write_nifti(tmp_path / "lab.nii.gz", scan[1].astype(np.uint8) * 3)
    assert "1 label" in cb.open_label_file(session, str(good))
    assert int(session.labels.max()) == 3
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"0": "bg", "3": "liver"}}))
    cb.open_label_file(session, str(tmp_path / "dataset.json"))
    assert session.names[3] == "liver" and "liver" in legend_html(session)
    wrong = write_nifti(tmp_path / "wrong.nii.gz", np.zeros((5, 5, 5), np.uint8))
    with pytest.raises(gr.Error) as excinfo:
        cb.open_label_file(session, str(wrong))
    assert "shape" in one_line_error(excinfo)


# prompts ----------------------------------------------------------------------------------------
def test_box_prompt_then_points_refine(scan, tmp_path, hub):
    session = open_scan(scan, tmp_path)
    s, box = box_around(session, scan[1])
    message = cb.prompt_text(session, f"axial {s} box {' '.join(map(str, box))}", hub)
    assert "pixels" in message
    view = session.views["axial"]
    got = view.stack(session.labels)[s] == 1
    truth = view.stack(scan[1])[s]
    assert dice(got, truth) > 0.8
    assert session.labels.sum() == got.sum()  # only that slice
    # a negative point inside the object removes part of it
    rows, cols = np.nonzero(truth)
    cb.prompt_text(session, f"axial {s} point {cols.mean():.0f} {rows.mean():.0f} -", hub)
    assert session.objects[1].points and session.objects[1].box == box
    assert (view.stack(session.labels)[s] == 1).sum() != got.sum()


def test_box_by_two_clicks(scan, tmp_path, hub):
    session = open_scan(scan, tmp_path)
    render_all(session)
    s, (x0, y0, x1, y1) = box_around(session, scan[1])
    vp = session.viewports["axial"]
    session.mode = "box"
    assert "opposite corner" in cb.click(session, "axial", *vp.to_image(y0, x0), hub)
    assert not session.labels.any() and session.pending is not None
    cb.click(session, "axial", *vp.to_image(y1, x1), hub)
    assert session.objects[1].box == (x0, y0, x1, y1)
    assert (session.views["axial"].stack(session.labels)[s] == 1).sum() > 50


def test_bad_prompt_is_refused_and_changes_nothing(scan, tmp_path, hub):
    session = open_scan(scan, tmp_path)
    with pytest.raises(gr.Error) as excinfo:
        cb.prompt_text(session, "axial 6 box 100 100 120 120", hub)
    assert "outside" in one_line_error(excinfo)
    assert not session.objects and not session.history
    with pytest.raises(gr.Error, match="cannot read prompt"):
        cb.prompt_text(session, "sideways 3 box 1 2", hub)


def test_several_objects_undo_reset_and_propagate(scan, tmp_path, hub):
    session = open_scan(scan, tmp_path)
    s, box = box_around(session, scan[1])
    cb.prompt_text(session, f"axial {s} box {' '.join(map(str, box))}", hub)
    cb.new_object(session, "kidney")
    _, box2 = box_around(session, scan[2])
    cb.prompt_text(session, f"axial {s} box {' '.join(map(str, box2))}", hub)
    assert set(np.unique(session.labels)) == {0, 1, 2}
    assert session.names[2] == "kidney" and session.active == 2
    view = session.views["axial"]
    assert dice(view.stack(session.labels)[s] == 2, view.stack(scan[2])[s]) > 0.7
    # propagate object 2 three slices each way
    message = cb.propagate(session, hub, 3)
    assert "propagated" in message
    per_slice = (view.stack(session.labels) == 2).reshape(SHAPE[2], -1).any(axis=1)
    assert per_slice[s - 2 : s + 3].all() and not per_slice[: s - 3].any()
    assert dice(session.labels == 2, scan[2]) > 0.6
    # undo the propagation, then the kidney prompt
    cb.undo(session)
    assert (session.labels == 2).reshape(-1, SHAPE[2]).any(axis=0).sum() == 1
    cb.undo(session)
    assert 2 not in np.unique(session.labels) and 1 in np.unique(session.labels)
    cb.reset(session)
    assert not session.labels.any() and not session.objects
    cb.undo(session)  # reset is undoable too
    assert 1 in np.unique(session.labels)


def test_sessions_are_isolated(scan, tmp_path, hub):
    source = cb.open_file.__wrapped__(str(scan[0]), str(tmp_path)).source
    a = new_session(source, "a", window=(300.0, 600.0), preset="manual")
    b = new_session(source, "b", window=(300.0, 600.0), preset="manual")
    s, box = box_around(a, scan[1])
    cb.prompt_text(a, f"axial {s} box {' '.join(map(str, box))}", hub)
    cb.set_slice(a, "axial", 2)
    cb.set_preset(a, "bone")
    assert a.labels.any() and not b.labels.any()
    assert b.slice_of("axial") == s and b.window == (300.0, 600.0)
    assert a.predictor is not None and b.predictor is None
    cb.prompt_text(b, f"axial {s} point {box[0] + 6} {box[1] + 6}", hub)
    pa, pb = a.prompted.predictor, b.prompted.predictor  # the sessions' LiteMedSAM predictors
    assert a.predictor is not b.predictor and pa is not pb and pa.net is pb.net
    assert pa._cache is not pb._cache
    assert a.labels is not b.labels and source.array.max() == b.image.array.max()


# models and export ------------------------------------------------------------------------------
class ThresholdSegmenter:
    label_names = {1: "bright"}

    def segment(self, volume):
        from apps.viewer.state import Session  # noqa: F401 - only to prove apps import works

        class Out:
            labels = volume.with_array((volume.array > 300).astype(np.uint8))

        return Out()


def test_automatic_segmentation_and_restoration(scan, tmp_path):
    def smooth(volume):
        return volume.with_array(volume.array * 0.5)

    hub = ModelHub(segmenters={"threshold": ThresholdSegmenter()}, restorers={"half": smooth})
    session = open_scan(scan, tmp_path)
    assert compare_pictures(session) == (None, None)
    cb.auto_segment(session, hub, "threshold")
    assert session.names == {1: "bright"} and dice(session.labels == 1, scan[1] | scan[2]) > 0.95
    cb.restore(session, hub, "half")
    before, after = compare_pictures(session)
    assert before.shape == after.shape and not np.array_equal(before, after)
    with pytest.raises(gr.Error, match="no segmentation model"):
        cb.auto_segment(session, hub, "missing")


def test_export_nifti_csv_json(scan, tmp_path):
    session = open_scan(scan, tmp_path)
    session.labels[scan[1]] = 1
    session.labels[scan[2]] = 4
    session.names.update({1: "liver", 4: "kidney"})
    label_path, csv_path, json_path = cb.export(session, str(tmp_path))
    assert label_path.endswith("scan_labels.nii.gz")
    rows = list(csv.DictReader(Path(csv_path).read_text(encoding="utf-8").splitlines()))
    assert [(r["label"], r["name"], int(r["voxels"])) for r in rows] == [
        ("1", "liver", int(scan[1].sum())),
        ("4", "kidney", int(scan[2].sum())),
    ]
    report = json.loads(Path(json_path).read_text(encoding="utf-8"))
    assert report["labels"][0]["volume_ml"] == pytest.approx(scan[1].sum() / 1000.0)
    assert "not a medical device" in report["note"]
    again = cb.export(session, str(tmp_path))  # a second export never clobbers the first
    assert again[0] != label_path


def test_actions_without_a_volume_say_so(hub):
    for action in (lambda: cb.set_slice(None, "axial", 1), lambda: cb.undo(None),
                   lambda: cb.prompt_text(None, "axial 1 box 1 1 2 2", hub)):  # fmt: skip
        with pytest.raises(gr.Error, match="open a volume first"):
            action()


def test_cli_view_arguments():
    from medseg.cli.main import main

    assert main(["view", "--auth", "nocolon"]) == 2
    assert main(["view", "--root", "/does/not/exist"]) == 2


def test_session_files_are_bounded_and_discarded(scan, tmp_path):
    from apps.viewer.render import KEEP_PICTURES, picture_file
    from apps.viewer.state import discard

    session = open_scan(scan, tmp_path)
    for _ in range(KEEP_PICTURES + 4):
        path = picture_file(session, "axial", render_all(session)["axial"], tmp_path)
    assert len(list((tmp_path / path.split("/")[-2]).glob("axial-*.png"))) == KEEP_PICTURES
    exported = cb.export(session, str(tmp_path))
    discard(session)
    assert not any(Path(p).exists() for p in [path, *exported])
    assert not list(tmp_path.glob("zip-*")) and not list(tmp_path.glob("render-*"))


def test_statistics_table_has_intensity_and_border(scan, tmp_path):
    from apps.viewer.render import statistics, stats_rows

    session = open_scan(scan, tmp_path)
    session.checkpoint()
    session.labels[scan[1]] = 1
    session.labels[0, :3, :3] = 2  # a corner patch: touches the border
    rows = {r[0]: r for r in stats_rows(statistics(session))}
    image = session.image.array
    assert rows[1][4] == pytest.approx(image[scan[1]].mean(), rel=1e-4)
    assert rows[1][5] == pytest.approx(image[scan[1]].std(), rel=1e-3)
    assert rows[1][6] == "" and rows[2][6] == "yes"


def test_channel_selection_of_a_4d_file(tmp_path):
    image, _ = ellipsoid_volume((20, 18, 6))
    four_d = np.stack([image, -image * 2], axis=-1)  # (X, Y, Z, 2)
    path = write_nifti(tmp_path / "two.nii.gz", four_d.astype(np.float32))
    session = cb.open_file(str(path), str(tmp_path))
    assert session.source.num_channels == 2 and session.image.spatial_shape == (20, 18, 6)
    cb.set_channel(session, 1)
    assert np.array_equal(session.image.array, four_d[..., 1])
    assert session.value_range()[1] == pytest.approx(float(four_d[..., 1].max()))
    with pytest.raises(gr.Error, match="outside"):
        cb.set_channel(session, 2)
