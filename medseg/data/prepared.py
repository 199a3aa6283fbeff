"""``PreparedDataModule``: the part of every medseg data module that reads ``medseg prepare``
output (``dataset.json``, ``splits.json``, ``fingerprint.json``) and lists a fold's cases.

Nothing is read at construction (LightningCLI builds data modules while parsing configs): the
three JSON files are read on first use.
"""

from __future__ import annotations

import os
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from monai.data import DataLoader
from torch.utils.data import Dataset, RandomSampler

from medseg.data.prepared_files import load_prepared
from medseg.errors import InputError

__all__ = ["PreparedDataModule"]


class PreparedDataModule(LightningDataModule):
    """Base of the medseg data modules: one prepared dataset, one cross-validation fold.

    Args:
        prep_dir: folder written by ``medseg prepare``; a relative path is taken under
            ``$MEDSEG_DATA_ROOT`` when that is set (else the working directory).
        fold: which fold of ``splits.json`` to train/validate on.
        root: raw data folder replacing ``dataset.json``'s ``root`` (the data moved).
    """

    def __init__(self, prep_dir: str, *, fold: int = 0, root: str | None = None) -> None:
        super().__init__()
        self.prep_dir = prep_dir
        self.fold = fold
        self.root = root

    # prepared files (lazy) -------------------------------------------------------------------
    @property
    def prep_path(self) -> Path:
        p = Path(self.prep_dir).expanduser()
        env = os.environ.get("MEDSEG_DATA_ROOT")
        return p if p.is_absolute() or not env else Path(env).expanduser() / p

    @cached_property
    def _prepared(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        return load_prepared(self.prep_path, root=self.root)

    @property
    def dataset(self) -> dict[str, Any]:
        """Parsed ``dataset.json`` (``root`` already replaced when ``root`` is given)."""
        return self._prepared[0]

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self._prepared[2]

    def cases(self, split: str) -> list[dict[str, Any]]:
        """Items ``{"image", "label"?, "case"}`` (absolute paths) of ``train``/``val``/``test``.

        ``test`` is the labelled part of ``dataset.json``'s test list; when it has no labels
        (MSD), the fold's validation cases are used instead, with a warning.
        """
        ds, splits = self.dataset, self._prepared[1]
        if split in ("train", "val"):
            folds = splits["folds"]
            if not 0 <= self.fold < len(folds):
                raise InputError("bad_argument", f"fold {self.fold} not in 0..{len(folds) - 1}")
            wanted = set(folds[self.fold][split])
            entries = [e for e in ds["training"] if e["case"] in wanted]
            missing = wanted - {e["case"] for e in entries}
            if missing:
                raise InputError(
                    "bad_prepared",
                    f"splits.json names cases missing from dataset.json: {sorted(missing)[:5]}",
                    path=str(self.prep_path / "splits.json"),
                )
        elif split == "test":
            entries = [e for e in ds["test"] if e.get("label")]
            if not entries:
                warnings.warn(
                    "the test list has no labels; testing on the validation cases of fold "
                    f"{self.fold}",
                    stacklevel=2,
                )
                return self.cases("val")
        elif split == "predict":
            entries = list(ds["test"])
        else:
            raise ValueError(f"unknown split {split!r}")
        root = Path(ds["root"])
        items = []
        for e in entries:
            item = {"case": e["case"], "image": str(root / e["image"])}
            if e.get("label") and split != "predict":
                item["label"] = str(root / e["label"])
            items.append(item)
        return items

    # loaders shared by the subclasses (they set batch_size, iterations_per_epoch,
    # num_workers and seed) ---------------------------------------------------------------------
    def _train_loader(self, ds: Dataset) -> DataLoader:
        """Shuffled batches; with ``iterations_per_epoch`` a fixed number of batches per epoch,
        cases drawn with replacement (nnU-Net style)."""
        generator = torch.Generator().manual_seed(self.seed)
        if self.iterations_per_epoch:
            n = self.iterations_per_epoch * self.batch_size
            sampler = RandomSampler(ds, replacement=True, num_samples=n, generator=generator)
            return self._loader(ds, self.batch_size, sampler=sampler)
        return self._loader(ds, self.batch_size, shuffle=True, generator=generator)

    def _loader(self, ds: Dataset, batch_size: int, **kwargs: Any) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )
