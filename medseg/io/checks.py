"""Checks shared by every reader and writer: size guard, geometry, voxel values, label values.

Every check raises :class:`~medseg.errors.InputError` with a stable ``code`` (catalogue in
:mod:`medseg.io.load`) and one human line; none of them allocates more than the array it checks.

Tolerances (module constants, documented so that tests and users can rely on them):

- :data:`DET_MIN`: ``abs(det(affine[:3, :3]))`` must exceed it (mm^3), else the grid is singular.
- :data:`ORTHO_TOL`: max ``|D^T D - I|`` of the unit direction cosines ``D``; above it the voxel
  axes are sheared (ITK, and every resampler built on it, refuses such grids).
- :data:`MAX_ORIGIN_MM`: an origin farther than 1e6 mm (1 km) from the scanner centre is no
  anatomy; it is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from medseg.errors import InputError
from medseg.io.volume import Volume

DET_MIN = 1e-6
ORTHO_TOL = 1e-4
MAX_ORIGIN_MM = 1e6
_GIB = float(2**30)
_LIST_MAX = 10  # unexpected label values listed in a message


def check_size(shape: Sequence[int], itemsize: int, max_bytes: int, path: str) -> None:
    """Refuse (``too_large``) when ``prod(shape) * max(itemsize, 4)`` exceeds ``max_bytes``.

    Called on header values, before any voxel is read or allocated. 4 bytes is the floor because
    images come back float32 (and labels at most int32).
    """
    need = float(np.prod([float(s) for s in shape])) * max(int(itemsize), 4)
    if need > max_bytes:
        raise InputError(
            "too_large",
            f"volume too large ({need / _GIB:.3g} GiB > limit {max_bytes / _GIB:.3g} GiB; "
            f"shape {tuple(int(s) for s in shape)})",
            path=path,
        )


def check_spacing(spacing: Iterable[float], path: str, *, what: str = "voxel size") -> None:
    """Refuse (``invalid_geometry``) zero, negative or non-finite voxel sizes."""
    sp = np.asarray(list(spacing), dtype=np.float64)
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        shown = ", ".join(f"{s:g}" for s in sp)
        raise InputError(
            "invalid_geometry",
            f"invalid geometry: {what} ({shown}) must be finite and > 0",
            path=path,
        )


def check_affine(affine: np.ndarray, path: str) -> None:
    """Refuse (``invalid_geometry``) an affine that cannot place voxels in the patient.

    ``affine``: (4, 4) voxel -> RAS+ mm. Refused: non-finite entries, a translation beyond
    :data:`MAX_ORIGIN_MM`, ``abs(det) <= DET_MIN`` (singular), and direction cosines that are not
    orthonormal within :data:`ORTHO_TOL` (sheared axes).
    """
    a = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise InputError("invalid_geometry", "invalid geometry: affine is not finite", path=path)
    if np.any(np.abs(a[:3, 3]) > MAX_ORIGIN_MM):
        origin = ", ".join(f"{v:.3g}" for v in a[:3, 3])
        raise InputError(
            "invalid_geometry",
            f"invalid geometry: origin ({origin}) mm is beyond {MAX_ORIGIN_MM:g} mm",
            path=path,
        )
    m = a[:3, :3]
    det = float(np.linalg.det(m))
    if abs(det) <= DET_MIN:
        raise InputError(
            "invalid_geometry",
            f"invalid geometry: singular affine (det {det:.3g}; a voxel axis has zero length "
            "or two axes coincide)",
            path=path,
        )
    unit = m / np.linalg.norm(m, axis=0)[None, :]
    dev = float(np.max(np.abs(unit.T @ unit - np.eye(3))))
    if dev > ORTHO_TOL:
        raise InputError(
            "invalid_geometry",
            f"invalid geometry: voxel axes are sheared (not orthogonal; max deviation {dev:.3g} "
            f"> {ORTHO_TOL:g})",
            path=path,
        )


def form_disagreement_mm(a: np.ndarray, b: np.ndarray, shape: Sequence[int]) -> float:
    """Largest distance (mm) between where two affines put the corners of a ``shape`` grid."""
    ext = [max(int(s) - 1, 0) for s in list(shape)[:3]] + [0] * (3 - min(len(shape), 3))
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, ext[0]) for j in (0, ext[1]) for k in (0, ext[2])]
    )
    diff = (np.asarray(a) @ corners.T - np.asarray(b) @ corners.T)[:3]
    return float(np.max(np.linalg.norm(diff, axis=0)))


def check_same_grid(
    image: Volume, other: Volume, *, tol_mm: float = 1e-3, what: str = "label"
) -> None:
    """Refuse (``grid_mismatch``) when ``other`` is not on ``image``'s voxel grid.

    Compares the spatial shape, then spacing, origin and direction (direction cosines scaled to
    mm over the grid extent, so ``tol_mm`` bounds how far any voxel of the grid may move). The
    message names the field and both values; ``path`` is ``other``'s source path.
    """
    where = str(other.meta.get("path", what))
    if image.spatial_shape != other.spatial_shape:
        raise InputError(
            "grid_mismatch",
            f"{what} shape {other.spatial_shape} != image shape {image.spatial_shape}",
            path=where,
        )
    fields = {
        "spacing": (other.spacing, image.spacing, np.max(np.abs(other.spacing - image.spacing))),
        "origin": (other.origin, image.origin, np.linalg.norm(other.origin - image.origin)),
    }
    extent = np.asarray(image.spatial_shape) * image.spacing
    turn = np.max(np.linalg.norm((other.direction - image.direction) * extent[None, :], axis=0))
    fields["direction"] = (other.direction, image.direction, turn)
    for name, (got, want, err) in fields.items():
        if float(err) > tol_mm:
            shown = np.array2string(np.asarray(got), precision=4, separator=",")
            ref = np.array2string(np.asarray(want), precision=4, separator=",")
            raise InputError(
                "grid_mismatch",
                f"{what} {name} {shown} differs from the image's {ref} (by {float(err):.3g} mm > "
                f"{tol_mm:g} mm)",
                path=where,
            )


def finish_image(array: np.ndarray, nan_policy: str, path: str, warnings: list[str]) -> np.ndarray:
    """Float32 image with the non-finite policy applied; refuses all-non-finite/constant images.

    ``array``: (X, Y, Z) any real dtype -> (X, Y, Z) float32 (a copy only when needed).
    ``nan_policy``: ``"error"`` -> ``non_finite``; ``"zero"`` -> replace by 0 and add a warning.
    """
    out = np.asarray(array, dtype=np.float32)
    finite = np.isfinite(out)
    n_bad = int(out.size - np.count_nonzero(finite))
    if n_bad == out.size:
        raise InputError("non_finite", f"all {out.size} voxels are non-finite (NaN/Inf)", path=path)
    if n_bad:
        if nan_policy != "zero":
            raise InputError(
                "non_finite",
                f"non-finite voxels ({n_bad}); use --nan-policy zero to replace them with 0",
                path=path,
            )
        if not out.flags.writeable or out is array:
            out = out.copy()
        out[~finite] = 0.0
        warnings.append(f"replaced {n_bad} non-finite voxels (NaN/Inf) with 0")
    if out.size and float(out.min()) == float(out.max()):
        raise InputError(
            "constant_image",
            f"image is constant (every voxel = {float(out.flat[0]):g}); it cannot be normalised",
            path=path,
        )
    return out


def to_label_array(
    array: np.ndarray,
    path: str,
    *,
    classes: Iterable[int] | None = None,
    max_value: int = 2**31 - 1,
    code: str = "bad_labels",
) -> np.ndarray:
    """Integer label map in the smallest of uint8 / uint16 / int32 that holds its values.

    Refuses (``bad_labels``) non-finite, fractional, negative, ``> max_value`` values and values
    outside ``classes`` (when given); the message lists up to 10 offending values.
    ``array``: (X, Y, Z) or (C, X, Y, Z), any real or bool dtype -> same shape, integer dtype.
    """
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise InputError("bad_labels", f"labels must be integers, got dtype {arr.dtype}", path=path)
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            n = int(arr.size - np.count_nonzero(finite))
            raise InputError(code, f"labels contain {n} non-finite values (NaN/Inf)", path=path)
        frac = arr != np.round(arr)
        if frac.any():
            bad = np.unique(arr[frac])
            raise InputError(code, f"labels must be whole numbers; found {_list(bad)}", path=path)
    if arr.size == 0:
        return arr.astype(np.uint8)
    lo, hi = arr.min(), arr.max()
    if lo < 0:
        raise InputError(
            code, f"labels must be >= 0; found {_list(np.unique(arr[arr < 0]))}", path=path
        )
    if hi > max_value:
        big = np.unique(arr[arr > max_value])
        raise InputError(code, f"label values above {max_value}: {_list(big)}", path=path)
    if classes is not None:
        allowed = np.asarray(sorted({int(c) for c in classes}), dtype=np.int64)
        values = np.unique(arr)
        extra = values[~np.isin(values, allowed)]
        if extra.size:
            raise InputError(
                code,
                f"unexpected label values {_list(extra)} (allowed: {_list(allowed)})",
                path=path,
            )
    hi = int(hi)
    dtype = np.uint8 if hi <= 255 else np.uint16 if hi <= 65535 else np.int32
    return arr.astype(dtype, copy=arr.dtype != dtype)


def _list(values: np.ndarray) -> str:
    vals = [f"{v:g}" if isinstance(v, float) else str(v) for v in values[:_LIST_MAX].tolist()]
    more = f", ... ({values.size} values)" if values.size > _LIST_MAX else ""
    return "{" + ", ".join(vals) + more + "}"
