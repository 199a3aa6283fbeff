"""Paired (degraded, clean) images for restoration training, made on the fly.

Every function takes one channel-first float image ``x`` of shape ``(C, *S)`` with ``S`` either
``(H, W)`` or ``(D, H, W)``, never changes it in place and returns a new ``float32`` tensor.
Random functions draw only from the ``torch.Generator`` they are given (noise is drawn on the
generator's device, then moved to ``x``'s, so a seed gives the same pair on CPU and GPU).
Axis arguments (``axis``, ``axes``) index the spatial axes ``S``: ``0`` is the first spatial axis,
negative values count from the last; the channel axis can never be chosen.

Top-down: the degradation functions; :class:`Degradation` (one validated step) and
:func:`parse_degradations` (a chain from dicts, strings or lists); :class:`PairedDegradation`
(``clean -> (degraded, target)``, seeded per key) and its MONAI form :class:`PairedDegradationd`.
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
import torch.nn.functional as F
from monai.transforms import MapTransform, Randomizable

# Linear attenuation of water, 1/mm, at an effective beam energy of about 70 keV.
MU_WATER_PER_MM = 0.0192
# Low-dose CT model constants (see low_dose_ct): noise std in water of the full-dose scan at
# 1e5 photons per ray, the effective path length of the signal-dependent term, the smoothing of
# the attenuation map that stands in for the ray path, and the noise correlation length.
_CT_REF_STD_HU = 10.0
_CT_REF_PHOTONS = 1e5
_CT_PATH_MM = 50.0
_CT_LOCAL_SIGMA = 4.0
_CT_NOISE_SIGMA = 0.8

DOWNSAMPLE_MODES = ("area", "nearest", "bilinear", "trilinear")


def _check_image(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Validate a ``(C, *S)`` image (2 or 3 spatial dims) and return it as float32."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must have shape (C, H, W) or (C, D, H, W), got {tuple(x.shape)}")
    if x.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}")
    return x.to(torch.float32)


def _check_factor(factor: Any, what: str) -> int:
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"{what}: factor must be a positive int, got {factor!r}")
    return int(factor)


def _spatial_axis(x: torch.Tensor, axis: int) -> int:
    """Map a spatial axis index (negative allowed) to the tensor axis of ``x`` ``(C, *S)``."""
    n = x.ndim - 1
    if not -n <= axis < n:
        raise ValueError(f"spatial axis {axis} out of range for {n} spatial dims {tuple(x.shape)}")
    return 1 + axis % n


def _randn(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on ``gen``'s device."""
    return torch.randn(x.shape, generator=gen, device=gen.device).to(x.device)


def robust_range(x: torch.Tensor) -> float:
    """99.5th minus 0.5th percentile of all values of ``x`` (subsampled above 2**24 values)."""
    flat = x.detach().reshape(-1).to(torch.float32)
    limit = 2**24  # torch.quantile refuses larger inputs
    if flat.numel() > limit:
        flat = flat[:: math.ceil(flat.numel() / limit)]
    lo, hi = torch.quantile(flat, torch.tensor([0.005, 0.995], device=flat.device))
    return float(hi - lo)


# --------------------------------------------------------------------------- noise


def gaussian_noise(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """Additive white Gaussian noise: ``x + sigma * N(0, 1)``; ``(C, *S) -> (C, *S)``."""
    x = _check_image(x)
    return x + sigma * _randn(x, gen)


def rician_noise(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """MR magnitude noise: ``|(x + sigma * n1) + i * sigma * n2|``; ``(C, *S) -> (C, *S)``.

    The output is never negative. The model assumes a magnitude image (``x >= 0``); on z-scored
    data the negative values are folded up. On ``x = 0`` the output is Rayleigh distributed with
    mean ``sigma * sqrt(pi / 2)``.
    """
    x = _check_image(x)
    real = x + sigma * _randn(x, gen)
    imag = sigma * _randn(x, gen)
    return torch.sqrt(real * real + imag * imag)


def low_dose_ct(
    x_hu: torch.Tensor, dose_fraction: float, gen: torch.Generator, *, photons: float = 1e5
) -> torch.Tensor:
    """Reduced-dose CT, approximated in the image domain (not a sinogram simulation); HU in and
    out, ``(C, *S) -> (C, *S)``. The model, step by step:

    1. attenuation ``mu = MU_WATER_PER_MM * (1 + HU / 1000)``, ``MU_WATER_PER_MM = 0.0192``
       (water near 70 keV), clipped at 0 and smoothed (sigma 4 voxels): a crude local stand-in
       for the attenuation along the rays through a voxel;
    2. a log-transformed ray with ``N0`` photons has variance ``~ exp(mu L) / N0`` (Poisson), so
       a scan at ``dose_fraction`` has noise variance ``~ exp(mu L) / (photons * dose_fraction)``;
       the short effective path ``L = 50 mm`` keeps the density dependence mild;
    3. the input is the full-dose scan and already holds variance ``v_full = (10 HU)^2 * 1e5 /
       photons`` in water, so only the missing part is added: ``v_add = v_full * (1/dose_fraction
       - 1) * exp((mu - mu_water) L)``: the added std grows as ``sqrt(1/dose_fraction - 1)``
       (``~ 1/sqrt(dose_fraction)`` at low dose), and ``dose_fraction = 1`` adds nothing;
    4. reconstructed CT noise is not white: the white noise is blurred (sigma 0.8 voxels) and
       rescaled to unit variance, so neighbours correlate.

    The noise is zero-mean (mean HU kept); values are not clipped.
    """
    x = _check_image(x_hu, "x_hu")
    if not 0.0 < dose_fraction <= 1.0:
        raise ValueError(f"dose_fraction must be in (0, 1], got {dose_fraction}")
    if photons <= 0:
        raise ValueError(f"photons must be > 0, got {photons}")
    mu = (MU_WATER_PER_MM * (1.0 + x / 1000.0)).clamp_min(0.0)
    mu_local = gaussian_blur(mu, _CT_LOCAL_SIGMA)
    var_full = _CT_REF_STD_HU**2 * _CT_REF_PHOTONS / photons
    var_add = (
        var_full
        * (1.0 / dose_fraction - 1.0)
        * torch.exp((mu_local - MU_WATER_PER_MM) * _CT_PATH_MM)
    )
    white = _randn(x, gen)
    gain = math.prod(float(_kernel1d(_CT_NOISE_SIGMA, n).square().sum()) for n in x.shape[1:])
    correlated = gaussian_blur(white, _CT_NOISE_SIGMA) / math.sqrt(gain)
    return x + torch.sqrt(var_add) * correlated


# --------------------------------------------------------------------------- resolution


def _kernel1d(sigma: float, length: int) -> torch.Tensor:
    """Normalised Gaussian taps, radius ``ceil(4 sigma)`` capped at ``length - 1`` (reflect pad)."""
    radius = min(math.ceil(4.0 * sigma), length - 1)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Isotropic Gaussian blur over the spatial axes; ``(C, *S) -> (C, *S)``.

    ``sigma`` is in voxels; ``sigma = 0`` returns a copy. Separable 1-D convolutions with reflect
    padding (which keeps the mean of smooth images at the borders).
    """
    x = _check_image(x)
    if sigma < 0:
        raise ValueError(f"blur sigma must be >= 0, got {sigma}")
    out = x.clone()
    if sigma == 0:
        return out
    for axis in range(1, x.ndim):
        k = _kernel1d(sigma, x.shape[axis]).to(x.device)
        radius = (k.numel() - 1) // 2
        if radius == 0:
            continue
        moved = out.movedim(axis, -1)
        shape = moved.shape
        rows = F.pad(moved.reshape(-1, 1, shape[-1]), (radius, radius), mode="reflect")
        out = F.conv1d(rows, k.view(1, 1, -1)).reshape(shape).movedim(-1, axis)
    return out.contiguous()


def _check_divisible(x: torch.Tensor, factor: int, axes: Sequence[int]) -> None:
    bad = [a - 1 for a in axes if x.shape[a] % factor]
    if bad:
        raise ValueError(
            f"spatial shape {tuple(x.shape[1:])} is not divisible by factor {factor} "
            f"along spatial axes {bad}; crop or pad it to a multiple of {factor} first"
        )


def downsample(x: torch.Tensor, factor: int, *, mode: str = "area") -> torch.Tensor:
    """Isotropic resolution loss: ``(C, *S) -> (C, *(s // factor for s in S))``.

    Modes: ``"area"`` averages each ``factor**d`` block (average pooling, the anti-aliased
    default); ``"nearest"`` keeps every ``factor``-th voxel (plain decimation, as in DISGAN's
    released code); ``"bilinear"`` / ``"trilinear"`` are synonyms for linear interpolation in the
    image's own dimensionality (``F.interpolate``; anti-aliased in 2-D only, PyTorch has no
    anti-aliased trilinear). Every spatial size must be divisible by ``factor``.
    """
    x = _check_image(x)
    factor = _check_factor(factor, "downsample")
    if mode not in DOWNSAMPLE_MODES:
        raise ValueError(f"unknown downsample mode {mode!r}; valid: {', '.join(DOWNSAMPLE_MODES)}")
    _check_divisible(x, factor, range(1, x.ndim))
    ndim = x.ndim - 1
    if mode == "area":
        pool = F.avg_pool2d if ndim == 2 else F.avg_pool3d
        return pool(x.unsqueeze(0), factor).squeeze(0)
    if mode == "nearest":
        return x[(slice(None),) + (slice(None, None, factor),) * ndim].clone()
    size = [s // factor for s in x.shape[1:]]
    linear = "bilinear" if ndim == 2 else "trilinear"
    out = F.interpolate(
        x.unsqueeze(0), size=size, mode=linear, align_corners=False, antialias=ndim == 2
    )
    return out.squeeze(0)


def thick_slices(x: torch.Tensor, factor: int, *, axis: int = -1) -> torch.Tensor:
    """Thick-slice acquisition: average groups of ``factor`` consecutive slices along ``axis``.

    ``axis`` is a spatial axis; its size must be divisible by ``factor`` and shrinks by it, e.g.
    ``(C, D, H, W)`` with ``axis=-1`` gives ``(C, D, H, W // factor)``.
    """
    x = _check_image(x)
    factor = _check_factor(factor, "thick_slices")
    dim = _spatial_axis(x, axis)
    _check_divisible(x, factor, [dim])
    moved = x.movedim(dim, -1)
    slabs = moved.reshape(*moved.shape[:-1], moved.shape[-1] // factor, factor).mean(-1)
    return slabs.movedim(-1, dim).contiguous()


def kspace_truncate(
    x: torch.Tensor, factor: int, *, axes: Sequence[int] | None = None
) -> torch.Tensor:
    """MR-style resolution loss on the same grid, ``(C, *S) -> (C, *S)``.

    FFT (``norm="ortho"``) over ``axes`` (spatial, default all), keep the central ``n / factor``
    frequencies of each axis, inverse FFT, and return the **real part**: for real input that is
    a symmetric low-pass that keeps the mean and the sign of HU / z-scored values (a magnitude
    would rectify them). The two band-edge frequencies get weight 1/2, which is what the real
    part of an even-sized centred crop amounts to. Constants pass; a checkerboard goes to 0.
    """
    x = _check_image(x)
    factor = _check_factor(factor, "kspace")
    dims = sorted({_spatial_axis(x, a) for a in (axes if axes is not None else range(x.ndim - 1))})
    spectrum = torch.fft.fftn(x, dim=dims, norm="ortho")
    for dim in dims:
        n = x.shape[dim]
        k = torch.fft.fftfreq(n, d=1.0 / n, device=x.device).round().abs()  # signed index |k|
        twice = 2 * factor * k
        weight = (twice < n).float() + 0.5 * (twice == n).float()
        shape = [1] * x.ndim
        shape[dim] = n
        spectrum = spectrum * weight.view(shape)
    return torch.fft.ifftn(spectrum, dim=dims, norm="ortho").real.contiguous()


# --------------------------------------------------------------------------- one step


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
        _check_factor(self.factor, self.kind)
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
        x = _check_image(clean, "clean")
        step = self._resize
        if step is not None:
            dims = range(1, x.ndim) if step.kind == "downsample" else [_spatial_axis(x, step.axis)]
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
