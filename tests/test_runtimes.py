"""LiteMedSAM's encoder runtimes: OpenVINO against the torch fp32 reference (embeddings and
masks), its on-disk cache and what invalidates it, the choice made by ``auto``, and the
fallbacks when OpenVINO is missing or refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.errors import ModelError
from medseg.inference import runtimes
from medseg.inference.runtimes import OpenVinoEncoder, resolve_runtime

ov = pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def net():
    from medseg.models.litemedsam import load_litemedsam

    return load_litemedsam()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "openvino"


def test_auto_picks_openvino_for_fp32_on_cpu_and_torch_elsewhere(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_runtime("auto", cpu, "fp32") == "openvino"
    assert resolve_runtime("auto", cpu, "bf16") == "torch"  # OpenVINO's bf16 masks drift
    assert resolve_runtime("auto", cuda, "fp32") == "torch"
    assert resolve_runtime("torch", cpu) == "torch"
    with pytest.raises(ModelError, match="--device cpu"):
        resolve_runtime("openvino", cuda)
    with pytest.raises(ModelError, match="must be one of auto, torch, openvino"):
        resolve_runtime("onnx", cpu)
    monkeypatch.setattr(runtimes, "_has_openvino", lambda: False)
    assert resolve_runtime("auto", cpu, "fp32") == "torch"
    with pytest.raises(ModelError, match="pip install openvino"):
        resolve_runtime("openvino", cpu)


def test_openvino_fp32_matches_torch_and_bf16_stays_close(net, cache):
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = net.image_encoder(x)
    fp32 = OpenVinoEncoder(net, "fp32")
    out = fp32(x)
    assert out.shape == ref.shape == (2, 256, 64, 64) and out.dtype == torch.float32
    assert float((out - ref).norm() / ref.norm()) < 1e-4
    assert fp32.built and (fp32.folder / "encoder.xml").is_file()
    again = OpenVinoEncoder(net, "fp32")  # read from the cache, not converted again
    assert not again.built and again.folder == fp32.folder
    torch.testing.assert_close(again(x), out)
    bf16 = OpenVinoEncoder(net, "bf16")
    assert bf16.folder != fp32.folder  # the precision is part of the key
    assert float((bf16(x) - ref).norm() / ref.norm()) < 0.05


def test_the_cache_key_changes_with_the_machine_and_the_weights(net, monkeypatch):
    first = OpenVinoEncoder(net, "fp32").folder
    monkeypatch.setattr(runtimes, "_machine_id", lambda: "another machine")
    assert OpenVinoEncoder(net, "fp32").folder != first
    monkeypatch.undo()
    with torch.no_grad():
        net.image_encoder.neck[0].weight.add_(1e-3)
    try:
        assert OpenVinoEncoder(net, "fp32").folder != first
    finally:
        with torch.no_grad():
            net.image_encoder.neck[0].weight.sub_(1e-3)


def test_predictor_masks_agree_with_the_fp32_reference(net):
    from medseg.inference.litemedsam import LiteMedSAMPredictor
    from medseg.metrics import dice

    yy, xx = np.mgrid[:160, :160]
    stack = np.zeros((5, 160, 160), np.uint8)
    for k in range(5):
        inside = (yy - 80) ** 2 / (30 - 3 * k) ** 2 + (xx - 76) ** 2 / 40**2 < 1
        stack[k] = np.where(inside, 200, 40) + np.random.default_rng(k).integers(0, 20, (160, 160))
    box = (30, 45, 122, 115)
    masks = {}
    for name, runtime, precision in (("reference", "torch", "fp32"),
                                     ("auto fp32", "auto", "fp32"),
                                     ("openvino bf16", "openvino", "bf16")):  # fmt: skip
        predictor = LiteMedSAMPredictor(net, precision=precision, runtime=runtime)
        predictor.set_stack(stack)
        masks[name] = predictor.propagate(2, box)
        if name == "auto fp32":
            assert predictor.runtime == "openvino"
    assert masks["reference"].sum() > 5000
    assert dice(masks["auto fp32"], masks["reference"]) >= 0.999
    assert dice(masks["openvino bf16"], masks["reference"]) >= 0.95


def test_a_refusal_falls_back_under_auto_and_fails_when_named(net, monkeypatch):
    from medseg.inference.litemedsam import LiteMedSAMPredictor

    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported operation")

    monkeypatch.setattr(runtimes, "OpenVinoEncoder", refuse)
    with pytest.warns(UserWarning, match="using the torch encoder"):
        predictor = LiteMedSAMPredictor(net, precision="fp32", runtime="auto")
    assert predictor.runtime == "torch"
    with pytest.raises(ModelError, match="--runtime torch"):
        LiteMedSAMPredictor(net, runtime="openvino")


def test_the_api_lists_the_runtimes_the_predictor_has():
    from medseg.api.options import RUNTIMES

    assert runtimes.RUNTIMES == RUNTIMES
