"""DB-SAM (medseg.models.db_sam): shapes, freezing, SAM checkpoint compatibility, overfit."""

from __future__ import annotations

import time

import pytest
import torch

from medseg.errors import ModelError
from medseg.models import MODELS, build_model
from medseg.models.db_sam import DBSAM, db_sam_vit_b, load_sam_weights, tiny
from medseg.models.db_sam.deform_attn import ms_deform_attn

BOXES = torch.tensor([[10.0, 12.0, 40.0, 44.0], [0.0, 5.0, 63.0, 30.0]])


def _images(n: int = 2, channels: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, 64, 64, generator=torch.Generator().manual_seed(0))


def test_registered_as_promptable():
    assert MODELS["db_sam"].task == "promptable"
    assert isinstance(build_model("db_sam", tiny=True), DBSAM)


@pytest.mark.parametrize("adapter", ["two_branch", "four_branch"])
def test_tiny_shapes_and_frozen_parameters_get_no_gradient(adapter):
    torch.manual_seed(0)
    net = tiny(adapter=adapter)
    logits, iou = net(_images(), BOXES)
    assert logits.shape == (2, 1, 32, 32) and iou.shape == (2, 1)
    logits.square().mean().backward()
    enc = net.image_encoder
    frozen = [*enc.patch_embed.parameters(), *enc.blocks.parameters(), enc.pos_embed]
    assert frozen and all(not p.requires_grad and p.grad is None for p in frozen)
    for name in ("adapter", "image_encoder.neck", "mask_decoder"):
        grads = [p.grad for n, p in net.named_parameters() if n.startswith(name)]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), name


def test_one_optimiser_step_changes_only_trainable_parts():
    torch.manual_seed(0)
    net = tiny(channel_attention="block")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    logits, _ = net(_images(), BOXES)
    logits.square().mean().backward()
    opt.step()
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trainable = ("adapter.", "image_encoder.neck.", "mask_decoder.", "prompt_encoder.")
    assert changed and all(k.startswith(trainable) for k in changed)
    assert any(k.startswith("adapter.") for k in changed)
    assert any(k.startswith("mask_decoder.") for k in changed)
    assert not any(k.startswith("image_encoder.blocks.") for k in changed)


def test_rgb_channels_and_bad_inputs():
    net = tiny(in_channels=4, rgb_channels=(0, 2, 3)).eval()
    with torch.no_grad():
        assert net(_images(1, 4), BOXES[:1])[0].shape == (1, 1, 32, 32)
    with pytest.raises(ValueError, match="rgb_channels"):
        tiny(in_channels=4)
    with pytest.raises(ValueError, match="2-D"):
        tiny(spatial_dims=3)
    with pytest.raises(ValueError, match="images must be"):
        net(torch.zeros(1, 4, 32, 32), BOXES[:1])


def test_deformable_attention_samples_bilinearly():
    """At pixel centres with one point and one level, sampling returns the value there."""
    h, w, d = 3, 4, 2
    value = torch.randn(1, h * w, 1, d)
    locs = torch.tensor([[(0.5 + 1) / w, (0.5 + 2) / h]]).view(1, 1, 1, 1, 1, 2)
    out = ms_deform_attn(value, [(h, w)], locs, torch.ones(1, 1, 1, 1, 1))
    assert torch.allclose(out[0, 0], value[0, 2 * w + 1, 0])


def test_sam_parts_match_the_official_vit_b_and_load_strictly(tmp_path):
    from segment_anything import sam_model_registry

    sam = sam_model_registry["vit_b"]()
    official = {k: tuple(v.shape) for k, v in sam.state_dict().items()}
    path = tmp_path / "sam_vit_b.pth"
    torch.save(sam.state_dict(), path)
    del sam
    net = db_sam_vit_b()
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.startswith("adapter.")}
    assert ours == official
    load_sam_weights(net, path)
    ref = torch.load(path, weights_only=True)
    own = net.state_dict()
    key = "image_encoder.blocks.11.attn.qkv.weight"
    assert torch.equal(own[key], ref[key])
    assert torch.equal(own["mask_decoder.iou_token.weight"], ref["mask_decoder.iou_token.weight"])
    assert not any(p.requires_grad for p in net.image_encoder.blocks.parameters())
    assert all(p.requires_grad for p in net.image_encoder.neck.parameters())


def test_wrong_checkpoint_is_refused(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"image_encoder.foo": torch.zeros(1)}, path)
    with pytest.raises(ModelError, match="missing keys"):
        tiny(sam_checkpoint=str(path))


def _ellipses(n: int = 4, size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    imgs, labs = [], []
    for _ in range(n):
        cy, cx = (torch.rand(2, generator=g) * size * 0.4 + size * 0.3).tolist()
        ry, rx = (torch.rand(2, generator=g) * size * 0.15 + size * 0.12).tolist()
        lab = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).long()
        imgs.append((torch.randn(size, size, generator=g) * 0.3 + lab)[None])
        labs.append(lab[None])
    return torch.stack(imgs), torch.stack(labs)


def test_tiny_overfits_a_few_slices():
    from medseg.engine import PromptableSegmentationTask
    from medseg.metrics import SegmentationMetrics

    torch.manual_seed(0)
    x, y = _ellipses()
    small = {"embed_dim": 32, "num_heads": 2, "conv_widths": (4, 8, 16), "conv_downsamples": (1, 0)}
    task = PromptableSegmentationTask(
        tiny(**small, deform_heads=2),
        box_jitter=0,
        hd95=False,
        preprocessing={"labels": {"0": "bg", "1": "a"}},
    )
    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=3e-3)
    started, dice = time.time(), 0.0
    for step in range(1, 71):
        task.train()
        loss = task.training_step({"image": x, "label": y}, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            task.eval()
            with torch.no_grad():
                pred = task.predict_slices(x, y, [1])
            metrics = SegmentationMetrics(2, hd95=False)
            metrics.update(pred, y)
            dice = float(metrics.compute()["dice"])
            if dice >= 0.9:
                break
    assert dice >= 0.9, f"dice {dice:.3f} after {step} steps ({time.time() - started:.0f} s)"
