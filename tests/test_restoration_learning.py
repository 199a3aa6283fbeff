"""Tiny RAT and tiny DISGAN learn on synthetic pairs on CPU and improve PSNR by >= 3 dB over
the degraded input on a held-out phantom, measured through ``medseg restore`` (the whole user
path: ``medseg fit`` -> checkpoint -> ``medseg restore`` -> volume on disk)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from restoration_kit import (
    SPACING,
    TINY_RAT,
    held_out,
    make_restoration_prepared,
    psnr,
    restoration_config,
    tiny_disgan,
)
from training_kit import _affine

from medseg.cli.main import main
from medseg.inference.restoration import super_resolved_affine
from medseg.transforms.degrade import downsample
from medseg.transforms.pairs import PairedDegradation

pytestmark = pytest.mark.slow

NOISE = [{"kind": "gaussian_noise", "sigma": 0.08}]


@pytest.fixture(scope="module")
def rat_ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rat")
    prep = make_restoration_prepared(tmp, n_cases=4, shape=(48, 48, 8))
    model = {
        "class_path": "medseg.engine.RestorationTask",
        "init_args": {
            "net": TINY_RAT,
            "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 2e-3}},
            "schedule": "constant",
        },
    }
    cfg = restoration_config(
        tmp,
        prep,
        model=model,
        degradations=NOISE,
        spatial_dims=2,
        patch_size=[32, 32],
        partitioner={
            "class_path": "medseg.inference.regions.KMeansPartitioner",
            "init_args": {"n_regions": 6},
        },
    )
    assert main(["fit", "--config", str(cfg)]) == 0
    return tmp / "run" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def disgan_ckpt(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("disgan")
    prep = make_restoration_prepared(tmp, n_cases=4, shape=(32, 32, 32))
    model = {
        "class_path": "medseg.engine.AdversarialRestorationTask",
        "init_args": {
            "net": tiny_disgan(16),
            "optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": 1e-3}},
        },
    }
    cfg = restoration_config(
        tmp,
        prep,
        model=model,
        degradations=[{"kind": "downsample", "factor": 2, "mode": "area"}],
        spatial_dims=3,
        patch_size=[16, 16, 16],
        steps=20,
        samples_per_volume=2,
    )
    assert main(["fit", "--config", str(cfg)]) == 0
    return tmp / "run" / "checkpoints" / "last.ckpt"


def test_tiny_rat_denoises_a_held_out_volume(rat_ckpt, tmp_path):
    clean_path, clean = held_out(tmp_path, (48, 48, 8))
    pairing = PairedDegradation(NOISE, seed=7)
    noisy = np.stack(
        [pairing(torch.from_numpy(clean[None, ..., z]), key=z)[0][0].numpy() for z in range(8)],
        axis=-1,
    )
    noisy_path = tmp_path / "noisy.nii.gz"
    nib.save(nib.Nifti1Image(noisy, _affine(SPACING)), noisy_path)
    out = tmp_path / "out"
    assert main(["restore", str(noisy_path), "-o", str(out), "--checkpoint", str(rat_ckpt)]) == 0
    restored = nib.load(out / "noisy_restored.nii.gz")
    np.testing.assert_array_equal(restored.affine, nib.load(noisy_path).affine)
    before, after = psnr(noisy, clean), psnr(np.asarray(restored.dataobj, np.float32), clean)
    assert after - before >= 3.0, (before, after)
    report = json.loads((out / "noisy_restore.json").read_text(encoding="utf-8"))
    assert report["inference"]["regions"]["name"].startswith("kmeans")


def test_tiny_disgan_super_resolves_a_held_out_volume(disgan_ckpt, tmp_path):
    """x2 in 3-D: the output lands exactly on the clean volume's grid (same affine), and beats
    the degraded input brought to that grid (nearest) by >= 3 dB."""
    _, clean = held_out(tmp_path, (32, 32, 32))
    lr = downsample(torch.from_numpy(clean)[None], 2, mode="area")[0].numpy()
    lr_affine = super_resolved_affine(_affine(SPACING), (0.5, 0.5, 0.5))
    lr_path = tmp_path / "lr.nii.gz"
    nib.save(nib.Nifti1Image(lr, lr_affine), lr_path)
    out_path = tmp_path / "sr.nii.gz"
    argv = ["restore", str(lr_path), "-o", str(out_path), "--checkpoint", str(disgan_ckpt)]
    assert main([*argv, "--scale", "2"]) == 0
    sr = nib.load(out_path)
    assert sr.shape == clean.shape
    np.testing.assert_allclose(sr.affine, _affine(SPACING), atol=1e-6)
    nearest = lr.repeat(2, 0).repeat(2, 1).repeat(2, 2)
    before, after = psnr(nearest, clean), psnr(np.asarray(sr.dataobj, np.float32), clean)
    assert after - before >= 3.0, (before, after)
    assert (tmp_path / "sr_restore.json").is_file()


def test_restore_refuses_a_wrong_scale_and_existing_outputs(rat_ckpt, tmp_path, capsys):
    path, _ = held_out(tmp_path, (32, 32, 4))
    out = tmp_path / "out"
    base = ["restore", str(path), "-o", str(out), "--checkpoint", str(rat_ckpt)]
    assert main([*base, "--scale", "2"]) == 2
    assert "upsamples by 1" in capsys.readouterr().err
    assert main([*base, "--regions", "none"]) == 0
    assert main(base) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*base, "--overwrite"]) == 0


def test_restore_a_folder_of_volumes(rat_ckpt, tmp_path, capsys):
    """A folder of volumes: each case restored on its own grid; a broken case is listed, the
    others still written, the exit code is the failure's; -o must then be a folder."""
    cases = tmp_path / "cases"
    cases.mkdir()
    for name, shape in (("a", (32, 32, 4)), ("b", (24, 40, 3))):
        (tmp_path / name).mkdir()
        path, _ = held_out(tmp_path / name, shape)
        path.rename(cases / f"{name}.nii.gz")
    (cases / "broken.nii.gz").write_bytes(b"not a volume")
    (cases / "notes.txt").write_text("x", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["restore", str(cases), "-o", str(out), "--checkpoint", str(rat_ckpt)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "ignoring entries that are not volume files: notes.txt" in err
    assert "1 of 3 case(s) failed: broken.nii.gz" in err
    for name in ("a", "b"):
        restored, source = (
            nib.load(out / f"{name}_restored.nii.gz"),
            nib.load(cases / f"{name}.nii.gz"),
        )
        assert restored.shape == source.shape
        np.testing.assert_array_equal(restored.affine, source.affine)
        assert (out / f"{name}_restore.json").is_file()
    assert not (out / "broken_restored.nii.gz").exists()
    assert main([*argv[:3], str(tmp_path / "x.nii.gz"), *argv[4:]]) == 2
    assert "-o must name an output folder" in capsys.readouterr().err


def test_segment_with_a_restoration_checkpoint_names_the_right_command(rat_ckpt, tmp_path, capsys):
    path, _ = held_out(tmp_path, (32, 32, 4))
    argv = ["segment", str(path), "-o", str(tmp_path / "o"), "--checkpoint", str(rat_ckpt)]
    assert main(argv) == 4
    assert "medseg restore" in capsys.readouterr().err


def test_downstream_dice_change_is_reported(rat_ckpt, tmp_path):
    """--seg-checkpoint/--reference: the input and the restored volume are both segmented and
    scored against the reference; the report carries both Dice values and their difference."""
    from training_kit import make_prepared, tiny_config

    prep = make_prepared(tmp_path, n_cases=3, shape=(24, 20, 8))
    assert main(["fit", "--config", str(tiny_config(tmp_path, prep))]) == 0
    seg = tmp_path / "run" / "checkpoints" / "last.ckpt"
    image = tmp_path / "raw" / "imagesTr" / "case_000.nii.gz"
    label = tmp_path / "raw" / "labelsTr" / "case_000.nii.gz"
    out = tmp_path / "out"
    argv = ["restore", str(image), "-o", str(out), "--checkpoint", str(rat_ckpt)]
    assert main([*argv, "--seg-checkpoint", str(seg), "--reference", str(label)]) == 0
    d = json.loads((out / "case_000_restore.json").read_text(encoding="utf-8"))["downstream"]
    assert set(d["labels"]) == {"shell", "core"}
    assert 0.0 <= d["dice_input"] <= 1.0 and 0.0 <= d["dice_restored"] <= 1.0
    assert d["delta"] == pytest.approx(d["dice_restored"] - d["dice_input"])
    assert main([*argv, "--overwrite", "--seg-checkpoint", str(seg)]) == 2  # needs --reference
