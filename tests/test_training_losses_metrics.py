"""Deep-supervision loss weights and the Dice/HD95 helpers."""

from __future__ import annotations

import math

import pytest
import torch

from medseg.losses import DeepSupervisionLoss, nnunet_weights
from medseg.metrics import SegmentationMetrics


def test_nnunet_weights():
    assert nnunet_weights(1) == [1.0]
    w = nnunet_weights(4)
    assert w[-1] == 0.0 and math.isclose(sum(w), 1.0)
    assert math.isclose(w[0] / w[1], 2.0) and math.isclose(w[1] / w[2], 2.0)


def test_deep_supervision_loss_downsamples_labels():
    torch.manual_seed(0)
    label = torch.randint(0, 3, (2, 1, 16, 16, 8)).float()
    full = torch.randn(2, 3, 16, 16, 8, requires_grad=True)
    half = torch.randn(2, 3, 8, 8, 4, requires_grad=True)
    quarter = torch.randn(2, 3, 4, 4, 2, requires_grad=True)
    loss_fn = DeepSupervisionLoss()
    loss = loss_fn([full, half, quarter], label)
    w = nnunet_weights(3)
    single = DeepSupervisionLoss()
    expected = w[0] * single(full, label) + w[1] * single(half, label[:, :, 1::2, 1::2, 1::2])
    assert torch.allclose(loss, expected, atol=1e-5)  # nearest-exact: voxel centres 1, 3, 5...
    loss.backward()
    assert full.grad is not None and half.grad is not None
    assert torch.isfinite(loss_fn(full, label))


def test_metrics_perfect_and_missing():
    label = torch.zeros(1, 1, 10, 10, 10)
    label[0, 0, 2:5, 2:5, 2:5] = 1
    label[0, 0, 6:9, 6:9, 6:9] = 2
    m = SegmentationMetrics(3)
    out = m.update(label.clone(), label, spacing=[1.0, 1.0, 2.0])
    assert torch.allclose(out["dice"], torch.ones(1, 2)) and out["hd95"].eq(0).all()
    pred = label.clone()
    pred[pred == 2] = 0  # class 2 missed entirely -> HD95 is the volume diagonal, not inf
    out = m.update(pred, label, spacing=[1.0, 1.0, 2.0])
    assert out["dice"][0, 1] == 0
    assert math.isclose(float(out["hd95"][0, 1]), math.sqrt(100 + 100 + 400), rel_tol=1e-5)
    res = m.compute()
    assert torch.allclose(res["dice_per_class"], torch.tensor([1.0, 0.5]))
    assert math.isclose(float(res["dice"]), 0.75)
    logits = torch.nn.functional.one_hot(label[:, 0].long(), 3).permute(0, 4, 1, 2, 3).float()
    m.reset()
    assert float(m.update(logits * 5, label)["dice"].mean()) == pytest.approx(1.0)
