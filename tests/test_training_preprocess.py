"""Shared preprocessing: the dict, normalisation, training patches and the Invertd round trip."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Invertd
from training_kit import make_prepared

from medseg.transforms.preprocess import (
    NormaliseIntensityd,
    inference_transforms,
    preprocessing_from_fingerprint,
    training_transforms,
)

KEYS = {
    "spatial_dims",
    "target_spacing",
    "orientation",
    "channel_names",
    "normalisation",
    "labels",
    "patch_size",
    "slice_axis",
}


def _load(prep):
    fp = json.loads((prep / "fingerprint.json").read_text(encoding="utf-8"))
    ds = json.loads((prep / "dataset.json").read_text(encoding="utf-8"))
    return fp, ds


def _case(ds, i=0):
    root = ds["root"]
    entry = ds["training"][i]
    return {"image": f"{root}/{entry['image']}", "label": f"{root}/{entry['label']}"}


def test_preprocessing_dict(tmp_path):
    fp, ds = _load(make_prepared(tmp_path, spacing=(1.5, 1.5, 6.0)))
    pre = preprocessing_from_fingerprint(fp, ds)
    assert set(pre) == KEYS
    assert pre["spatial_dims"] == 3 and pre["orientation"] == "RAS"
    assert pre["slice_axis"] == 2 and pre["patch_size"] == [16, 16, 8]
    assert pre["labels"] == {"0": "background", "1": "shell", "2": "core"}
    json.dumps(pre)  # plain data: it travels in checkpoints
    pre2 = preprocessing_from_fingerprint(fp, ds, spatial_dims=2)
    assert pre2["spatial_dims"] == 2 and pre2["patch_size"] == [32, 32]  # in-plane, rounded to 16
    with pytest.raises(ValueError, match="patch_size"):
        preprocessing_from_fingerprint(fp, ds, patch_size=[16, 16])
    with pytest.raises(ValueError, match="normalisation"):
        preprocessing_from_fingerprint({**fp, "normalisation": []}, ds)


def test_normalisation_ct_and_zscore():
    img = torch.tensor([[[[-1000.0, 0.0], [50.0, 3000.0]]], [[[0.0, 0.0], [2.0, 4.0]]]])
    schemes = [{"scheme": "ct", "clip": [-100.0, 100.0], "mean": 0.0, "std": 50.0}]
    schemes.append({"scheme": "zscore"})
    out = NormaliseIntensityd("image", schemes)({"image": img})["image"]
    assert torch.allclose(out[0].flatten(), torch.tensor([-2.0, 0.0, 1.0, 2.0]))
    assert out[1].flatten()[:2].eq(0).all()  # zeros stay zero (outside the scanned region)
    nz = out[1].flatten()[2:]
    assert torch.allclose(nz.mean(), torch.tensor(0.0), atol=1e-6)


@pytest.mark.parametrize("dims", [2, 3])
def test_training_patches(tmp_path, dims):
    prep = make_prepared(
        tmp_path, shape=(8, 24, 20), spacing=(4.0, 1.0, 1.2), patch_size=(8, 16, 16)
    )
    fp, ds = _load(prep)
    pre = preprocessing_from_fingerprint(fp, ds, spatial_dims=dims)
    tf = training_transforms(pre, augment=True, samples_per_volume=3)
    tf.set_random_state(seed=0)
    samples = tf(_case(ds))
    assert len(samples) == 3
    want = (1, 8, 16, 16) if dims == 3 else (1, 32, 32)  # 2-D: slices across x (4 mm axis)
    for s in samples:
        assert tuple(s["image"].shape) == want and tuple(s["label"].shape) == want
        assert set(s["label"].unique().tolist()) <= {0.0, 1.0, 2.0}
        assert type(s["image"]) is torch.Tensor  # metadata dropped for speed


def test_invertd_round_trip_oblique_anisotropic(tmp_path):
    """A prediction made on the RAS target grid goes back onto an oblique 0.8x1.1x5 mm input."""
    prep = make_prepared(tmp_path, shape=(24, 20, 8), spacing=(0.8, 1.1, 5.0), oblique_deg=30)
    fp, ds = _load(prep)
    fp["target_spacing"] = [1.0, 1.0, 2.5]
    pre = preprocessing_from_fingerprint(fp, ds)
    tf = inference_transforms(pre, label_key="label")
    d = tf(_case(ds))
    assert d["image"].shape[1:] != (24, 20, 8)  # really resampled
    d["pred"] = d["label"].clone()  # a perfect "prediction" on the model grid
    out = Invertd("pred", tf, orig_keys="image", nearest_interp=True)(d)["pred"]
    ref = nib.load(_case(ds)["label"])
    assert tuple(out.shape) == (1, *ref.shape)
    np.testing.assert_allclose(out.affine.numpy(), ref.affine, atol=1e-5)
    pred, truth = out[0].numpy().round(), np.asarray(ref.dataobj)
    for c in (1, 2):
        inter = ((pred == c) & (truth == c)).sum()
        dice = 2 * inter / ((pred == c).sum() + (truth == c).sum())
        assert dice > 0.9, (c, dice)
