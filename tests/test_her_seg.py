"""HER-Seg (medseg.models.her_seg): shapes, the vectorised decoder, linear cost, the published
sizes (parameters and FLOPs on the meta device), the loss, and training through the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from kernels.linear import rotate_pairs
from medseg.losses import HerSegLoss
from medseg.models import MODELS, build_model
from medseg.models.her_seg import HerSeg, her_seg, rope_tables, tiny

TINY_ARGS = {  # tiny() as class arguments, for the CLI
    "img_size": 64,
    "patch_size": 8,
    "embed_dim": 32,
    "depths": [1, 1, 1, 1],
    "num_heads": [1, 2, 2, 4],
    "decoder_dim": 32,
    "decoder_heads": 2,
    "decoder_mlp_dim": 32,
    "mask_in_chans": 4,
}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (10x slower on a busy 2-core box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _x(b: int = 2, c: int = 3, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, c, size, size, generator=torch.Generator().manual_seed(seed))


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_registered_as_a_segmentation_model():
    assert MODELS["her_seg"].task == "segmentation"
    net = build_model("her_seg", tiny=True, in_channels=1, out_channels=2)
    assert isinstance(net, HerSeg) and net.size_divisor == 8


@pytest.mark.parametrize("k", [1, 3])
def test_forward_returns_logits_of_the_input_size(k):
    torch.manual_seed(0)
    net = tiny(in_channels=2, out_channels=k).eval()
    with torch.no_grad():
        out = net(_x(2, 2))
    assert out.shape == (2, k, 64, 64) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert out.min() < 0 or out.max() > 1  # logits, not probabilities
    with torch.no_grad():  # any multiple of the patch, not only img_size
        assert net(_x(1, 2, size=48)).shape == (1, k, 48, 48)


def test_rejects_inputs_it_cannot_take():
    net = tiny(in_channels=1).eval()
    with pytest.raises(ValueError, match="multiple"):
        net(_x(1, 1, size=60))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(_x(1, 3))
    with pytest.raises(ValueError, match="spatial_dims"):
        tiny(spatial_dims=1)
    with pytest.raises(ValueError, match="impl"):
        tiny(attn_impl="cuda")


def test_3d_input_runs_slice_by_slice():
    torch.manual_seed(0)
    net = tiny(spatial_dims=3, in_channels=1, out_channels=2).eval()
    x = torch.randn(2, 1, 32, 16, 3)
    with torch.no_grad():
        out = net(x)
        flat = tiny(in_channels=1, out_channels=2)
        flat.load_state_dict(net.state_dict())
        slices = [flat.eval()(x[..., i]) for i in range(3)]
    assert out.shape == (2, 2, 32, 16, 3)
    torch.testing.assert_close(out, torch.stack(slices, -1), rtol=1e-5, atol=1e-5)


def test_batched_decoder_equals_the_per_image_loop():
    torch.manual_seed(0)
    net = tiny(out_channels=3).eval()
    x = _x(3)
    with torch.no_grad():
        emb = net.embed(x)
        batched = net.decode(emb)
        looped = torch.cat([net.decode(emb[i : i + 1]) for i in range(3)])
        whole = net(x)
        one_by_one = torch.cat([net(x[i : i + 1]) for i in range(3)])
    assert batched.shape == (3, 3, 32, 32)  # 4x the 8x8 token grid
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(whole, one_by_one, rtol=1e-5, atol=1e-5)


def test_prompt_free_inputs_equal_the_prompt_encoder_without_prompts():
    net = tiny().eval()
    pe = net.prompt_encoder
    sparse, dense = pe(points=None, boxes=None, masks=None)
    assert sparse.shape == (1, 0, 32)  # no prompt tokens
    torch.testing.assert_close(dense, pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(dense))
    torch.testing.assert_close(pe.get_dense_pe(), pe.pe_layer((8, 8)).unsqueeze(0))


def test_rope_tables_follow_the_released_complex_rotation():
    gh, gw, dim = 3, 5, 16
    cos, sin = rope_tables((gh, gw), dim)
    assert cos.shape == sin.shape == (gh * gw, dim // 2)
    # the code: angles = [row * theta, col * theta] per token, pairs rotated as complex numbers
    k_max = dim // 4
    theta = 1.0 / 10000 ** (torch.arange(k_max) / k_max)
    rows, cols = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    angles = torch.cat([rows[..., None] * theta, cols[..., None] * theta], -1).reshape(-1, dim // 2)
    x = torch.randn(2, gh * gw, dim)
    want = torch.view_as_real(
        torch.polar(torch.ones_like(angles), angles)
        * torch.view_as_complex(x.reshape(2, gh * gw, dim // 2, 2))
    ).flatten(-2)
    got = rotate_pairs(x.unsqueeze(2), (cos[:, None], sin[:, None])).squeeze(2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_encoder_flops_grow_linearly_with_tokens():
    enc = tiny().image_encoder.eval()

    def flops(size: int) -> int:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            enc(_x(1, 3, size))
        return counter.get_total_flops()

    ratio = flops(128) / flops(64)  # 4x the tokens (8x8 -> 16x16)
    assert 3.5 < ratio < 5.0, ratio


def test_published_preset_parameter_counts():
    with torch.device("meta"):
        net = her_seg(out_channels=3)  # the released decoder has 3 hypernetwork MLPs
    measured = {  # MODELS.md §5(b), measured on the released code
        "image_encoder": 0.958e6,
        "neck": 0.615e6,
        "mask_decoder": 1.947e6,
        "prompt_encoder": 0.006e6,
    }
    for name, want in measured.items():
        got = _params(getattr(net, name))
        assert round(got / 1e6, 3) == round(want / 1e6, 3), (name, got)
    assert math.isclose(_params(net), 3.53e6, rel_tol=0.01)


@pytest.mark.parametrize("k", [1, 3])
def test_published_preset_flops_at_1024(k):
    with torch.device("meta"):
        net = her_seg(out_channels=k)
        x = torch.empty(1, 3, 1024, 1024)
        with FlopCounterMode(display=False) as counter:
            out = net(x)
    assert out.shape == (1, k, 1024, 1024)
    assert math.isclose(counter.get_total_flops() / 1e9, 16.46, rel_tol=0.02)


@pytest.mark.parametrize("k", [1, 2])
def test_every_trainable_parameter_gets_a_gradient(k):
    torch.manual_seed(0)
    net = tiny(out_channels=k).train()
    HerSegLoss()(net(_x(2)), torch.randint(0, max(k, 2), (2, 1, 64, 64))).backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    frozen = {n.split(".")[1] for n, p in net.named_parameters() if not p.requires_grad}
    assert frozen == {"point_embeddings", "not_a_point_embed", "mask_downscaling"}


def test_loss_matches_the_released_formula_for_one_channel():
    logits = torch.randn(2, 1, 16, 16)
    label = (torch.rand(2, 1, 16, 16) > 0.6).long()
    prob, target = torch.sigmoid(logits), label.float()
    dice = (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    bce = F.binary_cross_entropy(prob, target)
    want = 0.8 * (1 - dice) + 0.2 * 0.8 * (1 - torch.exp(-bce)) ** 2 * bce
    torch.testing.assert_close(HerSegLoss()(logits, label), want)


def test_loss_is_small_for_a_confident_correct_multiclass_prediction():
    label = torch.randint(0, 3, (2, 1, 8, 8))
    good = (F.one_hot(label[:, 0], 3).movedim(-1, 1).float() * 2 - 1) * 20
    loss = HerSegLoss()
    assert loss(good, label) < 1e-3 < loss(-good, label)
    assert loss(good, label).shape == ()
    with pytest.raises(ValueError):
        loss(good, label[:, :, :4])


def test_tiny_overfits_two_images():
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    discs = [(10, 12, 6), (20, 18, 8)]
    label = torch.stack([(yy - cy) ** 2 + (xx - cx) ** 2 < r**2 for cy, cx, r in discs])
    label = label[:, None].long()  # (2, 1, 32, 32)
    x = label.float() + 0.3 * _x(2, 1, size=32)
    net = tiny(in_channels=1, out_channels=1, drop_path_rate=0.0).train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn, losses = HerSegLoss(), []
    for _ in range(50):
        opt.zero_grad()
        loss = loss_fn(net(x), label)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses[::10]  # measured: 0.644 -> 0.007


def test_trains_through_the_cli_and_segments_from_the_checkpoint(tmp_path):
    from training_kit import make_prepared, tiny_config

    from medseg.cli.main import main as medseg_main
    from medseg.cli.train import main
    from medseg.inference.automatic import AutomaticSegmenter
    from medseg.io import load_volume

    prep = make_prepared(tmp_path, n_cases=3, spatial_dims=2, patch_size=(16, 16))
    cfg = tiny_config(
        tmp_path,
        prep,
        net="medseg.models.her_seg.HerSeg",
        net_args=TINY_ARGS,
        **{"trainer.max_epochs": 1, "model.hd95": False},
    )
    config = yaml.safe_load(cfg.read_text(encoding="utf-8"))
    config["model"]["init_args"]["loss"] = {"class_path": "medseg.losses.HerSegLoss"}
    cfg.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    assert main(["fit", "--config", str(cfg)]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    seg = AutomaticSegmenter.from_checkpoint(ckpt, device="cpu", precision="fp32")
    assert isinstance(seg.net, HerSeg) and seg.net.out_channels == 3  # classes with background
    # global attention: "auto" must keep the trained patch, never grow the window
    assert seg.window_dependent and seg._roi((512, 512)) == seg.patch
    image = tmp_path / "raw" / "imagesTr" / "case_000.nii.gz"
    out = seg.segment(image)
    source = load_volume(image)
    assert out.labels.array.shape == source.array.shape
    # and through `medseg segment --checkpoint` (automatic mode chosen from the checkpoint)
    folder = tmp_path / "segment_out"
    argv = ["segment", str(image), "-o", str(folder), "--checkpoint", str(ckpt)]
    assert medseg_main(argv) == 0
    written = load_volume(folder / "case_000_seg.nii.gz")
    assert written.array.shape == source.array.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
    assert set(np.unique(written.array).tolist()) <= {0, 1, 2}


def test_bench_step_timing_and_its_guards(capsys):
    """bench/her_seg.py's step timing in this process (torch path only: Triton needs CUDA or
    the interpreter, see the slow test below) and its one-line refusal of a missing GPU."""
    from bench.her_seg import main, time_impls

    timings = time_impls("tiny", 32, "cpu", impls=("torch",), steps=2)
    assert timings["torch"]["ms"] > 0 and math.isfinite(timings["torch"]["loss"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            main(["--device", "cuda"])
        assert "no CUDA device here; use --device cpu or auto" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--device", "cpu", "--size", "40"])
    assert "multiple of 16" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_runs_on_cpu_and_times_triton_against_torch(tmp_path):
    """bench/her_seg.py on the tiny preset: the CPU table (GPU rows say why they are missing),
    and its Triton-vs-torch step timing, run here in Triton's interpreter in a fresh process
    (the variable must be set before triton is imported): both impls give the same loss."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import json, torch\n"
        "from bench.her_seg import main, time_impls\n"
        "main(['--device', 'cpu', '--preset', 'tiny', '--size', '32'])\n"
        "print(json.dumps(time_impls('tiny', 32, 'cpu', steps=1)))\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
        encoding="utf-8", timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    table = "\n".join(lines[:-1])
    assert "| training memory, batch 1 (CPU peak RSS) |" in table
    if not torch.cuda.is_available():
        assert "Triton vs torch linear attention | not measured on GPU (no CUDA) |" in table
    timings = json.loads(lines[-1])
    assert set(timings) == {"torch", "triton"}
    assert all(t["ms"] > 0 for t in timings.values())
    assert timings["triton"]["loss"] == pytest.approx(timings["torch"]["loss"], rel=1e-4)
