"""Corrupt weights are refused where they are read (issue 15, item 5): the CRC-32 of every zip
member and the finiteness of every floating tensor, for state dicts (LiteMedSAM, SAM, ...) and
for ``medseg fit`` checkpoints loaded for inference. Exit 4, one line naming the member or
tensor and the fix."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from medseg.cli.main import main
from medseg.errors import ModelError
from medseg.inference.checkpoints import check_lightning_checkpoint, load_task
from medseg.models.weights import check_finite, check_zip_members, read_state_dict

PROMPT = ["--box", "2,2,12,12", "--slice", "3"]


@pytest.fixture(scope="module")
def shipped() -> Path:
    from medseg.models.litemedsam import shipped_checkpoint

    return shipped_checkpoint()


@pytest.fixture
def scan(tmp_path) -> Path:
    path = tmp_path / "scan.nii.gz"
    data = np.random.default_rng(0).normal(100, 20, (16, 16, 6)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def _member_data_offset(path: Path, name: str) -> int:
    """Byte offset of a stored zip member's data (after its local header)."""
    info = zipfile.ZipFile(path).getinfo(name)
    with path.open("rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
    return info.header_offset + 30 + name_len + extra_len


def test_overwritten_litemedsam_weights_exit_4_naming_the_member(shipped, scan, tmp_path, capsys):
    """The tester's case: 4 KiB of 0xFF (float NaN) in the middle of the released weights."""
    data = bytearray(shipped.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = b"\xff" * 4096
    bad = tmp_path / "lite_medsam.pth"
    bad.write_bytes(bytes(data))
    out = tmp_path / "o"
    rc = main(["segment", str(scan), "-o", str(out), *PROMPT, "--checkpoint", str(bad)])
    assert rc == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}: "), err
    assert "fails its CRC check" in err[0] and "medsam_lite/data/" in err[0]
    assert "download the weights file again" in err[0]
    assert not out.exists() or not any(out.iterdir())


def test_a_nan_tensor_with_valid_crcs_is_refused_by_name(shipped, tmp_path):
    state = torch.load(shipped, map_location="cpu", weights_only=True)
    name = sorted(k for k, v in state.items() if v.is_floating_point())[7]
    state[name] = state[name].clone()
    state[name].view(-1)[0] = float("inf")
    path = tmp_path / "nan.pth"
    torch.save(state, path)
    with pytest.raises(ModelError, match=rf"tensor '{name}' holds NaN/Inf") as info:
        read_state_dict(path)
    assert info.value.code == "checkpoint_corrupt" and info.value.exit_code == 4


def test_zip_check_names_the_member_and_lets_other_formats_through(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"a": torch.arange(64.0), "b": torch.ones(256)}, path)
    check_zip_members(path, path=str(path), fix="x")  # intact
    names = [n for n in zipfile.ZipFile(path).namelist() if "/data/" in n]
    member = max(names, key=lambda n: zipfile.ZipFile(path).getinfo(n).file_size)
    offset = _member_data_offset(path, member)
    data = bytearray(path.read_bytes())
    data[offset + 8 : offset + 16] = b"\x00" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=rf"member '{member}' fails its CRC check; re-do"):
        check_zip_members(path, path=str(path), fix="re-do")
    legacy = tmp_path / "legacy.pth"
    torch.save({"a": torch.zeros(2)}, legacy, _use_new_zipfile_serialization=False)
    check_zip_members(legacy, path=str(legacy), fix="x")  # not a zip: torch.load judges it
    assert set(read_state_dict(legacy)) == {"a"}


def test_check_finite_ignores_integer_tensors():
    check_finite({"n": torch.tensor([2**40]), "w": torch.ones(3)}, path="p", fix="f")
    bf16 = torch.tensor([1.0, float("nan")], dtype=torch.bfloat16)  # the torch path
    with pytest.raises(ModelError, match=r"'w' holds NaN/Inf values; f"):
        check_finite({"w": bf16}, path="p", fix="f")


def test_lightning_checkpoint_crc_is_checked_before_loading(tmp_path):
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": {"net.w": torch.ones(512)}, "hyper_parameters": {}}, path)
    check_lightning_checkpoint(path)
    member = next(n for n in zipfile.ZipFile(path).namelist() if n.endswith("/data/0"))
    offset = _member_data_offset(path, member)
    data = bytearray(path.read_bytes())
    data[offset + 100 : offset + 104] = b"\xff\xff\xff\xff"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="fails its CRC check; re-train") as info:
        check_lightning_checkpoint(path)
    assert info.value.exit_code == 4


def test_a_loaded_task_with_non_finite_weights_is_refused(tmp_path):
    class Task(nn.Module):
        @classmethod
        def load_from_checkpoint(cls, path, **kwargs):
            task = cls()
            task.net = nn.Linear(2, 2)
            with torch.no_grad():
                task.net.bias[1] = float("nan")
            return task

    path = tmp_path / "run.ckpt"
    path.write_bytes(b"stand-in")
    with pytest.raises(ModelError, match=r"tensor 'net.bias' holds NaN/Inf values; re-train"):
        load_task(path, Task, device=torch.device("cpu"))
