"""Load SAM's weights into DB-SAM (local file only, ``weights_only=True``, strict keys).

The official ``sam_vit_b_01ec64.pth`` holds exactly the SAM parts (``image_encoder.*``,
``prompt_encoder.*``, ``mask_decoder.*``). Every one of DB-SAM's SAM keys must be in the file
with the same shape and the file may hold nothing else; the adapter keeps its own init. Files are
read by :func:`medseg.models.weights.read_state_dict` (regular files only, integrity checked).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from medseg.models.device import resolve_device
from medseg.models.weights import load_net_weights, load_strict_subset, read_state_dict

__all__ = ["load_db_sam", "load_sam_weights"]


def load_sam_weights(net: nn.Module, path: str | Path) -> None:
    """Copy an official SAM checkpoint into ``net``'s SAM parts (strict; see module doc).

    Raises:
        ModelError: unreadable file, missing/unexpected keys or shape mismatches.
    """
    sam_keys = [k for k in net.state_dict() if not k.startswith("adapter.")]
    state = read_state_dict(path, what="sam_checkpoint")
    load_strict_subset(net, state, sam_keys, path, what="SAM")


def load_db_sam(
    checkpoint: str | Path, *, preset: str = "db_sam_vit_b", device: str = "cpu", **overrides
) -> nn.Module:
    """Build a DB-SAM preset and load a full DB-SAM state dict (every key, strict), then
    ``.eval()``. A ``medseg fit`` checkpoint's ``net.*`` entries are accepted too."""
    from . import model

    net = getattr(model, preset)(**overrides)
    load_net_weights(net, checkpoint, what="DB-SAM")
    return net.to(resolve_device(device)).eval()
