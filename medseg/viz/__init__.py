"""Pure-numpy rendering: window/level, label overlays, montages and the viewer's slice pictures.

Nothing here knows about models, files or Gradio; the CLI preview and the viewer both call it,
and it is tested without a browser. Slices are ``(H, W)`` in display orientation (see
:mod:`medseg.transforms.planes`); pictures are ``(h, w, 3)`` uint8 RGB.

- :mod:`medseg.viz.core`: window presets, percentile window, label colours, overlays, montage.
- :mod:`medseg.viz.slices`: :class:`Viewport` (crop, zoom, mm aspect, click mapping),
  :func:`render_slice` (windowed slice + label LUT blend), crosshair, prompt marks, letters.
"""

from medseg.viz.core import (
    WINDOW_PRESETS,
    apply_window,
    label_color,
    montage,
    overlay_labels,
    percentile_window,
    pick_slices,
    png_bytes,
    resample_aspect,
)
from medseg.viz.slices import (
    BOX_COLOR,
    CROSSHAIR_COLOR,
    NEGATIVE_COLOR,
    POSITIVE_COLOR,
    LabelStyle,
    Viewport,
    draw_box,
    draw_crosshair,
    draw_letters,
    draw_point,
    label_boundaries,
    render_slice,
)

__all__ = [
    "BOX_COLOR",
    "CROSSHAIR_COLOR",
    "NEGATIVE_COLOR",
    "POSITIVE_COLOR",
    "WINDOW_PRESETS",
    "LabelStyle",
    "Viewport",
    "apply_window",
    "draw_box",
    "draw_crosshair",
    "draw_letters",
    "draw_point",
    "label_boundaries",
    "label_color",
    "montage",
    "overlay_labels",
    "percentile_window",
    "pick_slices",
    "png_bytes",
    "render_slice",
    "resample_aspect",
]
