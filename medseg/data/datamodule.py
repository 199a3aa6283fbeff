"""``SegmentationDataModule``: a prepared dataset (``medseg prepare``) as Lightning dataloaders.

Nothing is read when the module is constructed (LightningCLI builds it while parsing configs):
the three small JSON files are read on first use of :attr:`preprocessing` / :attr:`dataset`, and
the volumes only in :meth:`setup`. Training batches are random patches (3-D) or slices across the
lowest-resolution axis (2-D); validation and test batches are whole resampled volumes (batch 1).

A case whose file cannot be read stops training with :class:`CaseLoadError` naming the file
(``error: <file>: <reason>``, exit 2), whether it fails while caching in the main process or
inside a DataLoader worker. ``medseg prepare`` checks every case beforehand; this is the backstop.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

from monai.data import CacheDataset, DataLoader, PersistentDataset
from torch.utils.data import Dataset

from medseg.data.prepared import PreparedDataModule
from medseg.errors import InputError, MedsegError
from medseg.transforms.preprocess import (
    inference_transforms,
    preprocessing_from_fingerprint,
    training_transforms,
)

__all__ = ["CaseLoadError", "SegmentationDataModule"]


class CaseLoadError(InputError):
    """A training/validation case failed to load (exit 2). One-argument constructor so that it
    survives the trip out of a DataLoader worker (torch re-raises ``type(msg)``)."""

    def __init__(self, message: str) -> None:
        if "Traceback" in message:  # re-raised by a DataLoader worker: keep our one line
            tail = [ln for ln in message.splitlines() if "CaseLoadError: " in ln]
            message = tail[-1].split("CaseLoadError: ", 1)[1] if tail else message
        super().__init__("case_load", message)


class SegmentationDataModule(PreparedDataModule):
    """Dataloaders over ``PREP/{dataset,splits,fingerprint}.json`` for one cross-validation fold.

    Args:
        prep_dir: folder written by ``medseg prepare``; a relative path is taken under
            ``$MEDSEG_DATA_ROOT`` when that is set (else the working directory).
        fold: which fold of ``splits.json`` to train/validate on.
        spatial_dims: 2 or 3; ``None`` = the fingerprint's plan.
        patch_size: training patch (``len == spatial_dims``); ``None`` = the fingerprint's.
        batch_size: volumes per training batch; each gives ``samples_per_volume`` patches, so a
            batch holds ``batch_size * samples_per_volume`` patches.
        samples_per_volume: patches (or slices) drawn from each loaded volume.
        iterations_per_epoch: fixed number of training batches per epoch (cases drawn with
            replacement, nnU-Net style); ``None`` = one pass over the training cases.
        num_workers: DataLoader worker processes.
        cache_rate: fraction of cases whose deterministic preprocessing is cached in RAM.
        cache_dir: cache on disk here instead (``PersistentDataset``; a sub-folder per
            preprocessing so a changed plan never reads a stale cache).
        augment: spatial + intensity augmentation of training patches.
        pos_fraction: fraction of patches centred on foreground.
        seed: seeds the random transforms and the shuffling.
        root: raw data folder replacing ``dataset.json``'s ``root`` (the data moved).

    Batches: train ``{"image": (B*S, C, *patch), "label": (B*S, 1, *patch)}``; val/test
    ``{"image": (1, C, X, Y, Z), "label": (1, 1, X, Y, Z), "case": [str]}`` on the target-spacing
    RAS grid; predict like val without ``label``, MetaTensors that ``Invertd`` maps back.
    """

    def __init__(
        self,
        prep_dir: str,
        fold: int = 0,
        spatial_dims: int | None = None,
        patch_size: list[int] | None = None,
        batch_size: int = 2,
        samples_per_volume: int = 2,
        iterations_per_epoch: int | None = None,
        num_workers: int = 2,
        cache_rate: float = 1.0,
        cache_dir: str | None = None,
        augment: bool = True,
        pos_fraction: float = 1 / 3,
        seed: int = 12345,
        root: str | None = None,
    ) -> None:
        super().__init__(prep_dir, fold=fold, root=root)
        if spatial_dims not in (None, 2, 3):
            raise ValueError(f"spatial_dims must be 2, 3 or None, got {spatial_dims}")
        if batch_size < 1 or samples_per_volume < 1:
            raise ValueError("batch_size and samples_per_volume must be >= 1")
        if not 0.0 <= cache_rate <= 1.0:
            raise ValueError(f"cache_rate must be in [0, 1], got {cache_rate}")
        self.spatial_dims = spatial_dims
        self.patch_size = patch_size
        self.batch_size = batch_size
        self.samples_per_volume = samples_per_volume
        self.iterations_per_epoch = iterations_per_epoch
        self.num_workers = num_workers
        self.cache_rate = cache_rate
        self.cache_dir = cache_dir
        self.augment = augment
        self.pos_fraction = pos_fraction
        self.seed = seed
        self.datasets: dict[str, Dataset] = {}

    @cached_property
    def preprocessing(self) -> dict[str, Any]:
        """The shared preprocessing dict (:mod:`medseg.transforms.preprocess`), linked into the
        task's ``preprocessing`` by the CLI so it is saved in every checkpoint."""
        return preprocessing_from_fingerprint(
            self.fingerprint, self.dataset, self.spatial_dims, self.patch_size
        )

    @property
    def num_classes(self) -> int:
        return len(self.preprocessing["labels"])

    @property
    def in_channels(self) -> int:
        return len(self.preprocessing["channel_names"])

    # Lightning hooks ---------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Build the datasets ``stage`` needs (caching volumes now, so a bad file fails here)."""
        pre = self.preprocessing
        wanted = {
            "fit": ["train", "val"],
            "validate": ["val"],
            "test": ["test"],
            "predict": ["predict"],
            None: ["train", "val"],
        }[stage]
        for split in wanted:
            if split in self.datasets:
                continue
            if split == "train":
                tf = training_transforms(
                    pre,
                    augment=self.augment,
                    samples_per_volume=self.samples_per_volume,
                    pos_fraction=self.pos_fraction,
                )
            else:
                tf = inference_transforms(pre, label_key=None if split == "predict" else "label")
            tf.set_random_state(seed=self.seed)
            self.datasets[split] = _fail_fast(lambda s=split, t=tf: self._cached(s, t))

    def train_dataloader(self) -> DataLoader:
        return self._train_loader(self.datasets["train"])

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["val"], 1)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["test"], 1)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["predict"], 1)

    # helpers -----------------------------------------------------------------------------------
    def _cached(self, split: str, transform: Callable) -> Dataset:
        data = self.cases(split)
        if self.cache_dir:
            key = json.dumps(
                [self.preprocessing, split == "train", self.pos_fraction], sort_keys=True
            )
            sub = hashlib.sha1(key.encode()).hexdigest()[:12]
            return _FailFast(PersistentDataset(data, transform, Path(self.cache_dir) / sub))
        progress = sys.stderr.isatty()
        return _FailFast(
            CacheDataset(
                data,
                transform,
                cache_rate=self.cache_rate,
                num_workers=max(1, self.num_workers),
                progress=progress,
            )
        )


class _FailFast(Dataset):
    """Dataset wrapper: any failure whose cause chain holds a MedsegError becomes a
    :class:`CaseLoadError` with that one-line message (file path included)."""

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        return _fail_fast(lambda: self.inner[index])


def _fail_fast(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except CaseLoadError:
        raise
    except Exception as exc:
        cause = _medseg_cause(exc)
        if cause is None:
            raise
        raise CaseLoadError(str(cause)) from exc


def _medseg_cause(exc: BaseException | None) -> MedsegError | None:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MedsegError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
