"""PromptableSegmentationTask: prompt helpers and `medseg fit` on synthetic 2-D slices."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from training_kit import make_prepared, tiny_config

from medseg.cli.main import main as medseg_main
from medseg.cli.train import main
from medseg.engine.promptable import PromptableSegmentationTask
from medseg.transforms.prompts import boxes_from_masks, from_frame, jitter_boxes, to_frame


def test_boxes_from_masks_and_empty_masks_give_the_full_image():
    masks = torch.zeros(2, 1, 10, 12, dtype=torch.bool)
    masks[0, 0, 2:5, 3:9] = True
    boxes, valid = boxes_from_masks(masks)
    assert boxes.tolist() == [[3.0, 2.0, 8.0, 4.0], [0.0, 0.0, 11.0, 9.0]]
    assert valid.tolist() == [True, False]


def test_jitter_enlarges_within_bounds_and_is_seeded():
    boxes = torch.tensor([[10.0, 10.0, 20.0, 20.0], [0.0, 0.0, 63.0, 63.0]])
    a = jitter_boxes(boxes, 5, 64, generator=torch.Generator().manual_seed(1))
    b = jitter_boxes(boxes, 5, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert (a[:, :2] <= boxes[:, :2]).all() and (a[:, 2:] >= boxes[:, 2:]).all()
    assert (a >= 0).all() and (a <= 63).all() and (boxes[0] - a[0]).abs().max() <= 5
    assert torch.equal(jitter_boxes(boxes, 0, 64), boxes)


def test_frame_round_trip_keeps_geometry():
    image = torch.randn(3, 2, 30, 20) * 50 + 10
    frame, resized = to_frame(image, 64)
    assert frame.shape == (3, 2, 64, 64) and resized == (64, 43)
    assert frame.min() >= 0 and frame.max() <= 1 and (frame[..., 43:] == 0).all()
    label = torch.zeros(1, 1, 30, 20)
    label[..., 5:20, 4:12] = 1
    lab, _ = to_frame(label, 64, mode="nearest")
    back = from_frame(lab * 20 - 10, 64, resized, (30, 20)) > 0
    assert (back == label.bool()).float().mean() > 0.97


def test_needs_a_promptable_net():
    with pytest.raises(ValueError, match="prompted"):
        PromptableSegmentationTask(torch.nn.Linear(2, 2))


def _promptable_config(tmp: Path, prep: Path, net: str, **net_args) -> Path:
    path = tiny_config(tmp, prep, **{"trainer.max_epochs": 1})
    cfg = yaml.safe_load(path.read_text())
    cfg["model"] = {
        "class_path": "medseg.engine.PromptableSegmentationTask",
        "init_args": {
            "net": {"class_path": net, "init_args": net_args},
            "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-3}},
            "val_batch_size": 4,
            "hd95": False,
        },
    }
    cfg["data"]["init_args"]["spatial_dims"] = 2
    cfg["data"]["init_args"]["patch_size"] = [24, 20]
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


TINY_DB_SAM = {
    "img_size": 64,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "window_size": 4,
    "global_attn_indexes": [1],
    "out_chans": 16,
    "stages": [[0], [1]],
    "conv_widths": [4, 8, 16],
    "conv_downsamples": [1, 0],
    "deform_heads": 2,
    "deform_points": 1,
    "cross_blocks": 1,
    "decoder_mlp_dim": 32,
    "decoder_heads": 2,
    "iou_head_hidden_dim": 16,
    "mask_in_chans": 4,
}


def _old_style_copy(ckpt: Path, key: str, path: Path) -> Path:
    """The checkpoint as saved before the weights path was dropped from the hyper-parameters."""
    state = torch.load(ckpt, weights_only=True)
    state["hyper_parameters"]["net"]["init_args"][key] = str(path)
    out = ckpt.with_name("old_style.ckpt")
    torch.save(state, out)
    return out


def _masked_slices(path: Path) -> set[int]:
    """Axial slices (last axis of the synthetic RAS volumes) holding a non-empty mask."""

    seg = np.asarray(nib.load(path).dataobj)
    return {int(z) for z in np.flatnonzero(seg.reshape(-1, seg.shape[-1]).any(0))}


def test_fit_db_sam_through_the_cli(tmp_path, monkeypatch):
    from medseg.models.db_sam import DBSAM

    prep = make_prepared(tmp_path, n_cases=3, spatial_dims=2, patch_size=(24, 20))
    weights = tmp_path / "sam_tiny.pth"  # a "SAM checkpoint" for the tiny sizes
    sam = DBSAM(**TINY_DB_SAM, out_channels=3).state_dict()
    torch.save({k: v for k, v in sam.items() if not k.startswith("adapter.")}, weights)
    cfg = _promptable_config(
        tmp_path, prep, "medseg.models.db_sam.DBSAM", **TINY_DB_SAM, sam_checkpoint=str(weights)
    )
    assert main(["fit", "--config", str(cfg)]) == 0
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/dice", "val/dice_shell", "val/dice_core", "train/loss_epoch"} <= set(header)
    ckpt = run / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    assert saved["hyper_parameters"]["net"]["init_args"]["sam_checkpoint"] is None
    assert saved["pretrained_weights"] == {"sam_checkpoint": str(weights)}
    weights.unlink()  # the fine-tuned checkpoint must not need the original SAM file
    task = PromptableSegmentationTask.load_from_checkpoint(ckpt)
    assert task.net.out_channels == 3 and task.net.in_channels == 1
    old = _old_style_copy(ckpt, "sam_checkpoint", weights)
    # medseg segment --model db_sam: box on one slice, propagated (LiteMedSAM machinery)
    image = tmp_path / "raw" / "imagesTr" / "case_001.nii.gz"
    out = tmp_path / "seg"
    args = ["segment", str(image), "-o", str(out), "--model", "db_sam", "--checkpoint", str(ckpt)]
    args += ["--box", "2,2,16,14", "--slice", "4", "--device", "cpu", "--quiet"]
    assert medseg_main(args) == 0
    report = json.loads((out / "case_001_stats.json").read_text())
    assert report["model"].startswith("db_sam:") and report["prompt"]["slice"] == 4
    # propagation, checked on a net that fills its box (the tiny net's masks depend on how
    # far 2 CPU epochs got; learning itself is the overfit test's job)
    forward = DBSAM.forward

    def fills_the_box(self, images, boxes):
        logits, iou = forward(self, images, boxes)
        f = logits.shape[-1] / images.shape[-1]
        filled = torch.full_like(logits, -10.0)
        for i, (x0, y0, x1, y1) in enumerate(boxes.reshape(-1, 4).tolist()):
            filled[i, :, int(y0 * f) : int(y1 * f) + 1, int(x0 * f) : int(x1 * f) + 1] = 10.0
        return filled, iou

    monkeypatch.setattr(DBSAM, "forward", fills_the_box)
    depth = nib.load(image).shape[-1]
    # a box-filling net grows by the follow margin every slice, which the default stopping
    # rule takes for a leak: the slice range makes propagation run until the mask vanishes
    assert medseg_main([*args, "--slices", f"0,{depth - 1}", "--overwrite"]) == 0
    assert _masked_slices(out / "case_001_seg.nii.gz") == set(range(depth))  # both directions
    assert medseg_main([*args, "--no-propagate", "--overwrite"]) == 0
    assert _masked_slices(out / "case_001_seg.nii.gz") == {4}
    monkeypatch.undo()
    assert medseg_main([*args[:-4], "--point", "5,5", "--slice", "4", "--overwrite"]) == 2
    assert medseg_main([*args, "--support-size", "2", "--overwrite"]) == 2  # sam2_sgp only
    # a checkpoint naming the (deleted) SAM file in its hyper-parameters loads too
    old_args = [a if a != str(ckpt) else str(old) for a in args]
    assert medseg_main([*old_args, "--overwrite"]) == 0


TINY_SGP = {
    "image_size": 64,
    "embed_dim": 8,
    "stages": [1, 1, 2, 1],
    "global_att_blocks": [3],
    "window_spec": [4, 4, 4, 2],
    "window_pos_embed_bkg": [4, 4],
    "d_model": 32,
    "mem_dim": 8,
    "memory_layers": 1,
    "memory_ffn": 32,
    "fuser_layers": 1,
    "lora_rank": 2,
    "pma_heads": 2,
    "pma_mlp_dim": 32,
    "pma_final_dim": 4,
}


def test_fit_sam2_sgp_through_the_cli(tmp_path):
    from medseg.models.sam2_sgp import SAM2SGP
    from medseg.models.sam2_sgp.weights import sam2_keys

    prep = make_prepared(tmp_path, n_cases=3, spatial_dims=2, patch_size=(24, 20))
    weights = tmp_path / "sam2_tiny.pt"  # a "SAM2 checkpoint" for the tiny sizes
    net = SAM2SGP(**TINY_SGP)
    torch.save({"model": {k: net.sam2.state_dict()[k] for k in sam2_keys(net)}}, weights)
    cfg = _promptable_config(
        tmp_path, prep, "medseg.models.sam2_sgp.SAM2SGP", **TINY_SGP, sam2_checkpoint=str(weights)
    )
    fit = ["fit", "--config", str(cfg), "--data.init_args.samples_per_volume=4"]
    assert main(fit) == 0
    # resume still works (the config names the weights file; the checkpoint's state wins)
    assert main([*fit, "--trainer.max_epochs=2", "--ckpt_path=last"]) == 0
    run = tmp_path / "run"
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/dice", "val/dice_shell", "val/dice_core"} <= set(header)
    ckpt = run / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, weights_only=True)
    assert saved["epoch"] == 2 and saved["pretrained_weights"] == {"sam2_checkpoint": str(weights)}
    weights.unlink()  # the fine-tuned checkpoint must not need the original SAM2 file
    task = PromptableSegmentationTask.load_from_checkpoint(ckpt)
    assert task.net.prompt == "support" and task._bank  # support bank restored
    # medseg segment --model sam2_sgp --support DIR (prompt-free, 3-D propagation)
    image = tmp_path / "raw" / "imagesTr" / "case_001.nii.gz"
    out = tmp_path / "seg"
    args = ["segment", str(image), "-o", str(out), "--model", "sam2_sgp", "--checkpoint"]
    args += [str(ckpt), "--support", str(tmp_path / "raw"), "--device", "cpu", "--quiet"]
    assert medseg_main([*args, "--bank-size", "2"]) == 0
    report = json.loads((out / "case_001_stats.json").read_text())
    assert report["model"].startswith("sam2_sgp:") and report["support"]["slices"] > 0
    assert medseg_main([*args, "--box", "1,1,5,5", "--slice", "2", "--overwrite"]) == 2
    assert medseg_main(args[:-5] + ["--device", "cpu", "--overwrite"]) == 2  # no --support
    old = _old_style_copy(ckpt, "sam2_checkpoint", weights)
    old_args = [a if a != str(ckpt) else str(old) for a in args]
    assert medseg_main([*old_args, "--overwrite"]) == 0
