"""Image degradations for restoration training: noise, low-dose CT, blur, resolution loss.

Every function takes one channel-first float image ``x`` of shape ``(C, *S)`` with ``S`` either
``(H, W)`` or ``(D, H, W)``, never changes it in place and returns a new ``float32`` tensor.
Random functions draw only from the ``torch.Generator`` they are given (noise is drawn on the
generator's device, then moved to ``x``'s, so a seed gives the same pair on CPU and GPU).
Axis arguments (``axis``, ``axes``) index the spatial axes ``S``: ``0`` is the first spatial axis,
negative values count from the last; the channel axis can never be chosen.

These are the single steps; :mod:`medseg.transforms.pairs` chains them into seeded
``clean -> (degraded, target)`` pairs (:class:`~medseg.transforms.pairs.PairedDegradation`, its
MONAI form, and the config parser).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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


def check_image(x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Validate a ``(C, *S)`` image (2 or 3 spatial dims) and return it as float32."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must have shape (C, H, W) or (C, D, H, W), got {tuple(x.shape)}")
    if x.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}")
    return x.to(torch.float32)


def check_factor(factor: Any, what: str) -> int:
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"{what}: factor must be a positive int, got {factor!r}")
    return int(factor)


def spatial_axis(x: torch.Tensor, axis: int) -> int:
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
    x = check_image(x)
    return x + sigma * _randn(x, gen)


def rician_noise(x: torch.Tensor, sigma: float, gen: torch.Generator) -> torch.Tensor:
    """MR magnitude noise: ``|(x + sigma * n1) + i * sigma * n2|``; ``(C, *S) -> (C, *S)``.

    The output is never negative. The model assumes a magnitude image (``x >= 0``); on z-scored
    data the negative values are folded up. On ``x = 0`` the output is Rayleigh distributed with
    mean ``sigma * sqrt(pi / 2)``.
    """
    x = check_image(x)
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
    x = check_image(x_hu, "x_hu")
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
    x = check_image(x)
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
    x = check_image(x)
    factor = check_factor(factor, "downsample")
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
    x = check_image(x)
    factor = check_factor(factor, "thick_slices")
    dim = spatial_axis(x, axis)
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
    x = check_image(x)
    factor = check_factor(factor, "kspace")
    dims = sorted({spatial_axis(x, a) for a in (axes if axes is not None else range(x.ndim - 1))})
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
