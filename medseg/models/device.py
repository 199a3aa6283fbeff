"""``resolve_device``: the one place a device string becomes a ``torch.device`` (DESIGN rule 10:
``device="auto"`` everywhere).

It lives in :mod:`medseg.models` because the model loaders (``load_litemedsam(device=...)``)
need it and models sit below inference; :mod:`medseg.inference.device` re-exports it beside the
precision choice.
"""

from __future__ import annotations

import torch

from medseg.errors import ModelError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; ``"cpu"``, ``"cuda"``, ``"cuda:N"``.

    Raises:
        ModelError: CUDA asked for but not available, a CUDA index out of range, or an unknown
            device string (exit 4).
    """
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
            raise ModelError(
                "device", f"no CUDA device {resolved.index} ({torch.cuda.device_count()} present)"
            )
    elif resolved.type != "cpu":
        raise ModelError("device", f"unsupported device {device!r}; use auto, cpu or cuda[:N]")
    return resolved
