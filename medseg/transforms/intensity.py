"""Invertible intensity scaling for restoration: the network sees normalised values, the user
gets the input's units back (HU stays HU).

Segmentation may clip (nnU-Net's CT scheme), restoration may not: a clipped voxel could never be
returned in its own units. So a restoration scheme is one affine map ``y = (x - shift) / scale``:

- ``{"scheme": "ct", "mean": m, "std": s}``: the dataset's foreground statistics from
  ``fingerprint.json`` (fixed, so every CT volume shares one map; no clipping);
- ``{"scheme": "zscore"}``: mean and standard deviation of the *degraded* image itself (the only
  image there is at inference), computed per volume (per image when the data are 2-D images).

:func:`fit_intensity` turns a scheme plus an image into ``{"shift", "scale"}``;
:func:`normalise` / :func:`denormalise` apply the map and its inverse exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["SCHEMES", "denormalise", "fit_intensity", "normalise", "restoration_scheme"]

SCHEMES = ("ct", "zscore")


def restoration_scheme(segmentation_entry: Mapping[str, Any]) -> dict[str, Any]:
    """The restoration scheme for one channel of a segmentation preprocessing dict
    (``{"scheme": "ct", "clip", "mean", "std"}`` keeps mean/std and drops the clip; anything
    else becomes per-volume ``zscore``)."""
    if segmentation_entry.get("scheme") == "ct":
        return {
            "scheme": "ct",
            "mean": float(segmentation_entry["mean"]),
            "std": float(segmentation_entry["std"]),
        }
    return {"scheme": "zscore"}


def fit_intensity(image: Tensor, scheme: Mapping[str, Any]) -> dict[str, float]:
    """``{"shift", "scale"}`` for ``image`` (any shape) under ``scheme`` (module docstring).

    A constant image gets ``scale = 1`` (nothing to spread), never a division by zero.
    """
    kind = scheme.get("scheme")
    if kind == "ct":
        shift, scale = float(scheme["mean"]), float(scheme["std"])
    elif kind == "zscore":
        x = image.detach().double()
        shift, scale = float(x.mean()), float(x.std(unbiased=False))
    else:
        raise ValueError(f"unknown intensity scheme {kind!r}; use one of {SCHEMES}")
    if not scale > 1e-8:
        scale = 1.0
    return {"shift": shift, "scale": scale}


def normalise(x: Tensor, params: Mapping[str, float]) -> Tensor:
    """``(x - shift) / scale`` as float32."""
    return ((x.float() - params["shift"]) / params["scale"]).float()


def denormalise(y: Tensor, params: Mapping[str, float]) -> Tensor:
    """Inverse of :func:`normalise`: ``y * scale + shift`` as float32."""
    return (y.float() * params["scale"] + params["shift"]).to(torch.float32)
