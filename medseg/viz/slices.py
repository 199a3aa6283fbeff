"""Viewer rendering: one displayed slice -> an RGB picture with overlay, crosshair and marks.

Pure numpy (Pillow only for the orientation letters), so every pixel the viewer shows is tested
without a browser. The pipeline for one plane is::

    slice (H, W) float --Viewport (crop, zoom, mm aspect)--> (h, w) --window--> grey uint8
    labels (H, W) int  --same sampling--> (h, w) ids --LabelStyle LUT--> blended RGB (h, w, 3)
    then crosshair, prompt marks and orientation letters are drawn on top.

Coordinates: a displayed slice is indexed ``(row, col)`` (see :mod:`medseg.transforms.planes`);
the rendered picture is indexed by pixels ``(x, y)`` = (column, row) from the top-left, which is
what a browser click reports. :class:`Viewport` converts between the two, both ways.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from medseg.viz.core import apply_window, label_color

CROSSHAIR_COLOR = (255, 220, 0)
POSITIVE_COLOR = (0, 230, 64)
NEGATIVE_COLOR = (255, 40, 40)
BOX_COLOR = (0, 220, 255)


@dataclass(frozen=True)
class Viewport:
    """The visible part of a ``(height, width)`` slice and the picture size it is drawn at.

    Attributes:
        height, width: size of the displayed slice in pixels (rows, columns).
        r0, c0: top-left corner of the visible crop, in slice pixels (floats).
        rows, cols: size of the visible crop in slice pixels (``<= height``, ``<= width``).
        out_h, out_w: size of the rendered picture; ``rows * row_mm / out_h`` equals
            ``cols * col_mm / out_w`` (up to rounding), so one picture pixel is square in mm.
    """

    height: int
    width: int
    r0: float
    c0: float
    rows: float
    cols: float
    out_h: int
    out_w: int

    @classmethod
    def fit(
        cls,
        height: int,
        width: int,
        pixel_spacing: tuple[float, float] = (1.0, 1.0),
        *,
        size: int = 384,
        zoom: float = 1.0,
        center: tuple[float, float] | None = None,
    ) -> Viewport:
        """Viewport whose longer physical side is drawn ``size`` pixels long.

        Args:
            height, width: slice size (rows, columns).
            pixel_spacing: ``(row_mm, col_mm)`` of one slice pixel (``PlaneView.pixel_spacing``).
            size: rendered length of the longer side (in mm) of the visible crop.
            zoom: ``>= 1``; the crop is ``1 / zoom`` of the slice along each side.
            center: ``(row, col)`` the crop is centred on (clamped inside the slice); default
                the slice centre.
        """
        if height < 1 or width < 1 or size < 1:
            raise ValueError(f"need a non-empty slice and size, got {height}x{width}, {size}")
        zoom = max(float(zoom), 1.0)
        row_mm, col_mm = (float(s) for s in pixel_spacing)
        rows, cols = height / zoom, width / zoom
        if center is None:
            cr, cc = height / 2.0, width / 2.0
        else:
            cr, cc = center[0] + 0.5, center[1] + 0.5
        r0 = float(np.clip(cr - rows / 2.0, 0.0, height - rows))
        c0 = float(np.clip(cc - cols / 2.0, 0.0, width - cols))
        extent_h, extent_w = rows * row_mm, cols * col_mm
        longest = max(extent_h, extent_w)
        out_h = max(1, int(round(size * extent_h / longest)))
        out_w = max(1, int(round(size * extent_w / longest)))
        return cls(height, width, r0, c0, rows, cols, out_h, out_w)

    def sample_indices(self) -> tuple[np.ndarray, np.ndarray]:
        """Nearest-neighbour source ``(rows (out_h,), cols (out_w,))`` of every picture pixel."""
        rows = np.floor(self.r0 + (np.arange(self.out_h) + 0.5) * self.rows / self.out_h)
        cols = np.floor(self.c0 + (np.arange(self.out_w) + 0.5) * self.cols / self.out_w)
        return (
            np.clip(rows, 0, self.height - 1).astype(np.intp),
            np.clip(cols, 0, self.width - 1).astype(np.intp),
        )

    def to_slice(self, x: float, y: float) -> tuple[int, int]:
        """Picture pixel ``(x, y)`` -> the slice pixel ``(row, col)`` drawn there."""
        row = np.floor(self.r0 + (float(y) + 0.5) * self.rows / self.out_h)
        col = np.floor(self.c0 + (float(x) + 0.5) * self.cols / self.out_w)
        return int(np.clip(row, 0, self.height - 1)), int(np.clip(col, 0, self.width - 1))

    def to_image(self, row: float, col: float) -> tuple[float, float]:
        """Slice pixel ``(row, col)`` -> picture ``(x, y)`` of its centre (may lie outside)."""
        y = (float(row) + 0.5 - self.r0) * self.out_h / self.rows - 0.5
        x = (float(col) + 0.5 - self.c0) * self.out_w / self.cols - 0.5
        return x, y


@dataclass(frozen=True)
class LabelStyle:
    """How labels are drawn: global opacity, which ids are visible, fill or outline."""

    opacity: float = 0.5
    visible: frozenset[int] | None = None  # None: every non-zero id
    outline: bool = False

    def lut(self, max_label: int) -> tuple[np.ndarray, np.ndarray]:
        """``(colors (N, 3) float32, alpha (N,) float32)`` for ids ``0 .. max_label``."""
        n = int(max_label) + 1
        colors = np.zeros((n, 3), dtype=np.float32)
        alpha = np.zeros(n, dtype=np.float32)
        strength = 1.0 if self.outline else float(np.clip(self.opacity, 0.0, 1.0))
        for label in range(1, n):
            if self.visible is None or label in self.visible:
                colors[label] = label_color(label)
                alpha[label] = strength
        return colors, alpha


def render_slice(
    image: np.ndarray,
    viewport: Viewport,
    window: tuple[float, float],
    labels: np.ndarray | None = None,
    style: LabelStyle = LabelStyle(),
) -> np.ndarray:
    """Draw one displayed slice.

    Args:
        image: ``(H, W)`` intensities of the displayed slice.
        viewport: what part of the slice is drawn and how big (``Viewport.fit``).
        window: ``(level, width)``.
        labels: ``(H, W)`` integer ids (0 = background) or None.
        style: opacity, visible ids and outline mode of the labels.

    Returns:
        ``(out_h, out_w, 3)`` uint8 RGB.
    """
    if image.shape != (viewport.height, viewport.width):
        raise ValueError(f"image {image.shape} does not match viewport {viewport}")
    rows, cols = viewport.sample_indices()
    grey = apply_window(image[rows][:, cols], *window)
    if labels is None or not labels.any():
        return np.repeat(grey[..., None], 3, axis=-1)
    if labels.shape != image.shape:
        raise ValueError(f"labels {labels.shape} do not match image {image.shape}")
    ids = label_boundaries(labels) if style.outline else labels
    ids = ids[rows][:, cols]
    colors, alpha = style.lut(int(ids.max()))
    a = alpha[ids][..., None]
    blended = grey[..., None].astype(np.float32) * (1.0 - a) + colors[ids] * a
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` ids kept only where a 4-neighbour differs (slice edges count as different)."""
    padded = np.pad(labels, 1, constant_values=0)
    centre = padded[1:-1, 1:-1]
    inner = (
        (padded[:-2, 1:-1] == centre)
        & (padded[2:, 1:-1] == centre)
        & (padded[1:-1, :-2] == centre)
        & (padded[1:-1, 2:] == centre)
    )
    return np.where(inner, 0, labels)


# marks drawn on a rendered picture (in place; coordinates are picture pixels) ----------------
def draw_crosshair(
    rgb: np.ndarray, x: float, y: float, color: Sequence[int] = CROSSHAIR_COLOR, gap: int = 6
) -> np.ndarray:
    """Full-width and full-height lines through ``(x, y)`` leaving a ``gap`` around the point."""
    h, w = rgb.shape[:2]
    xi, yi = int(round(x)), int(round(y))
    if 0 <= yi < h:
        keep = np.abs(np.arange(w) - xi) > gap
        rgb[yi, keep] = color
    if 0 <= xi < w:
        keep = np.abs(np.arange(h) - yi) > gap
        rgb[keep, xi] = color
    return rgb


def draw_box(
    rgb: np.ndarray, corners: Sequence[float], color: Sequence[int] = BOX_COLOR
) -> np.ndarray:
    """Rectangle outline with corners ``(x0, y0, x1, y1)``, clipped to the picture."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in corners)
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    xa, xb = max(x0, 0), min(x1, w - 1)
    ya, yb = max(y0, 0), min(y1, h - 1)
    for yy in (y0, y1):
        if 0 <= yy < h and xa <= xb:
            rgb[yy, xa : xb + 1] = color
    for xx in (x0, x1):
        if 0 <= xx < w and ya <= yb:
            rgb[ya : yb + 1, xx] = color
    return rgb


def draw_point(
    rgb: np.ndarray, x: float, y: float, color: Sequence[int], radius: int = 3
) -> np.ndarray:
    """Filled square of side ``2 * radius + 1`` at ``(x, y)`` with a 1-pixel black border."""
    h, w = rgb.shape[:2]
    xi, yi = int(round(x)), int(round(y))
    for r, c in ((radius + 1, (0, 0, 0)), (radius, color)):
        ya, yb = max(yi - r, 0), min(yi + r + 1, h)
        xa, xb = max(xi - r, 0), min(xi + r + 1, w)
        if ya < yb and xa < xb:
            rgb[ya:yb, xa:xb] = c
    return rgb


def draw_letters(rgb: np.ndarray, letters: Mapping[str, str], size: int = 14) -> np.ndarray:
    """Orientation letters at the middle of each edge: keys ``top, bottom, left, right``."""
    from PIL import Image, ImageDraw, ImageFont

    picture = Image.fromarray(rgb)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=size)
    h, w = rgb.shape[:2]
    spots = {
        "top": (w / 2, 2, "mt"),
        "bottom": (w / 2, h - 2, "mb"),
        "left": (3, h / 2, "lm"),
        "right": (w - 3, h / 2, "rm"),
    }
    for edge, text in letters.items():
        x, y, anchor = spots[edge]
        draw.text(
            (x, y), text, fill=(255, 255, 255), font=font, anchor=anchor,
            stroke_width=2, stroke_fill=(0, 0, 0),
        )  # fmt: skip
    rgb[...] = np.asarray(picture)
    return rgb
