"""Reading ``medseg fit`` checkpoints: what a file is, and loading a task from it with one-line
errors (:class:`medseg.errors.ModelError`, exit 4).

This is the one inference module that imports :mod:`medseg.engine` (and so Lightning): every
Task class a checkpoint needs is loaded here (segmentation, restoration, promptable), so the
predictors stay free of training code (DESIGN.md §1).

**Files.** A user-named checkpoint passes :func:`check_checkpoint_file` (one
:func:`medseg.files.check_regular_file`) before anything opens it: a FIFO would block the open,
a device such as ``/dev/zero`` would be read without end. :func:`checkpoint_kind` opens only
regular files.

**Integrity.** Before loading, the CRC-32 of every zip member is checked; after loading, every
floating tensor must be finite (:mod:`medseg.models.weights`), so overwritten bytes are refused
instead of segmenting with NaN weights.

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
from typing import Any

import torch
from torch import nn

from medseg.errors import ModelError
from medseg.files import check_regular_file
from medseg.models.weights import check_finite, check_zip_members

__all__ = [
    "RETRAIN",
    "check_checkpoint_file",
    "check_lightning_checkpoint",
    "checkpoint_hparams",
    "checkpoint_kind",
    "is_restoration_checkpoint",
    "load_promptable_checkpoint",
    "load_restoration_checkpoint",
    "load_segmentation_checkpoint",
    "load_task",
]

RETRAIN = "re-train, or use an earlier checkpoint of the run"
"""The fix named for a corrupt ``medseg fit`` checkpoint."""


def check_checkpoint_file(path: str | os.PathLike[str]) -> None:
    """:class:`ModelError` (exit 4) unless ``path`` is a readable regular file: ``"checkpoint
    not found"``, or ``"checkpoint: not a regular file (it is a FIFO/pipe)"`` and the like.
    Nothing is opened."""
    if not os.path.exists(path):  # stat only
        raise ModelError("checkpoint_not_found", "checkpoint not found", path=str(path))
    check_regular_file(path, error=ModelError, what="checkpoint")


def checkpoint_kind(path: str | os.PathLike[str]) -> str:
    """``"lightning"`` for a torch zip checkpoint whose pickle names ``state_dict`` and
    ``hyper_parameters`` (``medseg fit``), ``"state_dict"`` for another torch zip checkpoint
    (e.g. LiteMedSAM weights), ``"unknown"`` when the file is no readable torch zip or not a
    regular file (a FIFO, a device, a folder, a missing file: never opened). Only the pickle's
    opcodes are scanned: nothing is unpickled or imported."""
    try:
        check_regular_file(path, error=ModelError, what="checkpoint")
    except ModelError:
        return "unknown"  # the loader that follows names the problem
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


def check_lightning_checkpoint(path: str | os.PathLike[str]) -> None:
    """:class:`ModelError` unless ``path`` is a readable ``medseg fit`` checkpoint file whose zip
    members pass their CRC check."""
    check_checkpoint_file(path)
    if checkpoint_kind(path) != "lightning":
        raise ModelError(
            "bad_checkpoint",
            "not a medseg training checkpoint (expected a .ckpt from `medseg fit` holding "
            "state_dict and hyper_parameters; truncated or corrupt?)",
            path=str(path),
        )
    check_zip_members(path, path=str(path), fix=RETRAIN)


def load_segmentation_checkpoint(
    path: str | os.PathLike[str], *, device: torch.device, trusted: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """``(net, preprocessing)`` from a ``SegmentationTask`` checkpoint, or :class:`ModelError`
    (exit 4) with a one-line reason. See the module docstring on trust."""
    from medseg.engine.segmentation import SegmentationTask

    check_lightning_checkpoint(path)
    if is_restoration_checkpoint(path, trusted=trusted):
        raise ModelError(
            "restoration_checkpoint",
            "a restoration checkpoint, not a segmentation one: use `medseg restore`",
            path=str(path),
        )
    task = load_task(path, SegmentationTask, device=device, trusted=trusted)
    if not task.preprocessing:
        raise ModelError("no_preprocessing", "checkpoint holds no preprocessing", path=str(path))
    return task.net, dict(task.preprocessing)


def load_restoration_checkpoint(
    path: str | os.PathLike[str], *, device: torch.device, trusted: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """``(net, restoration)`` from a restoration checkpoint; DISGAN gives its generator.
    :class:`ModelError` (exit 4) with a one-line reason otherwise."""
    from medseg.engine.restoration import AdversarialRestorationTask, RestorationTask

    check_lightning_checkpoint(path)
    hp = checkpoint_hparams(path, trusted=trusted)
    if not hp.get("restoration"):
        raise ModelError(
            "not_restoration",
            "a segmentation checkpoint, not a restoration one: use `medseg segment`",
            path=str(path),
        )
    adversarial = "adv_weight" in hp
    task_cls = AdversarialRestorationTask if adversarial else RestorationTask
    task = load_task(path, task_cls, device=device, trusted=trusted)
    net = task.net.generator if adversarial else task.net
    return net.eval(), dict(task.restoration)


def load_promptable_checkpoint(
    path: str | os.PathLike[str], *, device: torch.device, trusted: bool = False
) -> nn.Module:
    """The net of a ``PromptableSegmentationTask`` checkpoint (DB-SAM, SAM2-SGP fine-tunes).

    The fine-tuned weights are all in the checkpoint, so the original SAM/SAM2 weights file
    named in its hyper-parameters is never read. :class:`ModelError` (exit 4) otherwise.
    """
    from medseg.engine.promptable import PromptableSegmentationTask, without_weight_files

    check_lightning_checkpoint(path)
    hparams, removed = without_weight_files(checkpoint_hparams(path, trusted=trusted))
    override = {"net": hparams["net"]} if removed else {}
    task_cls = PromptableSegmentationTask
    return load_task(path, task_cls, device=device, trusted=trusted, **override).net


def checkpoint_hparams(path: str | os.PathLike[str], *, trusted: bool = False) -> dict[str, Any]:
    """The ``hyper_parameters`` of a checkpoint (memory-mapped: the weights are not read);
    failures as :func:`load_task`."""
    check_checkpoint_file(path)
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
    path: str | os.PathLike[str],
    task_cls: type,
    *,
    device: torch.device,
    trusted: bool = False,
    **overrides: Any,
) -> Any:
    """``task_cls.load_from_checkpoint(path, **overrides)`` (``weights_only`` unless
    ``trusted``), then every floating weight checked finite; any failure becomes one
    :class:`ModelError` line (exit 4)."""
    check_checkpoint_file(path)
    with _model_errors(path):
        task = task_cls.load_from_checkpoint(
            path, map_location=device, weights_only=not trusted, **overrides
        )
    check_finite(task.state_dict(), path=str(path), fix=RETRAIN)
    return task


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
