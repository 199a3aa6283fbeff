"""Reading weights files: the one reader of state dicts (LiteMedSAM, SAM, SAM2, DB-SAM,
MedicalNet) and the integrity checks every checkpoint passes before its weights are used.

Every failure is a :class:`medseg.errors.ModelError` with a one-line reason that names the fix
(CLI exit code 4). In order, :func:`read_state_dict`:

1. refuses anything but a readable regular file (:func:`medseg.files.check_regular_file`), so a
   FIFO is never opened (it would block) and a device such as ``/dev/zero`` is never read;
2. checks the CRC-32 of every member of a torch zip checkpoint (:func:`check_zip_members`: one
   sequential read of the file, bounded memory), so overwritten bytes are caught even where
   ``torch.load`` does not look;
3. unpickles with ``torch.load(weights_only=True)``: a file that needs arbitrary pickle code is
   refused, never executed;
4. checks that every floating tensor is finite (:func:`check_finite`).

The same two integrity checks are applied to ``medseg fit`` checkpoints loaded for inference
(:mod:`medseg.inference.checkpoints`).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor, nn

from medseg.errors import ModelError
from medseg.files import check_regular_file, open_regular

__all__ = [
    "REDOWNLOAD",
    "check_finite",
    "check_keys",
    "check_zip_members",
    "few",
    "load_net_weights",
    "load_strict_subset",
    "read_state_dict",
]

REDOWNLOAD = "download the weights file again"
"""The fix named for a corrupt weights file (a ``medseg fit`` checkpoint names re-training)."""

_NESTED_KEYS = ("model", "state_dict")
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def read_state_dict(path: str | os.PathLike[str], *, what: str = "checkpoint") -> dict[str, Tensor]:
    """Read a state dict ``{name: tensor}`` (plain, or under ``"model"`` / ``"state_dict"``).

    Tensors are on the CPU. ``what`` names the file in the not-a-regular-file message
    (``"checkpoint: not a regular file (it is a FIFO/pipe)"``).

    Raises:
        ModelError: not a readable regular file, a zip member failing its CRC, unsafe pickle
            payload, truncated/corrupt file, not a dict of tensors, a NaN/Inf tensor.
    """
    where = str(path)
    if not os.path.exists(path):  # stat only: nothing is opened
        raise ModelError("checkpoint_missing", f"{what} file not found", path=where)
    check_regular_file(path, error=ModelError, what=what)
    with os.fdopen(open_regular(path, error=ModelError), "rb") as handle:
        check_zip_members(handle, path=where, fix=REDOWNLOAD)
        handle.seek(0)
        try:
            payload = torch.load(handle, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ModelError(
                "checkpoint_unsafe",
                f"refused: the file needs arbitrary pickle code ({_pickle_reason(err)}); only "
                "plain state dicts are loaded (torch.load weights_only=True)",
                path=where,
            ) from err
        except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:
            raise ModelError(
                "checkpoint_corrupt",
                f"unreadable checkpoint (truncated or corrupt): {type(err).__name__}: "
                f"{str(err).strip()[:160]}",
                path=where,
            ) from err
    if isinstance(payload, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(payload.get(key), Mapping):
                payload = payload[key]
                break
    if not isinstance(payload, Mapping) or not payload:
        raise ModelError(
            "checkpoint_format",
            f"expected a state dict (name -> tensor), got {type(payload).__name__}",
            path=where,
        )
    bad = [str(k) for k, v in payload.items() if not (isinstance(k, str) and isinstance(v, Tensor))]
    if bad:
        raise ModelError(
            "checkpoint_format",
            f"expected a state dict (name -> tensor); non-tensor entries {few(bad)}",
            path=where,
        )
    check_finite(payload, path=where, fix=REDOWNLOAD)
    return dict(payload)


def check_zip_members(source: str | os.PathLike[str] | BinaryIO, *, path: str, fix: str) -> None:
    """Check the CRC-32 of every member of a zip checkpoint (``torch.save``'s format).

    ``source`` is a path (of a regular file: check it first) or an open binary file. Files that
    are not zips (torch's legacy format, a pickle) pass: ``torch.load`` judges them. The cost is
    one sequential read of the file in 1 MiB blocks (``zipfile.ZipFile.testzip``).

    Raises:
        ModelError ``checkpoint_corrupt``: a member fails its CRC or its header is damaged;
            the message names the member and ``fix``.
    """
    try:
        if not zipfile.is_zipfile(source):
            return
        if not isinstance(source, (str, os.PathLike)):
            source.seek(0)
        with zipfile.ZipFile(source) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, OSError) as err:
        raise ModelError(
            "checkpoint_corrupt",
            f"corrupt checkpoint: the zip structure is damaged ({str(err).strip()[:120]}); {fix}",
            path=path,
        ) from err
    if bad is not None:
        raise ModelError(
            "checkpoint_corrupt",
            f"corrupt checkpoint: member {bad!r} fails its CRC check; {fix}",
            path=path,
        )


def check_finite(state: Mapping[str, object], *, path: str, fix: str) -> None:
    """Refuse a state dict whose floating tensors hold NaN or Inf (corrupt weights).

    CPU tensors are checked with numpy (torch's threaded reduction is slow on busy CPUs: 1.9 s
    against 6 ms for LiteMedSAM's 9.8 M weights on the 2-core dev machine).

    Raises:
        ModelError ``checkpoint_corrupt`` naming the first such tensor and ``fix``.
    """
    for name, value in state.items():
        if isinstance(value, Tensor) and value.is_floating_point() and not _all_finite(value):
            raise ModelError(
                "checkpoint_corrupt",
                f"corrupt weights: tensor {name!r} holds NaN/Inf values; {fix}",
                path=path,
            )


def load_net_weights(net: nn.Module, path: str | os.PathLike[str], *, what: str) -> None:
    """Load a full state dict of ``net`` from ``path``: every key, equal shapes (strict). A
    ``medseg fit`` checkpoint's ``net.*`` entries are accepted too (the task's prefix is dropped).
    ``what`` names the model in errors (``"not a DB-SAM checkpoint for this model: ..."``)."""
    state = read_state_dict(path)
    if any(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    load_strict_subset(net, state, list(net.state_dict()), path, what=what)


def load_strict_subset(
    net: nn.Module, state: Mapping[str, Tensor], keys: list[str], path: str | Path, *, what: str
) -> None:
    """Load ``state`` into the ``keys`` of ``net``: the key sets must be equal and every shape
    must match (``ModelError`` naming a few offenders otherwise); other keys keep their values.
    """
    check_keys(keys, state, path, what=f"{what} checkpoint for this model")
    own = net.state_dict()
    bad = [k for k in keys if tuple(own[k].shape) != tuple(state[k].shape)]
    if bad:
        k = bad[0]
        raise ModelError(
            "checkpoint_shapes",
            f"{len(bad)} shape mismatches, e.g. {k}: file {tuple(state[k].shape)} vs model "
            f"{tuple(own[k].shape)} (wrong preset?)",
            path=str(path),
        )
    result = net.load_state_dict(dict(state), strict=False)
    assert not result.unexpected_keys  # checked above


def check_keys(
    keys: Iterable[str], state: Mapping[str, object], path: str | Path, *, what: str
) -> None:
    """``ModelError`` ``checkpoint_keys`` unless ``state`` holds exactly ``keys``: ``"not a
    {what}: 2 missing keys [...], 1 unexpected keys [...]"``."""
    missing = sorted(set(keys) - set(state))
    unexpected = sorted(set(state) - set(keys))
    if missing or unexpected:
        raise ModelError(
            "checkpoint_keys",
            f"not a {what}: {len(missing)} missing keys {few(missing)}, "
            f"{len(unexpected)} unexpected keys {few(unexpected)}",
            path=str(path),
        )


def few(names: list[str], n: int = 5) -> str:
    """``"[a, b, c, d, e, ...]"``: the first ``n`` names of a list for a one-line message."""
    return "[" + ", ".join(names[:n]) + (", ...]" if len(names) > n else "]")


def _all_finite(t: Tensor) -> bool:
    if t.device.type == "cpu" and t.dtype in _NUMPY_FLOATS:
        return bool(np.isfinite(t.detach().numpy()).all())
    return bool(torch.isfinite(t).all())


def _pickle_reason(err: pickle.UnpicklingError) -> str:
    """The specific line of torch's weights-only error (e.g. "unsupported GLOBAL posix.system")."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    specific = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (specific or lines or ["unpickling failed"])[0].rstrip(".")[:160]
