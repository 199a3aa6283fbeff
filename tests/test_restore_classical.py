"""Restoration without a checkpoint: DIPY's non-local means / MP-PCA through the API, the CLI and
the viewer; on exactly the input grid, in the input's units, options refused before any work."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

import medseg
from medseg.cli.main import main
from medseg.errors import InputError
from medseg.io.volume import Volume

SHAPE = (40, 36, 24)


def phantom(offset: float = 0.0, scale: float = 100.0) -> np.ndarray:
    """Piecewise-constant blocks and a ball: ``(40, 36, 24)`` float32."""
    i, j, k = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in SHAPE], indexing="ij")
    x = np.zeros(SHAPE, np.float32)
    x[6:34, 6:30, 4:20] = 1.0
    x[((i - 20) ** 2 + (j - 18) ** 2 + (k - 12) ** 2) < 36] = 2.0
    return offset + scale * x


def rician(clean: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    real = clean + sigma * rng.standard_normal(clean.shape)
    imag = sigma * rng.standard_normal(clean.shape)
    return np.sqrt(real**2 + imag**2).astype(np.float32)


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    span = float(ref.max() - ref.min())
    return float(10 * np.log10(span**2 / np.mean((x.astype(np.float64) - ref) ** 2)))


def lps_volume(array: np.ndarray) -> Volume:
    """An oblique-free LPS grid with anisotropic voxels and an off-centre origin."""
    affine = np.diag([-1.2, -0.9, 2.5, 1.0])
    affine[:3, 3] = (12.0, -7.0, 30.0)
    return Volume(array, affine, qform=affine.copy(), qform_code=1, sform=affine.copy(),
                  sform_code=2)  # fmt: skip


def test_default_denoises_rician_mr_on_the_input_grid():
    clean = phantom()
    noisy = lps_volume(rician(clean, 10.0))
    result = medseg.restore(noisy)
    out = result.volume
    assert out.array.dtype == np.float32 and out.spatial_shape == noisy.spatial_shape
    np.testing.assert_array_equal(out.affine, noisy.affine)
    np.testing.assert_array_equal(out.qform, noisy.qform)
    np.testing.assert_array_equal(out.sform, noisy.sform)
    assert (out.qform_code, out.sform_code) == (1, 2)
    gain = psnr(out.array, clean) - psnr(noisy.array, clean)
    assert gain > 4.0, gain
    info = result.details["inference"]
    assert result.details["method"] == "nlmeans" and result.details["checkpoint"] is None
    assert info["noise"] == "rician" and info["sigma_estimated"]
    assert 5.0 < info["sigma"][0] < 20.0  # DIPY's estimate (N=1 reads high), input units
    assert abs(float(out.array[clean == 100].mean()) - 100.0) < 3.0  # units kept


def test_ct_in_hu_gets_the_gaussian_model_and_stays_in_hu():
    clean = phantom(offset=-1000.0, scale=1040.0)  # air -1000, tissue 40, bone 1080 HU
    rng = np.random.default_rng(1)
    noisy = (clean + 60.0 * rng.standard_normal(SHAPE)).astype(np.float32)
    restorer = medseg.Restorer()
    out = restorer.restore(lps_volume(noisy))
    info = out.details["inference"]
    assert info["noise"] == "gaussian" and 40.0 < info["sigma"][0] < 80.0
    assert psnr(out.volume.array, clean) - psnr(noisy, clean) > 4.0
    for value in (-1000.0, 40.0, 1080.0):
        assert abs(float(out.volume.array[clean == value].mean()) - value) < 10.0
    assert restorer.factor == 1


def test_mppca_denoises_a_4d_series_and_refuses_one_volume():
    base = phantom()
    series = np.stack([base * (1.0 + 0.1 * c) for c in range(8)])  # (C, X, Y, Z)
    rng = np.random.default_rng(2)
    noisy = (series + 12.0 * rng.standard_normal(series.shape)).astype(np.float32)
    out = medseg.restore(lps_volume(noisy), method="mppca").volume
    assert out.array.shape == noisy.shape
    assert psnr(out.array, series) - psnr(noisy, series) > 3.0
    with pytest.raises(InputError) as err:
        medseg.restore(lps_volume(noisy[0]), method="mppca")
    assert err.value.code == "bad_method" and "nlmeans" in err.value.message


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"scale": 2}, "or a super-resolution --checkpoint"),
        ({"regions": "sam"}, "--regions"),
        ({"roi": (16, 16)}, "--roi"),
        ({"batch_size": 2}, "--batch-size"),
        ({"method": "bm3d"}, "--method"),
        ({"noise": "poisson"}, "--noise"),
        ({"sigma": -1.0}, "--sigma"),
        ({"method": "mppca", "sigma": 3.0}, "mppca estimates its own noise"),
        ({"checkpoint": "x.ckpt", "method": "nlmeans"}, "not both"),
        ({"checkpoint": "x.ckpt", "noise": "rician"}, "not both"),
    ],
)
def test_bad_options_are_refused_before_any_work(kwargs, words):
    with pytest.raises(InputError) as err:
        medseg.Restorer(**kwargs)
    assert err.value.code == "bad_argument" and words in err.value.message


def test_cli_without_checkpoint_writes_both_files(tmp_path, capsys):
    clean = phantom()
    affine = np.diag([1.2, 0.9, 2.5, 1.0])
    src = tmp_path / "noisy.nii.gz"
    nib.save(nib.Nifti1Image(rician(clean, 10.0), affine), src)
    assert main(["restore", str(src), "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "noisy_restored.nii.gz" in printed and "noisy_restore.json" in printed
    written = nib.load(tmp_path / "out" / "noisy_restored.nii.gz")
    np.testing.assert_allclose(written.affine, affine, atol=1e-6)
    assert written.shape == SHAPE
    assert psnr(np.asarray(written.dataobj), clean) - psnr(rician(clean, 10.0), clean) > 4.0
    report = json.loads((tmp_path / "out" / "noisy_restore.json").read_text())
    assert report["method"] == "nlmeans" and report["checkpoint"] is None
    assert report["output_shape"] == list(SHAPE)


@pytest.mark.parametrize(
    "extra", [["--scale", "2"], ["--regions", "kmeans"], ["--method", "mppca", "--sigma", "2"]]
)
def test_cli_refusals_exit_2_and_write_nothing(tmp_path, capsys, extra):
    src = tmp_path / "noisy.nii.gz"
    nib.save(nib.Nifti1Image(rician(phantom(), 10.0), np.eye(4)), src)
    assert main(["restore", str(src), "-o", str(tmp_path / "out"), *extra]) == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_viewer_offers_the_default_in_one_click():
    from apps.viewer import callbacks as cb
    from apps.viewer.models import DEFAULT_RESTORER, ModelHub
    from apps.viewer.state import new_session

    hub = ModelHub(device="cpu")
    assert list(hub.restorers) == [DEFAULT_RESTORER]
    assert list(ModelHub(classical=False).restorers) == []
    clean = phantom()
    session = new_session(lps_volume(rician(clean, 10.0)), "scan", window=(100.0, 250.0),
                          preset="manual")  # fmt: skip
    message = cb.restore(session, hub, DEFAULT_RESTORER)
    assert message == f"{DEFAULT_RESTORER}: restored (before | after)"
    np.testing.assert_array_equal(session.restored.affine, session.image.affine)
    assert psnr(session.restored.array, clean) - psnr(session.image.array, clean) > 4.0


def test_the_api_lists_the_methods_the_restorer_has():
    from medseg.api import classical as api
    from medseg.inference import classical
    from medseg.inference.self_sr import SelfSR

    assert (*classical.METHODS, SelfSR.method) == api.METHODS
    assert api.DEFAULT_METHOD in classical.METHODS
