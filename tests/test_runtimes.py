"""LiteMedSAM's encoder runtimes: OpenVINO against the torch fp32 reference (embeddings and
masks), its on-disk cache and what invalidates it, what ``auto`` picks, and the errors when
OpenVINO is missing or refuses.

The tests that run an OpenVINO model do so in a child pytest process
(:func:`test_openvino_runs_in_its_own_process`): a process that has run one and later forks
(the DataLoader workers of the training tests) was killed by a segmentation fault."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from medseg.errors import ModelError
from medseg.inference import runtimes
from medseg.inference.runtimes import resolve_runtime

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
IN_CHILD = os.environ.get("MEDSEG_OPENVINO_CHILD") == "1"
openvino_child = pytest.mark.skipif(
    not (IN_CHILD and HAS_OPENVINO),
    reason="runs in the child process of test_openvino_runs_in_its_own_process",
)
CHILD_TESTS = (  # the tests marked openvino_child
    "test_openvino_fp32_matches_torch_and_bf16_stays_close",
    "test_the_cache_key_changes_with_the_machine_and_the_weights",
    "test_predictor_masks_agree_with_the_fp32_reference",
    "test_cli_segment_runs_on_openvino",
)


@pytest.fixture(scope="module")
def net():
    from medseg.models.litemedsam import load_litemedsam

    return load_litemedsam()


@pytest.mark.skipif(IN_CHILD or not HAS_OPENVINO, reason="the parent of the OpenVINO tests")
def test_openvino_runs_in_its_own_process(tmp_path):
    env = {**os.environ, "MEDSEG_OPENVINO_CHILD": "1", "MEDSEG_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         *(f"{__file__}::{name}" for name in CHILD_TESTS)],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    tail = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, tail
    assert f"{len(CHILD_TESTS)} passed" in done.stdout, tail


def test_auto_is_torch_and_openvino_is_asked_for_by_name(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_runtime("auto", cpu) == "torch"
    assert resolve_runtime("auto", cuda) == "torch"
    with pytest.raises(ModelError, match="--device cpu"):
        resolve_runtime("openvino", cuda)
    with pytest.raises(ModelError, match="must be one of auto, torch, openvino"):
        resolve_runtime("onnx", cpu)
    monkeypatch.setattr(runtimes, "_has_openvino", lambda: False)
    with pytest.raises(ModelError, match="pip install openvino"):
        resolve_runtime("openvino", cpu)


@pytest.mark.skipif(not HAS_OPENVINO, reason="needs openvino")
def test_a_refusal_names_the_torch_runtime(net, monkeypatch):
    from medseg.inference.litemedsam import LiteMedSAMPredictor

    def refuse(*args, **kwargs):
        raise RuntimeError("unsupported operation")

    monkeypatch.setattr(runtimes, "OpenVinoEncoder", refuse)  # nothing of OpenVINO loads
    with pytest.raises(ModelError, match="--runtime torch"):
        LiteMedSAMPredictor(net, runtime="openvino")
    assert LiteMedSAMPredictor(net, runtime="auto").runtime == "torch"


def test_the_api_lists_the_runtimes_the_predictor_has():
    from medseg.api.options import RUNTIMES

    assert runtimes.RUNTIMES == RUNTIMES


@openvino_child
def test_openvino_fp32_matches_torch_and_bf16_stays_close(net):
    from medseg.inference.runtimes import OpenVinoEncoder

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


@openvino_child
def test_the_cache_key_changes_with_the_machine_and_the_weights(net, monkeypatch):
    from medseg.inference.runtimes import OpenVinoEncoder

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


@openvino_child
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
                                     ("openvino fp32", "openvino", "fp32"),
                                     ("openvino bf16", "openvino", "bf16")):  # fmt: skip
        predictor = LiteMedSAMPredictor(net, precision=precision, runtime=runtime)
        assert predictor.runtime == runtime
        predictor.set_stack(stack)
        masks[name] = predictor.propagate(2, box)
    assert masks["reference"].sum() > 5000
    assert dice(masks["openvino fp32"], masks["reference"]) >= 0.999
    assert dice(masks["openvino bf16"], masks["reference"]) >= 0.95


@openvino_child
def test_cli_segment_runs_on_openvino(tmp_path):
    from testkit import ellipsoid_volume, write_nifti

    from medseg.cli.main import main

    image, _ = ellipsoid_volume((48, 40, 12), radii=(12, 9, 4))
    scan = write_nifti(tmp_path / "scan.nii.gz", image)
    args = ["segment", str(scan), "-o", str(tmp_path / "out"), "--box", "8,10,40,38",
            "--slice", "6", "--runtime", "openvino", "--precision", "fp32", "--quiet"]  # fmt: skip
    code = main(args)
    assert code == 0 and (tmp_path / "out" / "scan_seg.nii.gz").is_file()
