"""Memory bombs (issue 15, item 3), library level: ``to_uint8`` gives the float64 reference's
bytes without a float copy of the volume; memory is estimated from the header and refused before
anything is decompressed (the decompression-bomb family at and over the 2 GiB loader guard);
windows and batches are checked before allocating; running out of memory is one error line.

Nothing here allocates gigabytes: the limit comes from ``MEDSEG_MAX_MEMORY``, and every bomb is
refused from its header.
"""

from __future__ import annotations

import time
import tracemalloc
from importlib.resources import files

import nibabel as nib
import numpy as np
import pytest
from bad_inputs import MEMORY_BOMBS

from medseg.errors import InputError
from medseg.inference import memory
from medseg.inference.litemedsam import to_uint8  # what the pipeline calls
from medseg.inference.memory import (
    GIB,
    allocation_errors,
    check_memory,
    memory_limit,
    parse_size,
    prompted_guard,
    prompted_need,
)
from medseg.inference.windowing import percentiles
from medseg.io import Volume, VolumeHeader, load_volume


def reference_to_uint8(array: np.ndarray, *, window=None) -> np.ndarray:
    """The float64 version (MedSAM's ``pre_CT_MR`` as written; 24 bytes per voxel of copies)."""
    data = np.asarray(array)
    if data.size and not np.isfinite(data).all():
        raise InputError("non_finite", "image holds NaN or infinite values")
    data = data.astype(np.float64, copy=False)
    if data.size == 0:
        return np.zeros(data.shape, dtype=np.uint8)
    if window is not None:
        level, width = window
        low, high = level - width / 2, level + width / 2
    else:
        positive = data[data > 0]
        low, high = np.percentile(positive if positive.size else data, (0.5, 99.5))
    clipped = np.clip(data, low, high)
    span = clipped.max() - clipped.min()
    if span <= 0:
        return np.zeros(data.shape, dtype=np.uint8)
    scaled = (clipped - clipped.min()) / span * 255.0
    if window is None:
        scaled[data == 0] = 0
    return scaled.astype(np.uint8)


def _random_arrays(seed: int):
    rng = np.random.default_rng(seed)
    for n in (1, 2, 3, 17, 1000, 4097):
        yield rng.normal(0, 1, n).astype(np.float32)
        yield rng.integers(-1024, 3000, n).astype(np.int16)
        yield (rng.random(n) * 1e6).astype(np.float64)
        yield rng.integers(0, 4, n).astype(np.uint8)
        yield np.where(rng.random(n) < 0.4, 0, rng.lognormal(3, 2, n)).astype(np.float32)
        yield -np.abs(rng.normal(0, 1, n)).astype(np.float32)  # no positive voxel
    yield np.full(50, 7.0, np.float32)  # constant
    yield np.zeros((0, 3), np.float32)


@pytest.mark.parametrize("window", [None, (40.0, 400.0), (0.1, 0.5), (-600, 1500)])
def test_to_uint8_equals_the_float64_reference_on_random_data(window, monkeypatch):
    monkeypatch.setattr("medseg.inference.windowing.BLOCK_VOXELS", 256)  # many blocks
    for seed in range(4):
        for array in _random_arrays(seed):
            np.testing.assert_array_equal(
                to_uint8(array, window=window), reference_to_uint8(array, window=window)
            )
        volume = np.random.default_rng(seed).normal(100, 40, (23, 17, 9)).astype(np.float32)
        volume[volume < 70] = 0
        view = volume.transpose(2, 0, 1)[::-1]  # a non-contiguous display stack, as PlaneView
        got = to_uint8(view, window=window)
        np.testing.assert_array_equal(got, reference_to_uint8(view, window=window))
        assert got.flags.c_contiguous


def test_to_uint8_equals_the_float64_reference_on_the_mni_template():
    path = files("nilearn.datasets").joinpath(
        "data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    )
    mni = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
    np.testing.assert_array_equal(to_uint8(mni), reference_to_uint8(mni))
    windowed = reference_to_uint8(mni, window=(50, 80))
    np.testing.assert_array_equal(to_uint8(mni, window=(50, 80)), windowed)


def test_percentiles_are_numpys_linear_method_exactly():
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 999, 10_001):
        values = rng.normal(0, 1e3, n).astype(np.float32)
        q = (0.0, 0.5, 33.3, 50.0, 99.5, 100.0, float(rng.uniform(0, 100)))
        expected = np.percentile(values.astype(np.float64), q)
        assert percentiles(values.copy(), q) == tuple(expected.tolist())


def test_to_uint8_makes_no_float_copy_of_the_volume(monkeypatch):
    """The float64 reference needs ~32 bytes per voxel on top of a float32 volume; the
    blockwise version 1 (result) + at most 4 (positive voxels) + fixed-size blocks (made small
    here so that the volume holds many)."""
    monkeypatch.setattr("medseg.inference.windowing.BLOCK_VOXELS", 2**15)
    volume = np.random.default_rng(0).normal(100, 30, (96, 96, 96)).astype(np.float32)
    volume[volume < 70] = 0
    tracemalloc.start()
    try:
        to_uint8(volume)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak / volume.size < 6.0


# limit and check --------------------------------------------------------------------------------
def test_parse_size_and_the_environment_override(monkeypatch):
    assert parse_size("8G") == 8 * GIB and parse_size("512m") == 512 * 2**20
    assert parse_size("1.5GiB") == int(1.5 * GIB) and parse_size("4000") == 4000
    monkeypatch.setenv("MEDSEG_MAX_MEMORY", "3G")
    assert memory_limit() == 3 * GIB
    monkeypatch.setenv("MEDSEG_MAX_MEMORY", "lots")
    with pytest.raises(InputError, match="MEDSEG_MAX_MEMORY='lots' is not a size"):
        memory_limit()
    monkeypatch.delenv("MEDSEG_MAX_MEMORY")
    assert memory_limit() == memory.available_memory() > 0


def test_check_memory_names_both_numbers_and_the_fix(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 2 * GIB)
    check_memory(GIB, fix="crop it")  # fits
    with pytest.raises(InputError) as info:
        check_memory(3 * GIB, fix="crop it", what="the work", path="a.nii.gz")
    err = info.value
    assert err.code == "not_enough_memory" and err.exit_code == 2
    assert str(err) == (
        "a.nii.gz: not enough memory: the work needs about 3.00 GiB, 2.00 GiB available; crop it"
    )


def test_estimates_scale_with_the_header():
    small = VolumeHeader("a", (100, 100, 100))
    cache = 100 * memory.EMBEDDING_BYTES
    assert prompted_need(small) == 12 * 10**6 + cache
    assert prompted_need(small, loaded=True) == 8 * 10**6 + cache
    doubles = VolumeHeader("a", (300, 300, 300), itemsize=8)  # 8-byte voxels load heavier
    assert prompted_need(doubles) == 20 * 27 * 10**6 + 256 * memory.EMBEDDING_BYTES
    coarse = memory.automatic_need(small, target_spacing=(2.0, 2.0, 2.0), classes=3)
    fine = memory.automatic_need(small, target_spacing=(0.5, 0.5, 0.5), classes=3)
    assert fine > coarse > 64 * 10**6
    assert memory.restoration_need(small, upscale=8) > 8 * memory.restoration_need(small) / 2


# decompression bombs at and over the loader guard -----------------------------------------------
@pytest.mark.parametrize("case_id,make,code,needle", MEMORY_BOMBS, ids=[c[0] for c in MEMORY_BOMBS])
def test_bombs_are_refused_from_the_header(tmp_path, monkeypatch, case_id, make, code, needle):
    """Under the guard, a 4 GiB limit refuses the prompted pipeline (it would need ~6 GiB)
    before a byte is decompressed (well under a second for a 2 GiB stream); over the guard the
    loader's own ``too_large`` comes first."""
    monkeypatch.setenv("MEDSEG_MAX_MEMORY", "4G")
    path = make(tmp_path)
    assert path.stat().st_size < 4 * 2**20
    started = time.monotonic()
    with pytest.raises(InputError) as info:
        load_volume(path, on_header=prompted_guard())
    assert time.monotonic() - started < 1.0
    assert info.value.code == code and needle in str(info.value)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_guard_sees_the_header_of_every_format(tmp_path):
    """The callback runs for NIfTI, NRRD/MHA and DICOM alike, with shape, channels, spacing."""
    import SimpleITK as sitk
    from bad_inputs import CT5N, copy_series, small_array

    seen: list[VolumeHeader] = []
    array = small_array((8, 7, 6))
    nib.save(nib.Nifti1Image(array, np.diag([2.0, 3.0, 4.0, 1.0])), str(tmp_path / "a.nii.gz"))
    image = sitk.GetImageFromArray(array.T.copy())
    image.SetSpacing((2.0, 3.0, 4.0))
    sitk.WriteImage(image, str(tmp_path / "a.nrrd"))
    load_volume(tmp_path / "a.nii.gz", on_header=seen.append)
    load_volume(tmp_path / "a.nrrd", on_header=seen.append)
    load_volume(copy_series(tmp_path, "ct", CT5N), on_header=seen.append)
    assert [h.shape for h in seen[:2]] == [(8, 7, 6)] * 2
    assert [h.spacing for h in seen[:2]] == [(2.0, 3.0, 4.0)] * 2
    assert seen[2].shape[2] == 5 and seen[2].voxels == seen[2].shape[0] * seen[2].shape[1] * 5


# allocation failures ----------------------------------------------------------------------------
def test_a_real_torch_allocation_failure_becomes_one_line():
    import torch

    with pytest.raises(InputError) as info, allocation_errors("lower --batch-size", path="x"):
        torch.empty(2**52, dtype=torch.uint8)  # 4 PiB
    assert info.value.code == "not_enough_memory"
    assert str(info.value) == (
        "x: not enough memory: the CPU ran out of memory during inference; lower --batch-size"
    )
    with pytest.raises(RuntimeError, match="unrelated"), allocation_errors("fix"):
        raise RuntimeError("unrelated")


def test_loaded_volume_header():
    vol = Volume(np.zeros((2, 5, 6, 7), np.float32), np.diag([1.0, 2.0, 3.0, 1.0]))
    header = VolumeHeader.of(vol)
    assert header.shape == (5, 6, 7) and header.channels == 2 and header.voxels == 420
    assert header.spacing == (1.0, 2.0, 3.0) and header.itemsize == 4


def test_prompted_segmentation_checks_memory_before_any_copy(monkeypatch):
    """``segment_with_prompt`` on a volume already in memory: the remaining work (8 bytes per
    voxel and the embedding cache) is checked before ``to_uint8`` or the predictor runs."""
    from medseg.inference.prompted import Prompt, segment_with_prompt

    class Recorder:
        def __init__(self):
            self.stacks = []

        def set_stack(self, stack):
            self.stacks.append(stack)

        @property
        def stack(self):  # the predictor protocol: the (S, H, W) stack it holds
            return self.stacks[-1]

        def predict(self, index, **kw):
            return np.ones(self.stacks[-1].shape[1:], bool), 1.0

    volume = Volume(np.random.default_rng(0).random((40, 30, 20), np.float32), np.eye(4))
    prompt = Prompt("axial", 10, box=(2.0, 2.0, 20.0, 20.0))
    monkeypatch.setenv("MEDSEG_MAX_MEMORY", "64M")  # 40 embeddings (largest side) are 160 MiB
    predictor = Recorder()
    with pytest.raises(InputError, match="prompted segmentation needs about 0.16 GiB, 0.06 GiB"):
        segment_with_prompt(volume, prompt, predictor, propagate=False)
    assert predictor.stacks == []
    monkeypatch.setenv("MEDSEG_MAX_MEMORY", "1G")
    labels = segment_with_prompt(volume, prompt, predictor, propagate=False)
    assert labels.shape == (40, 30, 20) and len(predictor.stacks) == 1
