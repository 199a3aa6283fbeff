"""Display planes: orientation from the affine, exact inverse, coordinate mapping."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.transforms.planes import AXES, PlaneView, voxel_to_world, world_to_voxel


def _affine(rotation: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0, 0, 0)) -> np.ndarray:
    aff = np.eye(4)
    aff[:3, :3] = rotation @ np.diag(spacing)
    aff[:3, 3] = origin
    return aff


RAS = np.eye(3)
LPS = np.diag([-1.0, -1.0, 1.0])
# voxel axes stored as (k=S, i=R?) permuted: columns say where voxel axes point
PERMUTED = np.array([[0, 0, -1.0], [1.0, 0, 0], [0, -1.0, 0]])  # i->A, j->I, k->L


def _oblique(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1.0]])


@pytest.mark.parametrize(
    "rotation", [RAS, LPS, PERMUTED, _oblique(30)], ids=["RAS", "LPS", "perm", "obl"]
)
@pytest.mark.parametrize("axis", AXES)
def test_stack_unstack_roundtrip_and_display_directions(rotation, axis):
    shape = (7, 9, 11)
    aff = _affine(rotation, spacing=(1.0, 2.0, 3.0))
    view = PlaneView.from_affine(aff, shape, axis)
    vol = np.arange(np.prod(shape)).reshape(shape)
    stack = view.stack(vol)
    assert stack.shape == (view.num_slices, view.height, view.width)
    np.testing.assert_array_equal(view.unstack(stack), vol)

    # moving one pixel down / right on screen moves the world point towards the expected side
    s, r, c = view.num_slices // 2, view.height // 2, view.width // 2
    p0 = voxel_to_world(aff, view.to_voxel(s, r, c))
    down = voxel_to_world(aff, view.to_voxel(s, r + 1, c)) - p0
    right = voxel_to_world(aff, view.to_voxel(s, r, c + 1)) - p0
    world_down = {"axial": (1, -1), "coronal": (2, -1), "sagittal": (2, -1)}[axis]
    world_right = {"axial": (0, -1), "coronal": (0, -1), "sagittal": (1, -1)}[axis]
    assert np.sign(down[world_down[0]]) == world_down[1]
    assert np.sign(right[world_right[0]]) == world_right[1]
    # the displayed pixel holds exactly the voxel to_voxel names
    ijk = view.to_voxel(s, r, c).astype(int)
    assert stack[s, r, c] == vol[tuple(ijk)]
    assert view.to_display(ijk) == (s, r, c)


def test_orientation_letters():
    view = PlaneView.from_affine(np.eye(4), (4, 4, 4), "axial")
    assert view.labels() == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert PlaneView.from_affine(np.eye(4), (4, 4, 4), "sagittal").labels()["left"] == "A"


def test_lps_and_ras_show_the_same_picture():
    """The same anatomy stored RAS or LPS must display identically."""
    rng = np.random.default_rng(0)
    ras = rng.random((5, 6, 7))
    lps = ras[::-1, ::-1, :]  # the same voxels with i and j reversed
    aff_ras = _affine(RAS)
    aff_lps = _affine(LPS, origin=(4, 5, 0))
    for axis in AXES:
        a = PlaneView.from_affine(aff_ras, ras.shape, axis).stack(ras)
        b = PlaneView.from_affine(aff_lps, lps.shape, axis).stack(lps)
        if axis != "axial":  # slice index is the voxel index, which runs the other way in LPS
            b = b[::-1]
        np.testing.assert_array_equal(a, b)


def test_pixel_spacing_and_world_roundtrip():
    aff = _affine(_oblique(30), spacing=(0.5, 0.5, 50.0), origin=(10, -20, 30))
    view = PlaneView.from_affine(aff, (10, 10, 3), "coronal")
    assert view.pixel_spacing == pytest.approx((50.0, 0.5))
    ijk = np.array([[1.0, 2.0, 1.0], [9.0, 0.0, 2.0]])
    np.testing.assert_allclose(world_to_voxel(aff, voxel_to_world(aff, ijk)), ijk, atol=1e-9)


def test_unknown_axis():
    with pytest.raises(ValueError, match="axial, coronal, sagittal"):
        PlaneView.from_affine(np.eye(4), (2, 2, 2), "oblique")
