"""The viewer with ``medseg fit`` restoration checkpoints: start-up sorting, denoising on the
image grid, super-resolution on a finer grid (the after picture shows the same anatomy at the
same physical size), export of the restored image, bad checkpoints.

Two real checkpoints are trained for a few steps here through ``medseg fit`` (a tiny 2-D RAT
denoiser with k-means regions, a tiny 3-D DISGAN x2): about 10 s together on a busy CPU.
"""

from __future__ import annotations

import shutil

import gradio as gr
import nibabel as nib
import numpy as np
import pytest
import torch
from restoration_kit import TINY_RAT, make_restoration_prepared, restoration_config, tiny_disgan

from apps.viewer import callbacks as cb
from apps.viewer.grids import check_restored, nearest_index
from apps.viewer.models import (
    DEFAULT_RESTORER,
    CheckpointRestorer,
    ModelHub,
    hub_from_checkpoints,
)
from apps.viewer.render import compare_pictures, render_plane
from apps.viewer.state import new_session
from medseg.cli.main import main
from medseg.errors import ModelError
from medseg.inference.automatic import AutomaticSegmenter
from medseg.inference.regions import KMeansPartitioner
from medseg.inference.restoration import super_resolved_affine
from medseg.io.volume import Volume
from medseg.transforms.planes import voxel_to_world, world_to_voxel
from medseg.viz import LabelStyle


def _fit(tmp, *, model, shape, **kw):
    prep = make_restoration_prepared(tmp, n_cases=2, shape=shape)
    cfg = restoration_config(tmp, prep, model=model, max_epochs=1, steps=2,
                             samples_per_volume=1, **kw)  # fmt: skip
    assert main(["fit", "--config", str(cfg)]) == 0
    return tmp / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def rat_ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rat")
    last = _fit(
        tmp,
        model={"class_path": "medseg.engine.RestorationTask", "init_args": {"net": TINY_RAT}},
        shape=(32, 32, 4),
        degradations=[{"kind": "gaussian_noise", "sigma": 0.08}],
        spatial_dims=2,
        patch_size=[32, 32],
        partitioner={
            "class_path": "medseg.inference.regions.KMeansPartitioner",
            "init_args": {"n_regions": 4},
        },
    )
    return shutil.copy(last, tmp / "rat_denoise.ckpt")


@pytest.fixture(scope="module")
def disgan_ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("disgan")
    last = _fit(
        tmp,
        model={
            "class_path": "medseg.engine.AdversarialRestorationTask",
            "init_args": {"net": tiny_disgan(16)},
        },
        shape=(32, 32, 32),
        degradations=[{"kind": "downsample", "factor": 2, "mode": "area"}],
        spatial_dims=3,
        patch_size=[16, 16, 16],
    )
    return shutil.copy(last, tmp / "disgan_x2.ckpt")


@pytest.fixture(scope="module")
def hub(rat_ckpt, disgan_ckpt) -> ModelHub:
    return hub_from_checkpoints([rat_ckpt, disgan_ckpt], device="cpu")


def lps_volume(shape=(20, 16, 8), spacing=(1.2, 0.9, 2.5)) -> Volume:
    """A smooth volume that changes along every axis (a wrong slice or flip shows), on an LPS
    grid with anisotropic voxels and an off-centre origin."""
    i, j, k = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    array = 100.0 + 8.0 * i + 3.0 * j + 40.0 * k + 30.0 * np.sin(i / 3.0) * np.cos(j / 4.0)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = (12.0, -7.0, 30.0)
    return Volume(array.astype(np.float32), affine)


def session_on(volume: Volume):
    lo, hi = float(volume.array.min()), float(volume.array.max())
    return new_session(volume, "scan", window=((lo + hi) / 2, hi - lo), preset="manual")


def shown_slice(session) -> int:
    """Restored axial slice nearest (in mm) to the crosshair, computed from the affines."""
    world = voxel_to_world(session.image.affine, np.asarray(session.crosshair, np.float64))
    position = world_to_voxel(session.restored.affine, world)[2]
    return nearest_index(position, session.restored.spatial_shape[2])


# start-up -------------------------------------------------------------------------------------
def test_restoration_checkpoints_become_restorers(hub):
    assert list(hub.restorers) == ["rat_denoise", "disgan_x2", DEFAULT_RESTORER]
    assert not hub.segmenters
    rat, disgan = hub.restorers["rat_denoise"], hub.restorers["disgan_x2"]
    assert isinstance(rat, CheckpointRestorer) and isinstance(disgan, CheckpointRestorer)
    model = rat.restorer.model  # the loaded medseg.inference.restoration.Restorer
    assert model.takes_regions and isinstance(model.partitioner, KMeansPartitioner)
    assert (rat.scale, disgan.scale) == (1, 2)


def test_segmentation_checkpoint_stays_a_segmenter(tmp_path, rat_ckpt, monkeypatch):
    loaded = []

    def fake(cls, path, **kwargs):
        loaded.append(path)
        return "segmenter"

    monkeypatch.setattr(AutomaticSegmenter, "from_checkpoint", classmethod(fake))
    seg = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"preprocessing": None}}, seg)
    again = shutil.copy(rat_ckpt, tmp_path / "sub.ckpt")
    (tmp_path / "b").mkdir()
    seg2 = shutil.copy(seg, tmp_path / "b" / "last.ckpt")
    hub = hub_from_checkpoints([seg, again, seg2], device="cpu")
    assert list(hub.segmenters) == ["last", "last-2"]
    assert all(s.mode == "automatic" for s in hub.segmenters.values())
    assert list(hub.restorers) == ["sub", DEFAULT_RESTORER] and len(loaded) == 2


@pytest.mark.parametrize("damage", ["truncated", "no_net"])
def test_bad_restoration_checkpoint_fails_at_start(tmp_path, rat_ckpt, damage, capsys, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))  # `medseg view` sets it
    bad = tmp_path / "bad.ckpt"
    if damage == "truncated":
        bad.write_bytes(rat_ckpt.read_bytes()[:400])
    else:
        hp = {"restoration": {"spatial_dims": 2, "scale": 1}}
        torch.save({"state_dict": {}, "hyper_parameters": hp}, bad)
    with pytest.raises(ModelError):
        hub_from_checkpoints([bad], device="cpu")
    assert main(["view", "--checkpoint", str(bad), "--device", "cpu"]) == 4
    assert "bad.ckpt" in capsys.readouterr().err


def test_pickled_objects_need_trust(tmp_path, rat_ckpt, capsys, monkeypatch):
    """A checkpoint holding arbitrary pickled objects is refused (exit 4, naming the flag)
    unless the user trusts it; trusted, it is sorted and loaded like any other."""
    import argparse

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    ckpt = torch.load(rat_ckpt, map_location="cpu", weights_only=False)
    ckpt["extra"] = argparse.Namespace(note="pickled")
    odd = tmp_path / "odd.ckpt"
    torch.save(ckpt, odd)
    with pytest.raises(ModelError) as err:
        hub_from_checkpoints([odd], device="cpu")
    assert err.value.code == "untrusted_checkpoint"
    assert main(["view", "--checkpoint", str(odd), "--device", "cpu"]) == 4
    assert "--trust-checkpoint" in capsys.readouterr().err
    hub = hub_from_checkpoints([odd], device="cpu", trusted=True)
    assert list(hub.restorers) == ["odd", DEFAULT_RESTORER] and hub.restorers["odd"].scale == 1


# denoising: the image grid --------------------------------------------------------------------
def test_denoising_before_after_and_export(hub, tmp_path):
    session = session_on(lps_volume())
    session.labels[5:9, 4:8, :] = 1
    message = cb.restore(session, hub, "rat_denoise")
    assert message == "rat_denoise: restored (before | after)"
    restored = session.restored
    assert restored.spatial_shape == session.image.spatial_shape
    np.testing.assert_array_equal(restored.affine, session.image.affine)
    assert not np.array_equal(restored.array, session.image.array)
    before, after = compare_pictures(session)
    assert before.shape == after.shape and before.dtype == after.dtype == np.uint8
    assert np.array_equal(after, render_plane(session, "axial", restored.array))
    *_, restored_path = cb.export(session, str(tmp_path))
    assert restored_path.endswith("scan_restored.nii.gz")
    written = nib.load(restored_path)
    np.testing.assert_allclose(written.affine, restored.affine, atol=1e-5)
    np.testing.assert_allclose(np.asarray(written.dataobj), restored.array, rtol=1e-6)


# super-resolution: a finer grid ---------------------------------------------------------------
def test_super_resolution_shows_the_same_place(hub, tmp_path):
    session = session_on(lps_volume())
    message = cb.restore(session, hub, "disgan_x2")
    assert "own grid, 40x32x16 voxels of 0.6x0.45x1.25 mm" in message
    restored = session.restored
    np.testing.assert_allclose(
        restored.affine, super_resolved_affine(session.image.affine, (2, 2, 2)), atol=1e-6
    )
    # paint each restored axial slice with its own index, so the picture tells which is shown
    session.restored = restored.with_array(
        np.broadcast_to(np.arange(16, dtype=np.float32), restored.spatial_shape).copy()
    )
    session.window, session.style = (7.5, 16.0), LabelStyle(opacity=0.0)
    for k in (0, 3, 7):
        cb.set_slice(session, "axial", k)
        before, after = compare_pictures(session)
        assert after.shape == before.shape  # the same physical extent at the same mm per pixel
        h, w = before.shape[:2]
        assert h / w == pytest.approx((16 * 0.9) / (20 * 1.2), rel=0.02)
        grey = float(after[h // 4, w // 4, 0])  # off the crosshair lines and letters
        shown = int(np.clip(np.floor(grey / 255.0 * 16.0), 0, 15))
        assert shown == shown_slice(session) and shown in (2 * k, 2 * k + 1)
    *_, restored_path = cb.export(session, str(tmp_path))
    written = nib.load(restored_path)
    assert written.shape == (40, 32, 16)
    np.testing.assert_allclose(written.affine, restored.affine, atol=1e-5)


class Repeat:
    """An exact 'super-resolution': every voxel repeated ``factors`` times on the matching
    finer grid (what the image looks like, drawn with more pixels)."""

    def __init__(self, factors):
        self.factors = factors

    def __call__(self, volume: Volume) -> Volume:
        array = volume.array
        for axis, f in enumerate(self.factors):
            array = array.repeat(f, axis=axis)
        return Volume(array, super_resolved_affine(volume.affine, self.factors))


@pytest.mark.parametrize("factors", [(2, 2, 2), (2, 2, 1), (3, 3, 1)])
def test_finer_grid_picture_matches_the_image(factors):
    """An exactly upsampled volume is drawn like the image: same slice, crop, labels, prompts
    (up to a crosshair or marker shifted by a pixel)."""
    hub = ModelHub(restorers={"repeat": Repeat(factors)})
    session = session_on(lps_volume())
    session.labels[4:10, 3:9, 2:6] = 2
    obj = session.new_object("spot")
    obj.move_to("axial", 3)
    obj.box = (4.0, 3.0, 12.0, 10.0)
    obj.points.append((7.0, 6.0, 1))
    cb.restore(session, hub, "repeat")
    assert session.restored.spatial_shape == tuple(
        n * f for n, f in zip(session.image.spatial_shape, factors, strict=True)
    )
    for k, zoom in ((3, 1.0), (0, 1.0), (7, 1.0), (3, 2.5)):
        cb.set_slice(session, "axial", k)
        session.zoom = zoom
        before, after = compare_pictures(session)
        assert before.shape == after.shape
        assert (before != after).any(axis=-1).mean() < 0.02, (k, zoom)


def test_a_result_off_the_field_of_view_is_refused():
    session = session_on(lps_volume())

    def shifted(volume):
        affine = super_resolved_affine(volume.affine, (2, 2, 2))
        affine[:3, 3] += 5.0
        return Volume(np.zeros((40, 32, 16), np.float32), affine)

    def rotated(volume):
        return Volume(volume.array, np.diag([1.2, 0.9, 2.5, 1.0]))

    hub = ModelHub(restorers={"shifted": shifted, "rotated": rotated}, classical=False)
    for name in hub.restorers:
        with pytest.raises(gr.Error, match="field of view"):
            cb.restore(session, hub, name)
    assert session.restored is None
    with pytest.raises(ValueError, match="4-D"):
        check_restored(session.image, Volume(np.zeros((2, 20, 16, 8)), session.image.affine), "x")
