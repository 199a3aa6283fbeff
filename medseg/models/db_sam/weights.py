"""Load SAM's weights into DB-SAM (local file only, ``weights_only=True``, strict keys).

The official ``sam_vit_b_01ec64.pth`` holds exactly the SAM parts (``image_encoder.*``,
``prompt_encoder.*``, ``mask_decoder.*``). Every one of DB-SAM's SAM keys must be in the file
with the same shape and the file may hold nothing else; the adapter keeps its own init.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from medseg.errors import ModelError
from medseg.models.litemedsam.weights import read_state_dict

__all__ = ["load_db_sam", "load_sam_weights", "load_strict_subset"]


def load_sam_weights(net: nn.Module, path: str | Path) -> None:
    """Copy an official SAM checkpoint into ``net``'s SAM parts (strict; see module doc).

    Raises:
        ModelError: unreadable file, missing/unexpected keys or shape mismatches.
    """
    sam_keys = [k for k in net.state_dict() if not k.startswith("adapter.")]
    load_strict_subset(net, read_state_dict(path), sam_keys, path, what="SAM")


def load_db_sam(
    checkpoint: str | Path, *, preset: str = "db_sam_vit_b", device: str = "cpu", **overrides
) -> nn.Module:
    """Build a DB-SAM preset and load a full DB-SAM state dict (every key, strict), then
    ``.eval()``. A ``medseg fit`` checkpoint's ``net.*`` entries are accepted too."""
    from . import model

    net = getattr(model, preset)(**overrides)
    state = read_state_dict(checkpoint)
    if any(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    load_strict_subset(net, state, list(net.state_dict()), checkpoint, what="DB-SAM")
    return net.to(device).eval()


def load_strict_subset(
    net: nn.Module, state: dict, keys: list[str], path: str | Path, *, what: str
) -> None:
    """Load ``state`` into the ``keys`` of ``net``: the key sets must be equal and every shape
    must match (``ModelError`` naming a few offenders otherwise)."""
    missing = sorted(set(keys) - set(state))
    unexpected = sorted(set(state) - set(keys))
    if missing or unexpected:
        raise ModelError(
            "checkpoint_keys",
            f"not a {what} checkpoint for this model: {len(missing)} missing keys "
            f"{_few(missing)}, {len(unexpected)} unexpected keys {_few(unexpected)}",
            path=str(path),
        )
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
    result = net.load_state_dict(state, strict=False)
    assert not result.unexpected_keys  # checked above


def _few(names: list[str], n: int = 5) -> str:
    return "[" + ", ".join(names[:n]) + (", ...]" if len(names) > n else "]")
