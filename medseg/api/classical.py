"""Restoration without a checkpoint: option checks and the restorer of each method.

:func:`classical_restorer` is what :class:`medseg.api.Restorer` builds when no checkpoint is
given. It refuses, before any file is read, the options that only a trained model has
(``--regions``, ``--overlap``, ``--roi``, ``--batch-size``) and those of another method. The
classical denoisers (``nlmeans``, ``mppca``: :mod:`medseg.inference.classical`) keep the input
grid, so ``--scale`` other than 1 is refused for them; ``self-sr``
(:mod:`medseg.inference.self_sr`) trains a tiny RAT on the input itself and super-resolves its
thick-slice axis (``--scale``, ``--slice-thickness``, ``--steps``). DIPY and torch are imported
only when a volume is restored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from medseg.errors import InputError

__all__ = ["DEFAULT_METHOD", "METHODS", "classical_restorer"]

DEFAULT_METHOD = "nlmeans"
#: the methods without a checkpoint (``medseg.inference.classical.METHODS`` + ``self-sr``)
METHODS = ("nlmeans", "mppca", "self-sr")


def classical_restorer(
    method: str | None,
    *,
    noise: str = "auto",
    sigma: float | None = None,
    scale: int | None = None,
    regions: str = "auto",
    checkpoint_options: Mapping[str, bool] | None = None,
    thickness: float | None = None,
    steps: int | None = None,
    device: str = "auto",
    progress: Callable[[int, int, str], None] | None = None,
) -> Any:
    """A :class:`medseg.inference.classical.ClassicalRestorer` for ``method`` (None: the
    default, ``nlmeans``), or a :class:`medseg.inference.self_sr.SelfSR` for ``"self-sr"``,
    after refusing what needs a checkpoint or belongs to another method.

    ``checkpoint_options``: option name -> whether the caller set it (a sliding-window option
    that a classical method has no use for); ``thickness`` (mm), ``steps``, ``device`` and
    ``progress`` (called with ``(done, total, stage)``) are self-sr's."""
    method = DEFAULT_METHOD if method is None else method
    if method not in METHODS:
        raise InputError(
            "bad_argument",
            f"--method (method=) must be one of {', '.join(METHODS)}, got {method!r} "
            "(trained models: --checkpoint)",
        )
    given = [f"--{name.replace('_', '-')}" for name, on in (checkpoint_options or {}).items() if on]
    if regions != "auto":
        given.insert(0, "--regions")
    if method == "self-sr":
        return _self_sr(noise, sigma, scale, thickness, steps, device, progress, given)
    if thickness is not None or steps is not None:
        raise InputError(
            "bad_argument",
            f"--slice-thickness and --steps are options of --method self-sr, not {method}",
        )
    if scale not in (None, 1):
        raise InputError(
            "bad_argument",
            f"--scale {scale} needs --method self-sr (through-plane) or a super-resolution "
            f"--checkpoint: {method} denoises on the input grid",
        )
    if given:
        raise InputError(
            "bad_argument",
            f"{', '.join(given)} only apply with --checkpoint (a trained model); {method} "
            "has no windows or regions",
        )
    from medseg.inference.classical import ClassicalRestorer

    return ClassicalRestorer(method, noise=noise, sigma=sigma)


def _self_sr(
    noise: str,
    sigma: float | None,
    scale: int | None,
    thickness: float | None,
    steps: int | None,
    device: str,
    progress: Callable[[int, int, str], None] | None,
    given: list[str],
) -> Any:
    if noise != "auto" or sigma is not None:
        raise InputError("bad_argument", "--noise and --sigma are options of nlmeans, not self-sr")
    if given:
        raise InputError(
            "bad_argument",
            f"{', '.join(given)} only apply with --checkpoint (a trained model); self-sr "
            "restores whole slices",
        )
    from medseg.inference.device import resolve_device
    from medseg.inference.self_sr import SelfSR

    extra = {} if steps is None else {"steps": steps}
    return SelfSR(scale=scale, thickness=thickness, device=str(resolve_device(device)),
                  progress=progress, **extra)  # fmt: skip
