"""Session -> what the page shows: plane pictures, crosshair read-out, legend, statistics.

Only glue: pixels come from :mod:`medseg.viz`, geometry from :mod:`medseg.transforms.planes`.
Rendering reads the cached arrays of the session and never touches a model.
"""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

import numpy as np

from medseg.inference.stats import label_statistics
from medseg.transforms.planes import PlaneView, voxel_to_world
from medseg.viz import (
    NEGATIVE_COLOR,
    POSITIVE_COLOR,
    Viewport,
    draw_box,
    draw_crosshair,
    draw_letters,
    draw_point,
    label_color,
    render_slice,
)

from . import grids
from .state import Session

STATS_HEADERS = ["label", "name", "voxels", "volume (mL)", "mean", "SD", "at border"]
KEEP_PICTURES = 3  # files kept per plane and session (the browser may still be fetching one)


def window_limits(lo: float, hi: float, ct: bool) -> dict[str, dict[str, float]]:
    """Slider ranges for window level and width from the image's own range ``[lo, hi]``:
    ``{"level": {minimum, maximum, step}, "width": {...}}``. The step is a round 1/1000 of the
    range (1 HU on CT), the level spans the range, the width up to twice it; CT ranges also
    cover -1024..3071 HU so every preset fits."""
    if ct:
        lo, hi = min(lo, -1024.0), max(hi, 3071.0)
    span = max(hi - lo, 1e-6)
    step = 1.0 if ct else float(10 ** np.floor(np.log10(span / 1000)))
    level = {"minimum": float(np.floor(lo / step) * step),
             "maximum": float(np.ceil(hi / step) * step), "step": step}  # fmt: skip
    width = {"minimum": step, "maximum": float(np.ceil(2 * span / step) * step), "step": step}
    return {"level": level, "width": width}


def render_plane(session: Session, axis: str, image=None) -> np.ndarray:
    """``(h, w, 3)`` uint8 picture of ``axis`` at the crosshair, with overlay and marks.

    ``image`` replaces the session's image volume ``(X, Y, Z)`` (before/after view). The
    viewport used is stored in ``session.viewports[axis]`` so clicks map back to voxels.
    """
    view = session.views[axis]
    s, row, col = view.to_display(np.asarray(session.crosshair))
    s = int(round(s))
    volume = session.image.array if image is None else image
    picture_slice = view.stack(volume)[s]
    labels = view.stack(session.labels)[s]
    center = (row, col) if session.zoom > 1 else None
    vp = Viewport.fit(
        view.height, view.width, view.pixel_spacing, size=session.size, zoom=session.zoom,
        center=center,
    )  # fmt: skip
    rgb = render_slice(picture_slice, vp, session.window, labels, session.style)
    draw_crosshair(rgb, *vp.to_image(row, col))
    _draw_prompts(session, axis, s, vp.to_image, rgb)
    draw_letters(rgb, view.labels())
    if image is None:
        session.viewports[axis] = vp
    return rgb


def render_restored(session: Session) -> np.ndarray:
    """Axial picture of ``session.restored`` on its own (finer) grid, same anatomy as
    ``render_plane(session, "axial")``: the restored slice nearest (in RAS mm) to the
    crosshair's, the crop and picture size of the same physical extent (pixels stay square in
    mm, so both pictures have the same aspect), labels and prompts carried over through the
    affines (labels by nearest image voxel)."""
    restored = session.restored
    assert restored is not None
    view = PlaneView.from_affine(restored.affine, restored.spatial_shape, "axial")
    to_restored = grids.GridMap(session.image.affine, restored.affine)
    position, row, col = view.to_display(to_restored(np.asarray(session.crosshair)))
    s = grids.nearest_index(position, view.num_slices)
    labels = None
    if session.labels.any():
        back = grids.GridMap(restored.affine, session.image.affine)
        labels = grids.sample_nearest(session.labels, back(grids.slice_voxels(view, s)))
    center = (row, col) if session.zoom > 1 else None
    vp = Viewport.fit(
        view.height, view.width, view.pixel_spacing, size=session.size, zoom=session.zoom,
        center=center,
    )  # fmt: skip
    rgb = render_slice(view.stack(restored.array)[s], vp, session.window, labels, session.style)
    draw_crosshair(rgb, *vp.to_image(row, col))
    image_view = session.views["axial"]
    key = session.slice_of("axial")

    def to_picture(r: float, c: float) -> tuple[float, float]:
        _, r2, c2 = view.to_display(to_restored(image_view.to_voxel(key, r, c)))
        return vp.to_image(r2, c2)

    _draw_prompts(session, "axial", key, to_picture, rgb)
    draw_letters(rgb, view.labels())
    return rgb


def _draw_prompts(session: Session, axis: str, s: int, to_picture, rgb: np.ndarray) -> None:
    """Prompts of the active object and a pending box corner on slice ``s`` of ``axis``;
    ``to_picture(row, col) -> (x, y)`` places a displayed pixel on the picture."""
    obj = session.objects.get(session.active) if session.active is not None else None
    if obj is not None and (obj.axis, obj.slice_index) == (axis, s):
        if obj.box is not None:
            x0, y0, x1, y1 = obj.box
            (ax, ay), (bx, by) = to_picture(y0, x0), to_picture(y1, x1)
            draw_box(rgb, (ax, ay, bx, by))
        for x, y, lab in obj.points:
            draw_point(rgb, *to_picture(y, x), POSITIVE_COLOR if lab else NEGATIVE_COLOR)
    if session.pending is not None and session.pending[:2] == (axis, s):
        _, _, row, col = session.pending
        draw_point(rgb, *to_picture(row, col), (0, 220, 255), radius=2)


def render_all(session: Session) -> dict[str, np.ndarray]:
    """Pictures of the three planes by axis name."""
    return {axis: render_plane(session, axis) for axis in session.views}


def compare_pictures(session: Session) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Axial before/after pictures at the same place and window (None without a result).

    A result on the image grid is drawn like the image; one on a finer grid (super-resolution)
    by :func:`render_restored`, at the same physical position and size."""
    if session.restored is None:
        return None, None
    before = render_plane(session, "axial")
    if grids.same_grid(session.image, session.restored):
        return before, render_plane(session, "axial", session.restored.array)
    return before, render_restored(session)


def plane_title(session: Session, axis: str) -> str:
    view = session.views[axis]
    return f"{axis.capitalize()} {session.slice_of(axis)} / {view.num_slices - 1}"


def info_text(session: Session) -> str:
    """One line about the crosshair voxel and the display settings (Markdown)."""
    ijk = np.asarray(session.crosshair)
    xyz = voxel_to_world(session.image.affine, ijk)
    value = float(session.image.array[tuple(ijk)])
    label = int(session.labels[tuple(ijk)])
    name = session.names.get(label, f"label {label}") if label else "background"
    level, width = session.window
    spacing = "x".join(f"{s:.3g}" for s in session.image.spacing)
    return (
        f"**voxel** ({', '.join(str(int(v)) for v in ijk)}) · "
        f"**RAS** ({', '.join(f'{v:.1f}' for v in xyz)}) mm · **value** {value:.4g} · "
        f"**label** {label} ({html.escape(name)}) · **W/L** {width:.4g}/{level:.4g} · "
        f"{'x'.join(map(str, session.image.spatial_shape))} voxels of {spacing} mm, "
        f"{''.join(session.image.axcodes)}"
    )


def present_labels(session: Session) -> list[int]:
    """Label ids in the map plus prompted objects (from the cached statistics)."""
    found = {e["label"] for e in statistics(session)["labels"]}
    return sorted(found | set(session.objects))


def legend_html(session: Session) -> str:
    """Colour swatches and names of the labels present (or prompted)."""
    ids = present_labels(session)
    if not ids:
        return "<p>No labels yet.</p>"
    rows = []
    for label in ids:
        r, g, b = label_color(label)
        name = html.escape(session.names.get(label, f"label {label}"))
        mark = " (active)" if label == session.active else ""
        rows.append(
            f'<li><span style="display:inline-block;width:12px;height:12px;'
            f'background:rgb({r},{g},{b});margin-right:6px"></span>{label}: {name}{mark}</li>'
        )
    return '<ul style="list-style:none;padding-left:0">' + "".join(rows) + "</ul>"


def label_choices(session: Session) -> list[tuple[str, int]]:
    """``(caption, id)`` of every label present or prompted."""
    return [(f"{i}: {session.names.get(i, f'label {i}')}", i) for i in present_labels(session)]


def statistics(session: Session) -> dict:
    """Per-label statistics, JSON-ready: ``label_statistics`` (voxels, mL, bounding boxes) plus
    intensity ``mean``/``sd`` and ``touches_border``. Cached until the labels change."""
    if session.stats_cache is not None and session.stats_cache[0] == session.version:
        return session.stats_cache[1]
    stats = label_statistics(session.labels, session.image.affine, session.names)
    if stats["labels"]:
        ids = session.labels.ravel()
        values = session.image.array.ravel().astype(np.float64)
        count = np.bincount(ids)
        total = np.bincount(ids, values)
        squares = np.bincount(ids, values * values)
        last = np.asarray(session.image.spatial_shape) - 1
        for entry in stats["labels"]:
            k = entry["label"]
            mean = total[k] / count[k]
            entry["mean"] = round(float(mean), 4)
            entry["sd"] = round(float(np.sqrt(max(squares[k] / count[k] - mean * mean, 0.0))), 4)
            box = entry["bbox_voxel"]
            entry["touches_border"] = bool(min(box["min"]) == 0 or (box["max"] == last).any())
    session.stats_cache = (session.version, stats)
    return stats


def stats_rows(stats: dict) -> list[list]:
    return [
        [e["label"], e["name"], e["voxels"], e["volume_ml"], e["mean"], e["sd"],
         "yes" if e["touches_border"] else ""]
        for e in stats["labels"]
    ]  # fmt: skip


def picture_file(session: Session, key: str, rgb: np.ndarray, workdir: str | Path) -> str:
    """Write ``rgb (h, w, 3)`` as a fast PNG (zlib level 1, about 10x faster than Gradio's
    default) in the session's render folder under ``workdir``; older files of ``key`` are
    removed so a session keeps at most :data:`KEEP_PICTURES` per plane on disk."""
    from PIL import Image

    if session.render_dir is None or not Path(session.render_dir).is_dir():
        session.render_dir = tempfile.mkdtemp(prefix="render-", dir=workdir)
        session.own_dirs.append(session.render_dir)
    session.render_count += 1
    path = Path(session.render_dir) / f"{key}-{session.render_count}.png"
    Image.fromarray(rgb).save(path, format="png", compress_level=1)
    written = session.rendered.setdefault(key, [])
    written.append(str(path))
    while len(written) > KEEP_PICTURES:
        Path(written.pop(0)).unlink(missing_ok=True)
    return str(path)
