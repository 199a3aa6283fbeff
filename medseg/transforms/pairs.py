"""Seeded (degraded, clean) pairs from a chain of :mod:`medseg.transforms.degrade` steps.

:class:`Degradation` (one validated step) and :func:`parse_degradations` (a chain from dicts,
strings or lists); :class:`PairedDegradation` (``clean -> (degraded, target)``, seeded per key)
and its MONAI dictionary form :class:`PairedDegradationd`.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable

from medseg.transforms.degrade import (
    DOWNSAMPLE_MODES,
    check_factor,
    check_image,
    downsample,
    gaussian_blur,
    gaussian_noise,
    kspace_truncate,
    low_dose_ct,
    rician_noise,
    robust_range,
    spatial_axis,
    thick_slices,
)

RESOLUTION_KINDS = ("downsample", "thick_slices")
KINDS = ("gaussian_noise", "rician_noise", "low_dose_ct", "blur", *RESOLUTION_KINDS, "kspace")


@dataclass(frozen=True)
class Degradation:
    """One degradation step.

    ``kind`` picks the function; the parameters it reads: ``sigma`` (noise std for the noise
    kinds; Gaussian sigma in voxels for ``"blur"``), ``dose_fraction`` (``"low_dose_ct"``),
    ``factor`` (``"downsample"`` 2 or 4, ``"thick_slices"``, ``"kspace"``), ``mode``
    (``"downsample"``), ``axis`` (spatial axis for ``"thick_slices"``). With ``relative=True`` a
    noise sigma is a fraction of the clean image's robust range (99.5th - 0.5th percentile), so
    one config serves HU and z-scored MR; it never affects ``"blur"``.
    """

    kind: str
    sigma: float = 0.0
    dose_fraction: float = 0.25
    factor: int = 2
    mode: str = "area"
    axis: int = -1
    relative: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown degradation kind {self.kind!r}; valid: {', '.join(KINDS)}")
        if not (isinstance(self.sigma, numbers.Real) and 0 <= self.sigma < math.inf):
            raise ValueError(f"{self.kind}: sigma must be a finite number >= 0, got {self.sigma!r}")
        if not 0.0 < self.dose_fraction <= 1.0:
            raise ValueError(
                f"{self.kind}: dose_fraction must be in (0, 1], got {self.dose_fraction}"
            )
        check_factor(self.factor, self.kind)
        if self.kind == "downsample" and self.factor not in (2, 4):
            raise ValueError(f"downsample: factor must be 2 or 4, got {self.factor}")
        if self.mode not in DOWNSAMPLE_MODES:
            raise ValueError(
                f"{self.kind}: unknown mode {self.mode!r}; valid: {', '.join(DOWNSAMPLE_MODES)}"
            )
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise ValueError(f"{self.kind}: axis must be an int, got {self.axis!r}")

    @property
    def scale(self) -> int:
        """Isotropic upsampling that maps the degraded grid back to the clean one."""
        return self.factor if self.kind == "downsample" else 1

    @property
    def shrinks_axis(self) -> int | None:
        """Spatial axis that ``"thick_slices"`` shrinks by ``factor`` (else ``None``).

        Restoring it needs upsampling along that axis only; the provided restoration models
        upsample isotropically (:attr:`scale`), so they do not undo thick slices by themselves.
        """
        return self.axis if self.kind == "thick_slices" else None

    def apply(
        self, x: torch.Tensor, gen: torch.Generator, *, ref_range: float | None = None
    ) -> torch.Tensor:
        """Degrade ``x`` ``(C, *S)``; ``ref_range`` is the range a relative sigma refers to
        (default: :func:`robust_range` of ``x``; a constant image counts as range 1)."""
        sigma = self.sigma
        if self.relative and self.kind in ("gaussian_noise", "rician_noise"):
            rng = robust_range(x) if ref_range is None else ref_range
            sigma = sigma * (rng if rng > 0 else 1.0)
        if self.kind == "gaussian_noise":
            return gaussian_noise(x, sigma, gen)
        if self.kind == "rician_noise":
            return rician_noise(x, sigma, gen)
        if self.kind == "low_dose_ct":
            return low_dose_ct(x, self.dose_fraction, gen)
        if self.kind == "blur":
            return gaussian_blur(x, sigma)
        if self.kind == "downsample":
            return downsample(x, self.factor, mode=self.mode)
        if self.kind == "thick_slices":
            return thick_slices(x, self.factor, axis=self.axis)
        return kspace_truncate(x, self.factor)


Spec = Degradation | Mapping[str, Any] | str | Sequence[Any]
_PARAMS = tuple(f.name for f in fields(Degradation))
_CASTS = {
    "sigma": float,
    "dose_fraction": float,
    "factor": int,
    "axis": int,
    "mode": str,
    "relative": lambda v: {"true": True, "1": True, "false": False, "0": False}[v.lower()],
}


def _from_mapping(spec: Mapping[str, Any]) -> Degradation:
    unknown = sorted(set(spec) - set(_PARAMS))
    if unknown or "kind" not in spec:
        raise ValueError(
            f"bad degradation {dict(spec)!r}: needs 'kind'"
            + (f", unknown parameters {unknown}" if unknown else "")
            + f"; parameters: {', '.join(_PARAMS)}"
        )
    return Degradation(**spec)


def _from_string(text: str) -> Degradation:
    kind, _, rest = text.strip().partition(":")
    params: dict[str, Any] = {"kind": kind.strip()}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        name, eq, value = item.partition("=")
        name = name.strip()
        if not eq or name not in _PARAMS or name == "kind":
            raise ValueError(
                f"bad parameter {item!r} in {text!r}; expected name=value with name "
                f"in: {', '.join(n for n in _PARAMS if n != 'kind')}"
            )
        try:
            params[name] = _CASTS[name](value.strip())
        except (KeyError, ValueError) as err:
            raise ValueError(f"bad value for {name} in {text!r}: {err}") from None
    return _from_mapping(params)


def parse_degradations(spec: Spec) -> tuple[Degradation, ...]:
    """Normalise a degradation spec into a tuple of steps, applied in order.

    Accepts a :class:`Degradation`, a dict (``{"kind": "gaussian_noise", "sigma": 0.05}``), a
    string (``"downsample:factor=2,mode=nearest"``; several steps joined by ``";"``), or a list
    of any of these. At most one resolution-changing step (downsample or thick_slices) is allowed.
    """
    if isinstance(spec, Degradation):
        steps: tuple[Degradation, ...] = (spec,)
    elif isinstance(spec, Mapping):
        steps = (_from_mapping(spec),)
    elif isinstance(spec, str):
        steps = tuple(_from_string(part) for part in spec.split(";") if part.strip())
    elif isinstance(spec, Sequence):
        steps = tuple(step for item in spec for step in parse_degradations(item))
    else:
        raise ValueError(f"cannot parse degradations from {type(spec).__name__}: {spec!r}")
    if not steps:
        raise ValueError("no degradation steps given")
    resolution = [s.kind for s in steps if s.kind in RESOLUTION_KINDS]
    if len(resolution) > 1:
        raise ValueError(
            f"at most one resolution-changing step ({', '.join(RESOLUTION_KINDS)}) is allowed, "
            f"got {resolution}"
        )
    return steps


# --------------------------------------------------------------------------- pairs


def _key_seed(seed: int, key: Any) -> int:
    """Stable 63-bit seed from ``(seed, key)``: the same in every process and Python version."""
    if isinstance(key, torch.Tensor) and key.numel() == 1:
        key = key.item()
    is_int = isinstance(key, (int, np.integer)) and not isinstance(key, bool)
    token = f"int:{int(key)}" if is_int else f"str:{key}"
    digest = hashlib.sha256(f"{int(seed)}|{token}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class PairedDegradation:
    """``clean (C, *S) -> (degraded, target)`` for restoration training.

    ``target`` is the clean image with its trailing edge cropped to a multiple of the resolution
    step's factor, so ``degraded`` upsampled by :attr:`scale` has exactly ``target``'s spatial
    size (for thick slices: ``target``'s size along :attr:`shrinks_axis` is ``factor`` times
    ``degraded``'s). Relative noise sigmas refer to the robust range of the (cropped) clean image.

    Seeding: with ``key`` the generator is seeded from a SHA-256 of ``(seed, key)``, so a key
    always gives the same pair, in any order and any worker; with ``key=None`` draws come from an
    internal generator seeded with ``seed`` (a reproducible sequence).
    """

    def __init__(self, degradations: Spec, *, seed: int = 0) -> None:
        self.degradations = parse_degradations(degradations)
        self.seed = int(seed)
        self._gen = torch.Generator().manual_seed(self.seed)
        self._resize = next((d for d in self.degradations if d.kind in RESOLUTION_KINDS), None)

    @property
    def scale(self) -> int:
        """Isotropic upsampling a restoration model needs (``factor`` of a downsample, else 1)."""
        return self._resize.scale if self._resize is not None else 1

    @property
    def shrinks_axis(self) -> int | None:
        """Spatial axis shrunk by a thick-slice step, else ``None``."""
        return self._resize.shrinks_axis if self._resize is not None else None

    def crop(self, clean: torch.Tensor) -> torch.Tensor:
        """Crop the trailing edge of the axes the resolution step shrinks to a multiple of its
        factor; ``(C, *S) -> (C, *S')``, a new float32 tensor."""
        x = check_image(clean, "clean")
        step = self._resize
        if step is not None:
            dims = range(1, x.ndim) if step.kind == "downsample" else [spatial_axis(x, step.axis)]
            index = [slice(None)] * x.ndim
            for dim in dims:
                keep = x.shape[dim] - x.shape[dim] % step.factor
                if keep == 0:
                    raise ValueError(
                        f"spatial shape {tuple(x.shape[1:])} is smaller than the {step.kind} "
                        f"factor {step.factor}"
                    )
                index[dim] = slice(0, keep)
            x = x[tuple(index)]
        return x.clone()

    def apply(self, clean: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The pair for ``clean`` drawing from an explicit generator."""
        target = self.crop(clean)
        ref = robust_range(target)
        degraded = target
        for step in self.degradations:
            degraded = step.apply(degraded, gen, ref_range=ref)
        return degraded, target

    def __call__(
        self, clean: torch.Tensor, key: str | int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gen = self._gen if key is None else torch.Generator().manual_seed(_key_seed(self.seed, key))
        return self.apply(clean, gen)


class PairedDegradationd(MapTransform, Randomizable):
    """MONAI dictionary transform: ``d[keys[0]] (C, *S)`` -> ``d[input_key]``, ``d[target_key]``.

    Both outputs are plain float32 tensors (MetaTensor metadata is dropped; the target may be
    cropped, see :class:`PairedDegradation`). If ``key_field`` is set and present in the dict,
    the pair is seeded by ``(seed, d[key_field])`` (the same pair per case, whatever the
    transform's state); otherwise a seed is drawn from ``self.R`` (MONAI ``Randomizable``), so
    ``set_random_state`` / ``set_determinism`` / dataset worker seeding reproduce it.
    """

    def __init__(
        self,
        keys: Any = "image",
        degradations: Spec | None = None,
        *,
        input_key: str = "input",
        target_key: str = "target",
        key_field: str | None = None,
        seed: int = 0,
    ) -> None:
        MapTransform.__init__(self, keys)
        if len(self.keys) != 1:
            raise ValueError(f"PairedDegradationd reads exactly one key, got {list(self.keys)}")
        if degradations is None:
            raise ValueError("PairedDegradationd needs degradations")
        self.pairs = PairedDegradation(degradations, seed=seed)
        self.input_key = input_key
        self.target_key = target_key
        self.key_field = key_field
        self._draw = 0
        self.set_random_state(seed=seed)

    def randomize(self, data: Any = None) -> None:
        self._draw = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.keys[0]]
        if isinstance(image, torch.Tensor):
            image = image.as_subclass(torch.Tensor)
        if self.key_field is not None and self.key_field in d:
            seed = _key_seed(self.pairs.seed, d[self.key_field])
        else:
            self.randomize()
            seed = self._draw
        d[self.input_key], d[self.target_key] = self.pairs.apply(
            image, torch.Generator().manual_seed(seed)
        )
        return d
