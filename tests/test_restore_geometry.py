"""``medseg.inference.restoration``: geometry and intensity guarantees with stand-in nets whose
output is known (identity, trilinear x2), so every difference is the pipeline's."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as F
from torch import nn

from medseg.inference.restoration import Restorer, super_resolved_affine
from medseg.io import Volume

LPS_OBLIQUE = np.array(
    [
        [-0.9, 0.1, 0.0, 30.0],
        [-0.05, -0.8, 0.2, -12.0],
        [0.0, 0.3, 2.5, 7.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


class Identity2D(nn.Module):
    spatial_dims, scale = 2, 1

    def forward(self, x):
        return x.clone()


class Upsample(nn.Module):
    """Nearest x``scale`` upsampling in 2-D or 3-D: a pure geometry probe."""

    def __init__(self, dims: int, scale: int = 2) -> None:
        super().__init__()
        self.spatial_dims, self.scale = dims, scale

    def forward(self, x):
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


class RegionProbe(nn.Module):
    """Outputs the region ids it was given (checks that regions reach the net aligned)."""

    spatial_dims, scale = 2, 1

    def forward(self, x, regions=None):
        return regions[:, None].float()


def _restoration(dims: int, scale: int, scheme: dict) -> dict:
    return {
        "spatial_dims": dims,
        "scale": scale,
        "intensity": scheme,
        "channel": 0,
        "patch_size": [16] * dims,
    }


def _corners(affine: np.ndarray, shape) -> np.ndarray:
    """World positions of the 8 outer voxel-edge corners of a grid."""
    idx = np.array([[i, j, k] for i in (-0.5, shape[0] - 0.5) for j in (-0.5, shape[1] - 0.5)
                    for k in (-0.5, shape[2] - 0.5)])  # fmt: skip
    return (affine[:3, :3] @ idx.T).T + affine[:3, 3]


def test_super_resolved_affine_keeps_extent_and_direction():
    shape = (10, 7, 5)
    out = super_resolved_affine(LPS_OBLIQUE, (2, 2, 2))
    up = tuple(2 * s for s in shape)
    np.testing.assert_allclose(_corners(out, up), _corners(LPS_OBLIQUE, shape), atol=1e-9)
    src = Volume(np.zeros(shape, np.float32), LPS_OBLIQUE)
    dst = Volume(np.zeros(up, np.float32), out)
    np.testing.assert_allclose(dst.spacing, src.spacing / 2)
    np.testing.assert_allclose(dst.direction, src.direction, atol=1e-12)


def test_denoising_keeps_grid_and_units_exactly():
    """Identity net, CT scheme: HU in, the same HU out, on the very same grid and forms."""
    rng = np.random.default_rng(0)
    hu = rng.normal(-200, 300, (20, 18, 6)).astype(np.float32)
    vol = Volume(hu, LPS_OBLIQUE, qform=LPS_OBLIQUE, qform_code=1, sform=LPS_OBLIQUE, sform_code=2)
    scheme = {"scheme": "ct", "mean": 40.0, "std": 350.0}
    out = Restorer(Identity2D(), _restoration(2, 1, scheme), device="cpu").restore(vol).volume
    assert out.array.shape == hu.shape and out.array.dtype == np.float32
    np.testing.assert_allclose(out.array, hu, atol=1e-3)  # HU stays HU
    np.testing.assert_array_equal(out.affine, vol.affine)
    assert (out.qform_code, out.sform_code) == (1, 2)


@pytest.mark.parametrize("scheme", [{"scheme": "zscore"}, {"scheme": "ct", "mean": 0, "std": 1}])
def test_3d_super_resolution_geometry_and_values(scheme):
    """x2 in 3-D on an oblique LPS grid: twice the voxels per axis, half the spacing, same box
    and direction; each output voxel holds the input voxel whose box contains it."""
    rng = np.random.default_rng(1)
    arr = rng.normal(100, 20, (12, 10, 8)).astype(np.float32)
    vol = Volume(arr, LPS_OBLIQUE)
    restorer = Restorer(Upsample(3), _restoration(3, 2, scheme), device="cpu", overlap=0.0)
    out = restorer.restore(vol).volume
    assert out.spatial_shape == (24, 20, 16)
    np.testing.assert_allclose(out.spacing, vol.spacing / 2)
    np.testing.assert_allclose(out.direction, vol.direction, atol=1e-12)
    np.testing.assert_allclose(_corners(out.affine, out.spatial_shape),
                               _corners(vol.affine, vol.spatial_shape), atol=1e-9)  # fmt: skip
    expect = arr.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    np.testing.assert_allclose(out.array, expect, atol=1e-3)


def test_2d_super_resolution_upsamples_in_plane_axes_only():
    """A 2-D x2 net on slices across RAS z: the voxel axis that maps to S/I keeps its size,
    whatever its position in the file."""
    aff = np.array([[0, -1.0, 0, 0], [0, 0, 1.0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])  # S/I first
    arr = np.arange(5 * 6 * 4, dtype=np.float32).reshape(4, 5, 6)
    vol = Volume(arr, aff)
    scheme = {"scheme": "ct", "mean": 0.0, "std": 1.0}
    out = Restorer(Upsample(2), _restoration(2, 2, scheme), device="cpu").restore(vol).volume
    assert out.spatial_shape == (4, 10, 12)
    np.testing.assert_allclose(out.spacing, [3.0, 0.5, 0.5])
    np.testing.assert_allclose(out.array, arr.repeat(2, 1).repeat(2, 2), atol=1e-4)


class _Halves:
    name, faithful = "halves", False

    def partition(self, image):
        ids = np.ones(image.shape, np.int32)
        ids[image.shape[0] // 2 :] = 2
        return ids


def test_region_maps_reach_the_net_on_the_right_pixels():
    arr = np.zeros((16, 12, 3), np.float32)
    restorer = Restorer(RegionProbe(), _restoration(2, 1, {"scheme": "ct", "mean": 0, "std": 1}),
                        device="cpu", partitioner=_Halves())  # fmt: skip
    out = restorer.restore(Volume(arr, np.eye(4))).volume.array
    assert set(np.unique(out[:8])) == {1.0} and set(np.unique(out[8:])) == {2.0}


def test_windows_blend_instead_of_pasting():
    """Windows smaller than the slice with overlap: an identity net still returns the input
    (Gaussian-weighted blending is a partition of unity), including at window seams."""
    rng = np.random.default_rng(2)
    arr = rng.normal(0, 1, (40, 36, 2)).astype(np.float32)
    scheme = {"scheme": "ct", "mean": 0.0, "std": 1.0}
    restorer = Restorer(Identity2D(), _restoration(2, 1, scheme), device="cpu", roi=(16, 16))
    out = restorer.restore(Volume(arr, np.eye(4))).volume.array
    np.testing.assert_allclose(out, arr, atol=1e-4)


def test_bad_overlap_and_roi_are_refused():
    from medseg.errors import InputError

    r = _restoration(2, 1, {"scheme": "zscore"})
    with pytest.raises(InputError, match="overlap"):
        Restorer(Identity2D(), r, device="cpu", overlap=1.0)
    with pytest.raises(InputError, match="roi needs 2"):
        Restorer(Identity2D(), r, device="cpu", roi=(8, 8, 8))


def test_cli_errors_are_one_line_with_exit_codes(tmp_path, capsys):
    from medseg.cli.main import main

    vol = tmp_path / "in.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), vol)
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"not a checkpoint")
    cases = [
        (["--checkpoint", str(tmp_path / "missing.ckpt")], 4, "checkpoint not found"),
        (["--checkpoint", str(bad)], 4, "not a medseg training checkpoint"),
        (["--checkpoint", str(bad), "--seg-checkpoint", str(bad)], 2, "go together"),
        (["--checkpoint", str(bad), "--roi", "a,b"], 2, "--roi"),
    ]
    for extra, code, words in cases:
        assert main(["restore", str(vol), "-o", str(tmp_path / "out"), *extra]) == code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and words in err[0], err
    assert not list((tmp_path / "out").glob("*.nii.gz"))  # nothing written
