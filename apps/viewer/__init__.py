"""The medseg Gradio viewer: ``build_app(...)`` -> ``gr.Blocks``, served by ``medseg view``.

Modules: :mod:`~apps.viewer.state` (per-session state), :mod:`~apps.viewer.opening` (files ->
volumes), :mod:`~apps.viewer.models` (LiteMedSAM, segmenters, restorers),
:mod:`~apps.viewer.render` (session -> pictures and tables), :mod:`~apps.viewer.grids`
(before/after geometry), :mod:`~apps.viewer.callbacks` (user actions), :mod:`~apps.viewer.app`
(layout and wiring), :mod:`~apps.viewer.launch` (safe serving).

Importing this package is light; Gradio is imported with :mod:`~apps.viewer.app`, so that
:func:`~apps.viewer.launch.private_temp_dir` can set ``GRADIO_TEMP_DIR`` first.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "build_app": "apps.viewer.app",
    "launch": "apps.viewer.launch",
    "parse_auth": "apps.viewer.launch",
    "private_temp_dir": "apps.viewer.launch",
    "ModelHub": "apps.viewer.models",
    "Restorer": "apps.viewer.models",
    "hub_from_checkpoints": "apps.viewer.models",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'apps.viewer' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
