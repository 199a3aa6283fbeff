"""Memory bombs (issue 15, item 3) in automatic segmentation and restoration: the volume's memory
from its header, ``--roi`` / ``--batch-size`` checked before MONAI allocates a window, and torch
running out of memory as one error line, in the library and through ``medseg segment|restore``.

Nets are pointwise stand-ins (threshold, identity), so nothing here trains or allocates much.
"""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from bad_inputs import _OVER_GUARD, _UNDER_GUARD, _promise
from torch import nn

from medseg.cli.main import main
from medseg.errors import InputError
from medseg.inference.automatic import AutomaticSegmenter
from medseg.inference.restoration import Restorer
from medseg.inference.windows import check_windows
from medseg.io import Volume, VolumeHeader

PRE = {
    "spatial_dims": 3,
    "target_spacing": [1.5, 1.5, 3.0],
    "orientation": "RAS",
    "channel_names": ["MRI"],
    "normalisation": [{"scheme": "zscore"}],
    "labels": {"0": "background", "1": "object"},
    "patch_size": [16, 16, 8],
    "slice_axis": 2,
}


class ThresholdNet(nn.Module):
    """``(B, 1, *S)`` -> logits ``(B, 2, *S)``: class 1 where ``x > 0.5``."""

    size_divisor = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.full_like(x, 0.5), x], dim=1)


class Greedy(nn.Module):
    """A net whose forward asks torch for 4 PiB (a real allocation failure, instantly)."""

    size_divisor = 1

    def forward(self, x: torch.Tensor, regions=None) -> torch.Tensor:
        torch.empty(2**52, dtype=torch.uint8)
        return x


class Identity(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def _restoration(dims: int) -> dict:
    scheme = {"scheme": "zscore"}
    return {"spatial_dims": dims, "scale": 1, "intensity": scheme, "channel": 0,
            "patch_size": [16] * dims}  # fmt: skip


def _volume(shape=(30, 26, 10)) -> Volume:
    rng = np.random.default_rng(0)
    array = rng.normal(100, 20, shape).astype(np.float32)
    return Volume(array, np.diag([1.5, 1.5, 3.0, 1.0]), meta={"path": "scan.nii.gz"})


def _scan(tmp_path: Path) -> Path:
    vol = _volume()
    path = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(vol.array, vol.affine), str(path))
    return path


# automatic ------------------------------------------------------------------------------------
def test_a_roi_larger_than_the_image_is_refused_before_any_window():
    seg = AutomaticSegmenter(ThresholdNet(), PRE, device="cpu", roi=[4096, 4096, 4096])
    with pytest.raises(InputError) as info:
        seg.segment(_volume())
    assert info.value.code == "bad_argument"
    assert str(info.value) == (
        "--roi 4096,4096,4096 is larger than the image on the model grid (30x26x10); "
        "use sizes up to 30,26,10"
    )
    seg.roi = [30, 26, 10]  # the whole image is the largest useful window
    assert seg.segment(_volume()).labels.array.shape == (30, 26, 10)


def test_a_batch_of_windows_that_cannot_fit_names_batch_size(monkeypatch):
    monkeypatch.setenv("MEDSEG_MAX_MEMORY", "1G")
    monkeypatch.setattr("medseg.inference.memory.WINDOW_BYTES_PER_VOXEL", 2**20)  # a huge net
    seg = AutomaticSegmenter(ThresholdNet(), PRE, device="cpu", roi="patch", sw_batch_size=64)
    with pytest.raises(InputError) as info:
        seg.segment(_volume())
    assert info.value.code == "not_enough_memory"
    assert "a batch of 18 window(s) of 16,16,8 needs about" in str(info.value)  # not 64: 18 fit
    assert str(info.value).endswith(
        "GiB available (MEDSEG_MAX_MEMORY); lower --batch-size or --roi"
    )


def test_check_windows_counts_only_the_windows_a_batch_can_hold(monkeypatch):
    monkeypatch.setenv("MEDSEG_MAX_MEMORY", "64M")
    check_windows((512, 512), (512, 512), 10**6, windows=1, explicit=True)  # one 32 MiB window
    with pytest.raises(InputError, match="a batch of 4 window"):
        check_windows((512, 512), (512, 512), 4, windows=100, explicit=True)


def test_running_out_of_memory_in_the_net_is_one_line():
    seg = AutomaticSegmenter(Greedy(), PRE, device="cpu", roi="patch")
    with pytest.raises(InputError) as info:
        seg.segment(_volume())
    assert str(info.value) == (
        "scan.nii.gz: not enough memory: the CPU ran out of memory during inference; "
        "lower --batch-size or --roi, or crop the image"
    )


@pytest.mark.parametrize(
    "dim,code", [(_UNDER_GUARD, "not_enough_memory"), (_OVER_GUARD, "too_large")]
)
def test_automatic_refuses_a_bomb_from_its_header(tmp_path, monkeypatch, dim, code):
    monkeypatch.setenv("MEDSEG_MAX_MEMORY", "4G")
    path = _promise("bomb.nii.gz", np.float32, dim)(tmp_path)
    seg = AutomaticSegmenter(ThresholdNet(), PRE, device="cpu")
    with pytest.raises(InputError) as info:
        seg.segment(path, probabilities=True)
    assert info.value.code == code
    if code == "not_enough_memory":  # 1 mm voxels -> 1.5 x 1.5 x 3 mm: V' = V / 6.75
        assert "automatic segmentation needs about" in str(info.value)
        assert str(info.value).endswith("crop or downsample the image first or drop "
                                        "--save-probabilities")  # fmt: skip
    assert seg.memory_need(VolumeHeader("b", tuple(dim[1:4]))) > 30 * 2**30  # >= 64 B/voxel


# restoration ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dims,roi,words", [
    (2, (4096, 4096), "--roi 4096,4096 is larger than a slice (30x26); use sizes up to 30,26"),
    (3, (64, 64, 64), "--roi 64,64,64 is larger than the image (30x26x10); use sizes up to"),
])  # fmt: skip
def test_restore_refuses_a_roi_larger_than_the_image(dims, roi, words):
    restorer = Restorer(Identity(), _restoration(dims), device="cpu", roi=roi)
    with pytest.raises(InputError) as info:
        restorer.restore(_volume())
    assert info.value.code == "bad_argument" and words in str(info.value)


def test_restore_memory_and_allocation_failures_are_one_line(monkeypatch):
    with pytest.raises(InputError, match="the CPU ran out of memory during inference; lower"):
        Restorer(Greedy(), _restoration(2), device="cpu").restore(_volume())
    monkeypatch.setenv("MEDSEG_MAX_MEMORY", "100K")
    with pytest.raises(InputError) as info:
        Restorer(Identity(), _restoration(2), device="cpu").restore(_volume())
    assert str(info.value).startswith("scan.nii.gz: not enough memory: restoration needs about")
    assert math.isclose(Restorer(Identity(), _restoration(3), device="cpu").upscale, 1)


# through the CLI ------------------------------------------------------------------------------
def test_segment_and_restore_cli_refuse_a_huge_roi_in_one_line(tmp_path, monkeypatch, capsys):
    def fake_segmenter(cls, path, *, trusted=False, **kwargs):
        return cls(ThresholdNet(), PRE, **kwargs)

    def fake_restorer(cls, path, *, device="auto", trusted=False, **kwargs):
        return cls(Identity(), _restoration(2), device=device, **kwargs)

    monkeypatch.setattr(AutomaticSegmenter, "from_checkpoint", classmethod(fake_segmenter))
    monkeypatch.setattr(Restorer, "from_checkpoint", classmethod(fake_restorer))
    scan = _scan(tmp_path)
    ckpt = tmp_path / "run.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"preprocessing": None}}, ckpt)
    out = tmp_path / "out"
    argv = ["segment", str(scan), "-o", str(out), "--checkpoint", str(ckpt)]
    assert main([*argv, "--roi", "4096,4096,4096", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --roi 4096,4096,4096 is larger than"), err
    argv = ["restore", str(scan), "-o", str(out), "--checkpoint", str(ckpt), "-q"]
    assert main([*argv, "--roi", "100000,100000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--roi 100000,100000 is larger than a slice (30x26)" in err[0], err
    assert not list(out.glob("*.nii.gz"))
