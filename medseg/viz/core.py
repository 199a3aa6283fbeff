"""Pure-numpy rendering basics: window/level, label overlays, montage images.

Nothing here knows about models, files or Gradio; the CLI preview and the viewer both call it,
and it is tested without a browser. Images are ``(H, W)`` slices in display orientation (see
:mod:`medseg.transforms.planes`); outputs are ``(H, W, 3)`` uint8 RGB.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# (level, width) presets as in Slicer / OHIF.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "liver": (90.0, 150.0),
    "bone": (480.0, 2500.0),
    "brain": (40.0, 80.0),
}

# A colour-blind-aware cycle (Okabe-Ito first), then a deterministic hash for larger ids.
_PALETTE = np.array(
    [
        [230, 159, 0],
        [86, 180, 233],
        [0, 158, 115],
        [240, 228, 66],
        [0, 114, 178],
        [213, 94, 0],
        [204, 121, 167],
        [255, 255, 255],
    ],
    dtype=np.uint8,
)


def label_color(label: int) -> tuple[int, int, int]:
    """RGB colour of label id ``label`` (> 0): stable across runs and processes."""
    if label <= 0:
        raise ValueError("label 0 is background and has no colour")
    if label <= len(_PALETTE):
        return tuple(int(c) for c in _PALETTE[label - 1])  # type: ignore[return-value]
    rng = np.random.default_rng(label)
    return tuple(int(c) for c in rng.integers(60, 256, size=3))  # type: ignore[return-value]


def percentile_window(
    array: np.ndarray, lower: float = 0.5, upper: float = 99.5
) -> tuple[float, float]:
    """``(level, width)`` spanning the given percentiles of the non-zero voxels (MR default)."""
    values = array[np.isfinite(array) & (array != 0)]
    if values.size == 0:
        values = array[np.isfinite(array)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [lower, upper])
    width = max(float(hi - lo), 1e-6)
    return float(lo + width / 2), width


def apply_window(image: np.ndarray, level: float, width: float) -> np.ndarray:
    """Map intensities to uint8 grey: ``[level - width/2, level + width/2] -> [0, 255]``."""
    if width <= 0:
        raise ValueError(f"window width must be > 0, got {width}")
    lo = level - width / 2.0
    scaled = (np.asarray(image, dtype=np.float32) - lo) * (255.0 / width)
    return np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).astype(np.uint8)


def overlay_labels(
    grey: np.ndarray,
    labels: np.ndarray | None,
    *,
    opacity: float = 0.5,
    visible: Sequence[int] | None = None,
    outline: bool = False,
) -> np.ndarray:
    """Blend a label slice over a grey slice.

    Args:
        grey: ``(H, W)`` uint8 (already windowed) or ``(H, W, 3)`` uint8.
        labels: ``(H, W)`` integer label ids (0 = background) or None.
        opacity: 0 (invisible) .. 1 (opaque fill).
        visible: label ids to draw (default: all non-zero).
        outline: draw only each label's boundary, fully opaque.

    Returns:
        ``(H, W, 3)`` uint8 RGB.
    """
    rgb = np.repeat(grey[..., None], 3, axis=-1) if grey.ndim == 2 else grey.copy()
    rgb = rgb.astype(np.float32)
    if labels is None:
        return rgb.astype(np.uint8)
    if labels.shape != rgb.shape[:2]:
        raise ValueError(f"labels {labels.shape} do not match image {rgb.shape[:2]}")
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if visible is not None:
        ids = ids[np.isin(ids, list(visible))]
    for label in ids:
        mask = labels == label
        if outline:
            mask = mask & ~_erode(mask)
            alpha = 1.0
        else:
            alpha = float(np.clip(opacity, 0.0, 1.0))
        color = np.array(label_color(int(label)), dtype=np.float32)
        rgb[mask] = (1.0 - alpha) * rgb[mask] + alpha * color
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def resample_aspect(rgb: np.ndarray, pixel_spacing: tuple[float, float]) -> np.ndarray:
    """Stretch rows or columns (nearest neighbour) so one pixel is square in millimetres."""
    row_mm, col_mm = pixel_spacing
    if np.isclose(row_mm, col_mm, rtol=1e-3):
        return rgb
    h, w = rgb.shape[:2]
    base = min(row_mm, col_mm)
    new_h = max(1, int(round(h * row_mm / base)))
    new_w = max(1, int(round(w * col_mm / base)))
    rows = np.minimum((np.arange(new_h) * h / new_h).astype(int), h - 1)
    cols = np.minimum((np.arange(new_w) * w / new_w).astype(int), w - 1)
    return rgb[rows][:, cols]


def montage(tiles: Sequence[np.ndarray], *, columns: int = 4, pad: int = 2) -> np.ndarray:
    """Arrange ``(H, W, 3)`` uint8 tiles (any sizes) in a grid on black: ``(H', W', 3)``."""
    if not tiles:
        raise ValueError("montage needs at least one tile")
    columns = max(1, min(columns, len(tiles)))
    rows = -(-len(tiles) // columns)
    th = max(t.shape[0] for t in tiles)
    tw = max(t.shape[1] for t in tiles)
    out = np.zeros((rows * (th + pad) + pad, columns * (tw + pad) + pad, 3), dtype=np.uint8)
    for n, tile in enumerate(tiles):
        r, c = divmod(n, columns)
        y = pad + r * (th + pad) + (th - tile.shape[0]) // 2
        x = pad + c * (tw + pad) + (tw - tile.shape[1]) // 2
        out[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return out


def pick_slices(mask_stack: np.ndarray, count: int = 8) -> list[int]:
    """Up to ``count`` slice indices spread over the slices where ``mask_stack (S, H, W)`` is set.

    Falls back to evenly spread slices over the whole stack when the mask is empty.
    """
    present = np.flatnonzero(mask_stack.reshape(mask_stack.shape[0], -1).any(axis=1))
    pool = present if present.size else np.arange(mask_stack.shape[0])
    if pool.size <= count:
        return [int(i) for i in pool]
    picks = np.linspace(0, pool.size - 1, count).round().astype(int)
    return [int(pool[i]) for i in picks]


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode ``(H, W, 3)`` uint8 as PNG bytes (Pillow)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buffer, format="PNG")
    return buffer.getvalue()


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour binary erosion of a ``(H, W)`` bool mask (edges count as outside)."""
    padded = np.pad(mask, 1, constant_values=False)
    return (
        padded[1:-1, 1:-1]
        & padded[:-2, 1:-1]
        & padded[2:, 1:-1]
        & padded[1:-1, :-2]
        & padded[1:-1, 2:]
    )
