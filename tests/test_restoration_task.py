"""Restoration data module, tasks and downstream helpers (fast; the learning runs live in
``test_restoration_learning.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from restoration_kit import make_restoration_prepared
from torch import nn
from training_kit import make_prepared

from medseg.data import RestorationDataModule
from medseg.engine import AdversarialRestorationTask, RestorationTask
from medseg.inference.downstream import dice_per_label, resample_nearest
from medseg.io import Volume
from medseg.losses.restoration import FocalRegionLoss
from medseg.models.disgan.model import tiny as tiny_disgan
from medseg.models.rat.model import tiny as tiny_rat


@pytest.fixture(scope="module")
def prep(tmp_path_factory):
    return make_restoration_prepared(tmp_path_factory.mktemp("prep"), n_cases=3)


def _module(prep, degradations, seed=0, **kw):
    kw = {"spatial_dims": 2, "patch_size": [32, 32], "num_workers": 0, "batch_size": 2} | kw
    return RestorationDataModule(str(prep), degradations, seed=seed, **kw)


def _first(dm, split="train"):
    dm.setup("fit")
    loader = dm.train_dataloader() if split == "train" else dm.val_dataloader()
    return next(iter(loader))


def test_pairs_are_reproducible_and_seeded(prep):
    noise = [{"kind": "gaussian_noise", "sigma": 0.1}]
    a, b, c = (
        _first(_module(prep, noise)),
        _first(_module(prep, noise)),
        _first(_module(prep, noise, seed=1)),
    )
    torch.testing.assert_close(a["input"], b["input"], rtol=0, atol=0)
    torch.testing.assert_close(a["target"], b["target"], rtol=0, atol=0)
    assert not torch.equal(a["input"], c["input"])
    va, vb = _first(_module(prep, noise), "val"), _first(_module(prep, noise, seed=5), "val")
    # same clean slices (up to the z-score map, fitted on the noisy volume) with other noise
    assert (va["target"] - vb["target"]).abs().max() < 0.05
    assert (va["input"] - vb["input"]).abs().max() > 0.2


@pytest.mark.parametrize("dims,patch", [(2, [32, 32]), (3, [16, 16, 8])])
def test_super_resolution_pairs_line_up(prep, dims, patch):
    batch = _first(
        _module(prep, "downsample:factor=2,mode=area", spatial_dims=dims, patch_size=patch)
    )
    x, y = batch["input"], batch["target"]
    assert list(y.shape[2:]) == patch and [2 * s for s in x.shape[2:]] == patch
    pooled = (
        torch.nn.functional.avg_pool3d(y, 2) if dims == 3 else torch.nn.functional.avg_pool2d(y, 2)
    )
    torch.testing.assert_close(x, pooled, atol=1e-4, rtol=0)  # the crop pairs the same anatomy


def test_ct_intensities_keep_the_dataset_map_without_clipping(tmp_path):
    prep = make_prepared(tmp_path, n_cases=3, shape=(24, 20, 8), ct=True)
    dm = _module(prep, [{"kind": "low_dose_ct", "dose_fraction": 0.5}], patch_size=[16, 16])
    scheme = dm.restoration["intensity"]
    assert scheme == {"scheme": "ct", "mean": -300.0, "std": 80.0}  # no clip: HU come back


def test_bad_setups_name_the_fix(prep):
    with pytest.raises(ValueError, match="downsample"):
        _module(prep, "thick_slices:factor=2")
    with pytest.raises(ValueError, match="multiples of scale 4"):
        _module(prep, "downsample:factor=4", patch_size=[30, 30])
    restoration = _module(prep, "downsample:factor=2").restoration
    with pytest.raises(ValueError, match="scale to 2"):
        RestorationTask(tiny_rat(), restoration=restoration)
    with pytest.raises(ValueError, match="spatial_dims"):
        RestorationTask(tiny_rat(scale=2), restoration={**restoration, "spatial_dims": 3})


def test_default_losses():
    assert isinstance(RestorationTask(tiny_rat()).loss_fn, FocalRegionLoss)
    plain = nn.Conv2d(1, 1, 3, padding=1)
    assert isinstance(RestorationTask(plain).loss_fn, nn.L1Loss)


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def _changed(before, after) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


class _StepProbe(AdversarialRestorationTask):
    """Records every parameter after each optimiser step."""

    def configure_optimizers(self):
        opts = super().configure_optimizers()
        self.snaps = [_snapshot(self.net)]
        for opt in opts:
            inner = opt.step

            def step(closure=None, _inner=inner):
                out = _inner(closure) if closure is not None else _inner()
                self.snaps.append(_snapshot(self.net))
                return out

            opt.step = step
        return opts


def test_one_adversarial_step_moves_g_then_d_and_never_the_feature_extractor():
    torch.manual_seed(0)
    task = _StepProbe(tiny_disgan(discriminator_patch_size=16, discriminator_min_size=4))
    batch = {"input": torch.randn(2, 1, 8, 8, 8), "target": torch.randn(2, 1, 16, 16, 16)}
    quiet = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}
    trainer = Trainer(
        max_steps=1, accelerator="cpu", enable_checkpointing=False, limit_val_batches=0, **quiet
    )
    trainer.fit(task, train_dataloaders=torch.utils.data.DataLoader([batch], batch_size=None))
    start, after_g, after_d = task.snaps
    g = {k for k in start if k.startswith("generator.")}
    d = {k for k in start if k.startswith("discriminator.")}
    fe = {k for k in start if k.startswith("feature_extractor.")}
    assert g and d and fe
    assert _changed(start, after_g) and _changed(start, after_g) <= g
    assert _changed(after_g, after_d) and _changed(after_g, after_d) <= d
    assert not _changed(start, after_d) & fe


def test_resample_nearest_and_dice():
    lab = np.zeros((4, 4, 2), np.uint8)
    lab[:2] = 1
    coarse = Volume(lab, np.diag([2.0, 2.0, 2.0, 1.0]))
    fine_aff = np.diag([1.0, 1.0, 1.0, 1.0])
    fine_aff[:3, 3] = -0.5  # the x2 grid over the same box
    fine = Volume(np.zeros((8, 8, 4), np.uint8), fine_aff)
    up = resample_nearest(coarse, fine)
    np.testing.assert_array_equal(up, lab.repeat(2, 0).repeat(2, 1).repeat(2, 2))
    assert dice_per_label(up, up) == {1: 1.0}
    half = up.copy()
    half[:2] = 0
    assert dice_per_label(half, up)[1] == pytest.approx(2 * 32 / (32 + 64))
