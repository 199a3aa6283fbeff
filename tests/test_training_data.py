"""SegmentationDataModule: lazy construction, 2-D/3-D batches, fail-fast on a bad case."""

from __future__ import annotations

import pytest
from training_kit import make_prepared

from medseg.data import CaseLoadError, SegmentationDataModule


def test_construct_reads_nothing(tmp_path, monkeypatch):
    dm = SegmentationDataModule(str(tmp_path / "does-not-exist"))  # no data work at parse time
    assert dm.datasets == {}
    monkeypatch.setenv("MEDSEG_DATA_ROOT", str(tmp_path))
    assert SegmentationDataModule("prepared/x").prep_path == tmp_path / "prepared/x"
    with pytest.raises(Exception, match="medseg prepare"):
        _ = dm.preprocessing


def test_3d_batches(tmp_path):
    prep = make_prepared(tmp_path, n_cases=3)
    dm = SegmentationDataModule(str(prep), num_workers=0, batch_size=2, samples_per_volume=2)
    assert dm.num_classes == 3 and dm.in_channels == 1
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["image"].shape) == (4, 1, 16, 16, 8)  # 2 volumes x 2 patches
    assert tuple(batch["label"].shape) == (4, 1, 16, 16, 8)
    val = next(iter(dm.val_dataloader()))  # a whole volume, batch 1
    assert tuple(val["image"].shape) == (1, 1, 24, 20, 8) and val["case"] == ["case_000"]


def test_2d_slices_come_from_the_low_resolution_axis(tmp_path):
    # x is the 5 mm axis: slices are (y, z) planes, padded to the 2-D patch
    prep = make_prepared(tmp_path, n_cases=3, shape=(6, 24, 20), spacing=(5.0, 1.0, 1.0))
    dm = SegmentationDataModule(
        str(prep),
        spatial_dims=2,
        patch_size=[32, 16],
        num_workers=0,
        batch_size=2,
        samples_per_volume=3,
        iterations_per_epoch=4,
    )
    assert dm.preprocessing["slice_axis"] == 0
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == 4
    batch = next(iter(loader))
    assert tuple(batch["image"].shape) == (6, 1, 32, 16)
    assert tuple(batch["label"].shape) == (6, 1, 32, 16)


@pytest.mark.parametrize(("workers", "cache_rate"), [(0, 1.0), (1, 0.0)])
def test_bad_case_fails_fast_naming_the_file(tmp_path, workers, cache_rate):
    prep = make_prepared(tmp_path, n_cases=3, bad_case=1)
    dm = SegmentationDataModule(str(prep), num_workers=workers, cache_rate=cache_rate)
    with pytest.raises(CaseLoadError) as info:
        dm.setup("fit")  # caching reads in the main process ...
        for _ in dm.train_dataloader():  # ... else a worker reads it
            pass
    msg = str(info.value)
    assert "case_001.nii.gz" in msg and "truncated" in msg and "\n" not in msg
