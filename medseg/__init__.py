"""medseg: medical image segmentation and restoration.

The Python API (:mod:`medseg.api`) is available at the top of the package::

    import medseg
    result = medseg.segment("scan.nii.gz", prompts=[medseg.Box((23, 20, 173, 210), slice=94)])
    result.save("out/")

``import medseg`` is cheap by design: the names below are imported on first use, and heavy
dependencies (torch, SimpleITK, gradio, sam2) only by the submodules that need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS = {
    "segment": "medseg.api.segmenter",
    "Segmenter": "medseg.api.segmenter",
    "Segmentation": "medseg.api.results",
    "restore": "medseg.api.restorer",
    "Restorer": "medseg.api.restorer",
    "Restoration": "medseg.api.results",
    "Box": "medseg.api.prompts",
    "Point": "medseg.api.prompts",
    "Object": "medseg.api.prompts",
    "read_prompts": "medseg.api.prompts",
    "read_objects": "medseg.api.prompts",
    "load_volume": "medseg.io.load",
    "save_volume": "medseg.io.save",
    "Volume": "medseg.io.volume",
    "MedsegError": "medseg.errors",
    "InputError": "medseg.errors",
    "OutputError": "medseg.errors",
    "ModelError": "medseg.errors",
}

__all__ = [  # the names of _EXPORTS, spelled out for linters and IDEs
    "Box",
    "InputError",
    "MedsegError",
    "ModelError",
    "Object",
    "OutputError",
    "Point",
    "Restoration",
    "Restorer",
    "Segmentation",
    "Segmenter",
    "Volume",
    "__version__",
    "load_volume",
    "read_objects",
    "read_prompts",
    "restore",
    "save_volume",
    "segment",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from medseg.api.prompts import Box, Object, Point, read_objects, read_prompts
    from medseg.api.restorer import Restorer, restore
    from medseg.api.results import Restoration, Segmentation
    from medseg.api.segmenter import Segmenter, segment
    from medseg.errors import InputError, MedsegError, ModelError, OutputError
    from medseg.io.load import load_volume
    from medseg.io.save import save_volume
    from medseg.io.volume import Volume


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
