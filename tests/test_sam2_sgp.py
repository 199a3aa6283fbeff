"""SAM2-SGP (medseg.models.sam2_sgp): LoRA, support selection, PMA, 3-D bank, checkpoints."""

from __future__ import annotations

import pytest
import torch

from medseg.errors import ModelError
from medseg.models import MODELS, build_model
from medseg.models.sam2_sgp import (
    SAM2SGP,
    box_from_logits,
    load_sam2_weights,
    sam2_sgp_hiera_s,
    sam2_sgp_hiera_t,
    select_supports,
    tiny,
)
from medseg.models.sam2_sgp.lora import LoRAQKV
from medseg.models.sam2_sgp.weights import sam2_keys


def _data(n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 64, 64, generator=g)
    m = torch.zeros(n, 1, 64, 64)
    m[:, :, 10:40, 20:50] = 1
    return x, m


def test_registered_as_promptable():
    assert MODELS["sam2_sgp"].task == "promptable"
    assert isinstance(build_model("sam2_sgp", tiny=True), SAM2SGP)


def test_lora_covers_q_and_v_fully_at_stage_transitions():
    net = tiny()
    trunk = net.sam2.image_encoder.trunk
    transitions = [b for b in trunk.blocks if b.dim != b.dim_out]
    assert transitions
    for block in trunk.blocks:
        qkv = block.attn.qkv
        assert isinstance(qkv, LoRAQKV) and qkv.lora_b_q.shape == (block.dim_out, 4)
        assert not qkv.weight.requires_grad and qkv.lora_a_q.requires_grad
    qkv = transitions[0].attn.qkv
    with torch.no_grad():
        qkv.lora_b_q.fill_(1.0)
        qkv.lora_b_v.fill_(1.0)
        x = torch.randn(2, qkv.in_features)
        delta = qkv(x) - torch.nn.functional.linear(x, qkv.weight, qkv.bias)
    d = qkv.dim_out
    assert (delta[:, :d] != 0).all() and (delta[:, 2 * d :] != 0).all()
    assert (delta[:, d : 2 * d] == 0).all()


def test_support_selection_is_deterministic_top_k_and_respects_exclusions():
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=1)
    s = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [0.0, 1.0], [1.0, 0.0]]), dim=1)
    idx = select_supports(q, s, 2)
    assert idx.tolist() == [[2, 0], [1, 0]]
    assert torch.equal(idx, select_supports(q, s, 2))
    exclude = torch.tensor([[False, False, True], [False, True, False]])
    assert select_supports(q, s, 1, exclude=exclude).tolist() == [[0], [0]]
    assert select_supports(q, s, 5).shape == (2, 3)
    gen = torch.Generator().manual_seed(0)
    assert select_supports(q, s, 2, generator=gen).shape == (2, 2)


def test_box_from_pseudo_mask_and_full_image_when_empty():
    logits = torch.full((2, 1, 16, 16), -5.0)
    logits[0, 0, 2:4, 5:8] = 5.0
    boxes = box_from_logits(logits, 64)
    assert boxes[0].tolist() == [20.0, 8.0, 31.0, 15.0]
    assert boxes[1].tolist() == [0.0, 0.0, 63.0, 63.0]


def _pma_inputs(b: int, c: int, g: int) -> dict:
    """Random PMA decoder inputs: batch ``b``, width ``c``, ``g x g`` token grid."""
    return dict(
        image_embeddings=torch.randn(b, c, g, g),
        image_pe=torch.randn(1, c, g, g),
        sparse=torch.randn(b, 2, c),
        dense=torch.randn(b, c, g, g),
        high_res=(torch.randn(b, c // 8, 4 * g, 4 * g), torch.randn(b, c // 4, 2 * g, 2 * g)),
        up_embed=torch.randn(b, c // 8, 4 * g, 4 * g),
    )


def test_pma_output_changes_with_the_pseudo_mask():
    """Regression: the released PMA is a no-op (channel softmax of a 1-channel mask)."""
    torch.manual_seed(0)
    net = tiny().eval()
    pma = net.pma_decoder
    b, c, g = 1, 32, 4
    args = _pma_inputs(b, c, g)
    ones = torch.ones(b, 1, g, g)
    half = ones.clone()
    half[..., : g // 2] = 0.01
    with torch.no_grad():
        a = pma(pseudo_prob=ones, **args)
        bb = pma(pseudo_prob=half, **args)
        c2 = pma(pseudo_prob=half * 0.5 + 0.25, **args)
    assert a.shape == (b, 1, 16 * g, 16 * g)
    assert (a - bb).abs().max() > 1e-3 and (bb - c2).abs().max() > 1e-3


def test_token_mixer_option_runs():
    net = tiny(token_mixer=True)
    x, m = _data(2)
    out = net(x, x, m)
    assert out.shape == (2, 1, 64, 64) and net.pma_decoder.token_mixer is not None


def test_code_compat_pma_reproduces_the_released_no_op():
    """``pma_code_compat``: the pseudo-mask changes nothing and the token mixer gets no gradient
    (the released behaviour, MODELS.md §2(f)); the default PMA differs from it."""
    torch.manual_seed(0)
    pma = tiny(token_mixer=True, pma_code_compat=True).pma_decoder.eval()  # no dropout
    b, c, g = 2, 32, 4
    args = _pma_inputs(b, c, g) | {"msk_feat": torch.randn(b, 4, g * g)}
    prob = torch.rand(b, 1, g, g)
    out = pma(pseudo_prob=prob, **args)
    assert torch.equal(out, pma(pseudo_prob=torch.rand_like(prob), **args))
    out.square().mean().backward()
    assert all(p.grad is None or not p.grad.any() for p in pma.token_mixer.parameters())
    pma.code_compat = False
    with torch.no_grad():
        assert (pma(pseudo_prob=prob, **args) - out).abs().max() > 1e-4


def test_frozen_trunk_gets_no_gradient_and_one_step_changes_only_trainable_parts():
    torch.manual_seed(0)
    net = tiny()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    x, m = _data()
    net(x, x[:2], m[:2]).square().mean().backward()
    trunk = net.sam2.image_encoder.trunk
    for name, p in trunk.named_parameters():
        assert (p.grad is not None) == ("lora_" in name), name
    opt.step()
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    trunk_changed = {k for k in changed if k.startswith("sam2.image_encoder.trunk.")}
    assert trunk_changed and all(".lora_" in k for k in trunk_changed)
    for part in ("pma_decoder.", "sam2.sam_mask_decoder.", "sam2.memory_attention."):
        assert any(k.startswith(part) for k in changed), part


def test_3d_propagation_keeps_a_bounded_memory_bank():
    net = tiny().eval()
    x, m = _data(5)
    with torch.no_grad():
        support = net.support_memory(net.encode_images(x[:2]), m[:2])
        out = net.segment_stack(x, support, bank_size=2)
    assert out["logits"].shape == (5, 1, 64, 64) and out["boxes"].shape == (5, 4)
    assert out["bank_sizes"].tolist() == [0, 1, 2, 2, 2]


@pytest.mark.parametrize("bank_size", [0, 2])
def test_3d_propagation_back_propagates_through_the_memory_bank(bank_size):
    """Slice 0 reaches slice 2's output only through the bank of its own predictions."""
    torch.manual_seed(0)
    net = tiny().eval()
    x, m = _data(3)
    support = net.support_memory(net.encode_images(x.flip(-1)), m)
    x = x.clone().requires_grad_(True)
    out = net.segment_stack(net.encode_images(x), support, bank_size=bank_size)
    out["logits"][2].sum().backward()
    assert (x.grad[0].abs().sum() > 0) == (bank_size > 0)


@pytest.mark.parametrize(
    ("version", "config"), [("2.1", "t"), ("2.1", "s"), ("2.0", "t"), ("2.0", "s")]
)
def test_sam2_part_matches_build_sam2_and_loads_strictly(version, config, tmp_path):
    from sam2.build_sam import build_sam2

    yaml = {"2.1": f"sam2.1/sam2.1_hiera_{config}", "2.0": f"sam2/sam2_hiera_{config}"}[version]
    ref = build_sam2(
        f"configs/{yaml}.yaml", ckpt_path=None, device="cpu", apply_postprocessing=False
    )
    official = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    path = tmp_path / "sam2.pt"
    torch.save({"model": ref.state_dict()}, path)
    del ref
    preset = sam2_sgp_hiera_t if config == "t" else sam2_sgp_hiera_s
    net = preset(sam2_checkpoint=str(path), sam2_version=version)
    own = net.sam2.state_dict()
    assert {k: tuple(own[k].shape) for k in sam2_keys(net)} == official
    ref_sd = torch.load(path, weights_only=True)["model"]
    key = "image_encoder.trunk.blocks.3.attn.qkv.weight"
    assert torch.equal(own[key], ref_sd[key])
    assert torch.equal(
        net.pma_decoder.mask_tokens.weight, ref_sd["sam_mask_decoder.mask_tokens.weight"]
    )
    other = "2.0" if version == "2.1" else "2.1"  # the other layout refuses the file
    with pytest.raises(ModelError, match="missing keys|unexpected keys"):
        preset(sam2_checkpoint=str(path), sam2_version=other)


def test_wrong_sam2_checkpoint_is_refused(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"model": {"image_encoder.foo": torch.zeros(1)}}, path)
    net = tiny()
    with pytest.raises(ModelError, match="missing keys"):
        load_sam2_weights(net, path)


def test_tiny_overfits_a_few_slices_leave_one_out():
    from test_db_sam import _ellipses

    from medseg.engine import PromptableSegmentationTask
    from medseg.metrics import SegmentationMetrics
    from medseg.transforms.prompts import from_frame, to_frame

    torch.manual_seed(0)
    x, y = _ellipses(4)
    task = PromptableSegmentationTask(tiny(), hd95=False)
    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=3e-3)
    frame, resized = to_frame(x, 64)
    target, _ = to_frame(y.float(), 64, mode="nearest")
    exclude = torch.eye(4, dtype=torch.bool)
    dice = 0.0
    for step in range(1, 81):
        task.train()
        loss = task.training_step({"image": x, "label": y}, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 0:
            net = task.net.eval()
            with torch.no_grad():
                feats = net.encode_images(frame)
                support = net.support_memory(feats, target)
                logits = net.predict(feats, support, exclude=exclude)["logits"]
            pred = (from_frame(logits, 64, resized, y.shape[2:]) > 0).long()
            metrics = SegmentationMetrics(2, hd95=False)
            metrics.update(pred, y)
            dice = float(metrics.compute()["dice"])
            if dice >= 0.9:
                break
    assert dice >= 0.9, f"leave-one-out dice {dice:.3f} after {step} steps"


def _chunks(n: int = 2, length: int = 4, size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` volumes' chunks ``(n, 1, size, size, length)``: a cone (radius grows with z)."""
    g = torch.Generator().manual_seed(0)
    xx, yy, zz = torch.meshgrid(
        torch.arange(size), torch.arange(size), torch.arange(length), indexing="ij"
    )
    imgs, labs = [], []
    for i in range(n):
        cx, cy = (torch.rand(2, generator=g) * size * 0.3 + size * 0.35).tolist()
        r = size * (0.2 + 0.05 * i) * (0.7 + 0.1 * zz)
        lab = ((xx - cx) ** 2 + (yy - cy) ** 2 <= r**2).long()
        imgs.append((torch.randn(size, size, length, generator=g) * 0.3 + lab)[None])
        labs.append(lab[None])
    return torch.stack(imgs), torch.stack(labs)


def test_3d_chunk_training_learns_through_its_own_memory_bank(monkeypatch):
    """3-D mode of the task: each chunk propagated in order with a bounded bank, supports from
    the other case only, gradients to LoRA / decoders / memory modules, loss going down."""
    from medseg.engine import PromptableSegmentationTask

    torch.manual_seed(0)
    x, y = _chunks()
    task = PromptableSegmentationTask(
        tiny(), hd95=False, preprocessing={"slice_axis": 2}, bank_size=2
    )
    net, calls = task.net, []
    real = net.segment_stack

    def spy(features, support, **kw):
        out = real(features, support, **kw)
        calls.append((len(features), int((~kw["exclude"]).sum()), out["bank_sizes"].tolist()))
        return out

    monkeypatch.setattr(net, "segment_stack", spy)
    opt = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=3e-3)
    batch = {"image": x, "label": y, "case": ["a", "b"]}
    losses = []
    for step in range(8):
        loss = task.training_step(batch, step)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            for part in ("lora_", "pma_decoder.", "sam_mask_decoder.", "memory_encoder."):
                grads = [p.grad for n, p in net.named_parameters() if part in n]
                assert any(gr is not None and gr.abs().sum() > 0 for gr in grads), part
        opt.step()
        losses.append(float(loss.detach()))
    # per step: both chunks, 4 slices each, supports = the other chunk's 4 slices, bank <= 2
    assert calls[:2] == [(4, 4, [0, 1, 2, 2])] * 2 and len(calls) == 16
    assert losses[-1] < 0.8 * losses[0], losses
    one_case = {**batch, "case": ["a", "a"]}  # no support from another case: nothing to learn
    assert task.training_step(one_case, 0) is None


def test_support_folder_layouts(tmp_path):
    from medseg.errors import InputError
    from medseg.inference.sam_family import support_pairs

    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("a.nii.gz", "a_label.nii.gz", "b.nii.gz", "b_seg.nii.gz", "c.nii.gz", "x.txt"):
        (flat / name).write_bytes(b"")
    assert [(i.name, lab.name) for i, lab in support_pairs(flat)] == [
        ("a.nii.gz", "a_label.nii.gz"),
        ("b.nii.gz", "b_seg.nii.gz"),
    ]
    nested = tmp_path / "nested"
    for sub in ("images", "labels"):
        (nested / sub).mkdir(parents=True)
        (nested / sub / "p1.nii.gz").write_bytes(b"")
    assert len(support_pairs(nested)) == 1
    with pytest.raises(InputError, match="no image/label pairs"):
        support_pairs(tmp_path / "flat" / ".." / "nested" / "images")
