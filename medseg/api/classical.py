"""The restoration default without a checkpoint: option checks and the classical restorer.

:func:`classical_restorer` is what :class:`medseg.api.Restorer` builds when no checkpoint is
given. It refuses, before any file is read, the options that only a trained model has
(``--scale`` other than 1, ``--regions``, ``--overlap``, ``--roi``, ``--batch-size``): the
classical methods denoise on exactly the input grid (see
:mod:`medseg.inference.classical`). DIPY itself is imported only when a volume is restored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medseg.errors import InputError

__all__ = ["DEFAULT_METHOD", "METHODS", "classical_restorer"]

DEFAULT_METHOD = "nlmeans"
#: the classical methods (mirrors ``medseg.inference.classical.METHODS``, which loads numpy)
METHODS = ("nlmeans", "mppca")


def classical_restorer(
    method: str | None,
    *,
    noise: str = "auto",
    sigma: float | None = None,
    scale: int | None = None,
    regions: str = "auto",
    checkpoint_options: Mapping[str, bool] | None = None,
) -> Any:
    """A :class:`medseg.inference.classical.ClassicalRestorer` for ``method`` (None: the
    default, ``nlmeans``), after refusing what needs a checkpoint.

    ``checkpoint_options``: option name -> whether the caller set it (a sliding-window option
    that a classical method has no use for)."""
    method = DEFAULT_METHOD if method is None else method
    if method not in METHODS:
        raise InputError(
            "bad_argument",
            f"--method (method=) must be one of {', '.join(METHODS)}, got {method!r} "
            "(trained models: --checkpoint)",
        )
    if scale not in (None, 1):
        raise InputError(
            "bad_argument",
            f"--scale {scale} needs a super-resolution --checkpoint: the classical methods "
            "denoise on the input grid",
        )
    given = [f"--{name.replace('_', '-')}" for name, on in (checkpoint_options or {}).items() if on]
    if regions != "auto":
        given.insert(0, "--regions")
    if given:
        raise InputError(
            "bad_argument",
            f"{', '.join(given)} only apply with --checkpoint (a trained model); {method} "
            "has no windows or regions",
        )
    from medseg.inference.classical import ClassicalRestorer

    return ClassicalRestorer(method, noise=noise, sigma=sigma)
