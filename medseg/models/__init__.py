"""Model table: every registered network by name, built lazily.

``MODELS[name]`` is a :class:`ModelEntry` ``(preset, tiny, task)``: two ``"module:callable"``
references (the published preset and a CPU-sized random-init preset) and the task family that
trains it. Importing this module imports neither torch nor any model code; :func:`build_model`
imports the preset's module on first use.

>>> from medseg.models import MODELS, build_model
>>> MODELS["litemedsam"].task
'promptable'
>>> net = build_model("litemedsam", tiny=True)  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MODELS", "ModelEntry", "build_model"]


class ModelEntry(NamedTuple):
    """One row of :data:`MODELS`: where the presets live and which task trains the model."""

    preset: str
    """``"module:callable"`` building the published architecture (random init)."""
    tiny: str
    """``"module:callable"`` building a small random-init variant for CPU tests."""
    task: str
    """Task family: ``"segmentation"``, ``"promptable"``, ``"restoration"``, ``"adversarial"``."""


MODELS: MappingProxyType[str, ModelEntry] = MappingProxyType(
    {
        "db_sam": ModelEntry(
            preset="medseg.models.db_sam.model:db_sam_vit_b",
            tiny="medseg.models.db_sam.model:tiny",
            task="promptable",
        ),
        "disgan": ModelEntry(
            preset="medseg.models.disgan.model:disgan",
            tiny="medseg.models.disgan.model:tiny",
            task="adversarial",
        ),
        "her_seg": ModelEntry(
            preset="medseg.models.her_seg.model:her_seg",
            tiny="medseg.models.her_seg.model:tiny",
            task="segmentation",
        ),
        "litemedsam": ModelEntry(
            preset="medseg.models.litemedsam.model:litemedsam",
            tiny="medseg.models.litemedsam.model:tiny",
            task="promptable",
        ),
        "rat": ModelEntry(
            preset="medseg.models.rat.model:rat",
            tiny="medseg.models.rat.model:tiny",
            task="restoration",
        ),
        "sam2_sgp": ModelEntry(
            preset="medseg.models.sam2_sgp.model:sam2_sgp_hiera_s",
            tiny="medseg.models.sam2_sgp.model:tiny",
            task="promptable",
        ),
        "unet": ModelEntry(
            preset="medseg.models.unet.model:unet",
            tiny="medseg.models.unet.model:tiny",
            task="segmentation",
        ),
        "wau": ModelEntry(
            preset="medseg.models.wau.model:wau_base",
            tiny="medseg.models.wau.model:tiny",
            task="segmentation",
        ),
    }
)
"""Read-only table ``name -> ModelEntry``."""


def build_model(name: str, *, tiny: bool = False, **overrides: Any) -> nn.Module:
    """Build a registered model with random weights.

    Args:
        name: a key of :data:`MODELS`.
        tiny: build the ``tiny`` preset instead of the published one.
        **overrides: keyword arguments passed to the preset (its signature is the config).

    Raises:
        KeyError: ``name`` is not registered (the message lists the registered names).
    """
    try:
        entry = MODELS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}") from None
    module_name, _, attr = (entry.tiny if tiny else entry.preset).partition(":")
    factory = getattr(importlib.import_module(module_name), attr)
    return factory(**overrides)
