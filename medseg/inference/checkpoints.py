"""Reading ``medseg fit`` checkpoints: what a file is, and loading a task from it with one-line
errors (:class:`medseg.errors.ModelError`, exit 4).

**Trust.** Checkpoints are Lightning pickles whose hyper-parameters name the network class that
is imported and called to rebuild it: load only checkpoints you trust. They are unpickled with
``weights_only=True``; one holding arbitrary pickled objects is refused unless ``trusted=True``.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medseg.errors import ModelError

__all__ = [
    "check_lightning_checkpoint",
    "checkpoint_hparams",
    "checkpoint_kind",
    "is_restoration_checkpoint",
    "load_segmentation_checkpoint",
    "load_task",
]


def checkpoint_kind(path: str | os.PathLike[str]) -> str:
    """``"lightning"`` for a torch zip checkpoint whose pickle names ``state_dict`` and
    ``hyper_parameters`` (``medseg fit``), ``"state_dict"`` for another torch zip checkpoint
    (e.g. LiteMedSAM weights), ``"unknown"`` when the file is no readable torch zip. Only the
    pickle's opcodes are scanned: nothing is unpickled or imported."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == "data.pkl"]
            if not names:
                return "unknown"
            payload = archive.read(min(names, key=len))
        strings = {arg for _, arg, _ in pickletools.genops(payload) if isinstance(arg, str)}
    except (OSError, zipfile.BadZipFile, ValueError, EOFError, RuntimeError):
        return "unknown"
    return "lightning" if {"state_dict", "hyper_parameters"} <= strings else "state_dict"


def load_segmentation_checkpoint(
    path: str | os.PathLike[str], *, device: torch.device, trusted: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """``(net, preprocessing)`` from a ``SegmentationTask`` checkpoint, or :class:`ModelError`
    (exit 4) with a one-line reason. See the module docstring on trust."""
    from medseg.engine.segmentation import SegmentationTask

    check_lightning_checkpoint(path)
    _refuse_restoration(path, trusted)
    task = load_task(path, SegmentationTask, device=device, trusted=trusted)
    if not task.preprocessing:
        raise ModelError("no_preprocessing", "checkpoint holds no preprocessing", path=str(path))
    return task.net, dict(task.preprocessing)


def check_lightning_checkpoint(path: str | os.PathLike[str]) -> None:
    """:class:`ModelError` unless ``path`` is a readable ``medseg fit`` checkpoint file."""
    if not Path(path).is_file():
        raise ModelError("checkpoint_not_found", "checkpoint not found", path=str(path))
    if checkpoint_kind(path) != "lightning":
        raise ModelError(
            "bad_checkpoint",
            "not a medseg training checkpoint (expected a .ckpt from `medseg fit` holding "
            "state_dict and hyper_parameters; truncated or corrupt?)",
            path=str(path),
        )


def checkpoint_hparams(path: str | os.PathLike[str], *, trusted: bool = False) -> dict[str, Any]:
    """The ``hyper_parameters`` of a checkpoint (memory-mapped: the weights are not read);
    failures as :func:`load_task`."""
    with _model_errors(path):
        ckpt = torch.load(path, map_location="cpu", weights_only=not trusted, mmap=True)
    return dict(ckpt.get("hyper_parameters") or {})


def is_restoration_checkpoint(path: str | os.PathLike[str], *, trusted: bool = False) -> bool:
    """True for a ``medseg fit`` checkpoint of a restoration task (its hyper-parameters hold a
    ``restoration`` dict); False for anything else, unreadable files included."""
    if checkpoint_kind(path) != "lightning":
        return False
    try:
        return bool(checkpoint_hparams(path, trusted=trusted).get("restoration"))
    except ModelError:  # unreadable or untrusted: the loader that follows says so
        return False


def load_task(
    path: str | os.PathLike[str], task_cls: type, *, device: torch.device, trusted: bool = False
) -> Any:
    """``task_cls.load_from_checkpoint(path)`` (``weights_only`` unless ``trusted``); any
    failure becomes one :class:`ModelError` line (exit 4)."""
    with _model_errors(path):
        return task_cls.load_from_checkpoint(path, map_location=device, weights_only=not trusted)


@contextmanager
def _model_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn any checkpoint-reading failure into one :class:`ModelError` line (exit 4)."""
    try:
        yield
    except ModelError:
        raise
    except pickle.UnpicklingError as err:
        raise ModelError(
            "untrusted_checkpoint",
            "checkpoint holds pickled Python objects; load it only from a trusted source "
            "(--trust-checkpoint)",
            path=str(path),
        ) from err
    except Exception as err:  # noqa: BLE001 - any loader failure is a checkpoint error (exit 4)
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(
            "bad_checkpoint", f"cannot load checkpoint: {reason[:200]}", path=str(path)
        ) from err


def _refuse_restoration(path: str | os.PathLike[str], trusted: bool) -> None:
    """A restoration checkpoint given to a segmentation command: say which command to use."""
    if is_restoration_checkpoint(path, trusted=trusted):
        raise ModelError(
            "restoration_checkpoint",
            "a restoration checkpoint, not a segmentation one: use `medseg restore`",
            path=str(path),
        )
