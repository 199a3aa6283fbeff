"""What each user action does to a :class:`~apps.viewer.state.Session` (no Gradio layout here).

Every function takes the session (and plain values), changes it in place and returns a short
status line; :mod:`apps.viewer.app` wires them to components and re-renders. Errors that are
the user's (bad file, prompt off the slice, no model) reach the page as ``gr.Error`` with one
line; the server keeps running. Tests call these functions directly.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.inference.prompted import Prompt, validate_prompt
from medseg.io.volume import Volume
from medseg.viz import WINDOW_PRESETS, LabelStyle, percentile_window

from . import grids, opening
from .models import ModelHub
from .prompting import correct_object, prompted_volume
from .render import present_labels, statistics
from .state import MODES, Session, new_session

PRESET_CHOICES = ["auto", *WINDOW_PRESETS, "manual"]


def user_errors(fn: Callable) -> Callable:
    """Turn medseg errors and bad values into a one-line ``gr.Error`` (no traceback shown)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import gradio as gr

        try:
            return fn(*args, **kwargs)
        except MedsegError as err:
            raise gr.Error(str(err), print_exception=False) from err
        except ValueError as err:
            raise gr.Error(str(err).splitlines()[0], print_exception=False) from err

    return wrapper


def require(session: Session | None) -> Session:
    if session is None:
        raise ValueError("open a volume first")
    return session


# opening ----------------------------------------------------------------------------------------
@user_errors
def open_file(path: str | None, workdir: str, names: dict[int, str] | None = None) -> Session:
    """A new session on the image at ``path`` (upload or server path already checked)."""
    if not path:
        raise ValueError("choose a file to open")
    source = opening.open_image(path, workdir)
    preset, window = opening.default_window(source.array)
    name = Path(path).name.split(".")[0] or "image"
    names = names if names is not None else opening.label_names_near(path)
    return new_session(source, name, names=names, window=window, preset=preset)


@user_errors
def open_server_path(text: str, root: str | None, workdir: str) -> Session:
    """Open a path typed on the page; only paths inside ``root`` are allowed."""
    return open_file(str(opening.resolve_under_root(text, root)), workdir)


@user_errors
def open_label_file(session: Session | None, path: str | None) -> str:
    """Show a label map (same grid as the image) or read names from a ``dataset.json``."""
    session = require(session)
    if not path:
        raise ValueError("choose a label file")
    if Path(path).name.lower().endswith(".json"):
        names = opening.read_label_names(path)
        session.names.update(names)
        session.base_names.update(names)
        session.version += 1
        return f"label names read from {Path(path).name}"
    labels = opening.open_labels(path, session.image)
    session.checkpoint()
    session.labels = labels.array.astype(np.uint16)
    session.base_labels = session.labels.copy()
    carried = labels.meta.get("label_names", {})  # SEG, .seg.nrrd, NIfTI label table
    session.names = {**opening.label_names_near(path), **session.names, **carried}
    session.base_names = dict(session.names)
    session.objects, session.active = {}, None
    return f"labels {Path(path).name}: {len(np.unique(session.labels)) - 1} label(s)"


# display ----------------------------------------------------------------------------------------
@user_errors
def set_slice(session: Session | None, axis: str, index: float) -> None:
    require(session).set_slice(axis, int(index))


@user_errors
def set_channel(session: Session | None, channel: int) -> None:
    """Show (and prompt on) channel ``channel`` of a multi-channel image; models still get all."""
    session = require(session)
    count = session.source.num_channels
    if not 0 <= int(channel) < count:
        raise ValueError(f"channel {channel} is outside 0..{count - 1}")
    if count > 1:
        session.image = session.source.with_array(session.source.array[int(channel)])
    session.channel, session.predictor_key = int(channel), None
    session.restored = None
    if session.preset == "auto":
        session.window = percentile_window(session.image.array)


@user_errors
def set_preset(session: Session | None, preset: str) -> tuple[float, float]:
    """Apply a window preset (``auto`` = 0.5-99.5 percentiles); returns ``(level, width)``."""
    session = require(session)
    if preset == "auto":
        session.window = percentile_window(session.image.array)
    elif preset in WINDOW_PRESETS:
        session.window = WINDOW_PRESETS[preset]
    elif preset != "manual":
        raise ValueError(f"unknown window preset {preset!r}")
    session.preset = preset
    return session.window


@user_errors
def set_window(session: Session | None, level: float, width: float) -> None:
    session = require(session)
    if not width > 0:
        raise ValueError(f"window width must be > 0, got {width}")
    session.window, session.preset = (float(level), float(width)), "manual"


@user_errors
def set_view(
    session: Session | None, zoom: float, opacity: float, outline: bool, hidden: list[int]
) -> None:
    """Zoom and overlay style; ``hidden`` lists label ids not to draw."""
    session = require(session)
    session.zoom = float(zoom)
    present = set(present_labels(session))
    visible = None if not hidden else frozenset(present - {int(h) for h in hidden})
    session.style = LabelStyle(opacity=float(opacity), visible=visible, outline=bool(outline))


# clicks and prompts -----------------------------------------------------------------------------
@user_errors
def click(session: Session | None, axis: str, x: float, y: float, hub: ModelHub) -> str:
    """A click at picture pixel ``(x, y)`` of ``axis``, interpreted by ``session.mode``."""
    session = require(session)
    if session.mode not in MODES:
        raise ValueError(f"unknown mode {session.mode!r}")
    viewport = session.viewports.get(axis)
    if viewport is None:
        raise ValueError("the plane has not been drawn yet")
    row, col = viewport.to_slice(x, y)
    s = session.slice_of(axis)
    if session.mode == "crosshair":
        session.set_crosshair(axis, row, col)
        return ""
    if session.mode == "box":
        if session.pending is None or session.pending[:2] != (axis, s):
            session.pending = (axis, s, row, col)
            return "box: click the opposite corner"
        _, _, r0, c0 = session.pending
        session.pending = None
        box = (min(c0, col), min(r0, row), max(c0, col), max(r0, row))
        return add_prompt(session, hub, axis, s, box=box)
    label = 1 if session.mode == "point +" else 0
    return add_prompt(session, hub, axis, s, point=(col, row, label))


@user_errors
def prompt_text(session: Session | None, text: str, hub: ModelHub) -> str:
    """Typed prompt: ``AXIS SLICE box X0 Y0 X1 Y1`` or ``AXIS SLICE point X Y [+|-]``
    (display pixels of that slice, x = column, y = row)."""
    session = require(session)
    words = text.replace(",", " ").split()
    try:
        axis, s, kind, *rest = words
        if axis not in session.views:
            raise ValueError
        if kind == "box" and len(rest) == 4:
            return add_prompt(session, hub, axis, int(s), box=tuple(float(v) for v in rest))
        if kind == "point" and len(rest) in (2, 3):
            label = 0 if rest[2:] == ["-"] else 1
            return add_prompt(session, hub, axis, int(s), point=(*map(float, rest[:2]), label))
    except ValueError:
        pass
    raise ValueError(f"cannot read prompt {text!r}: use 'axial 12 box 10 20 60 80' or "
                     "'axial 12 point 30 40 -'")  # fmt: skip


def add_prompt(
    session: Session,
    hub: ModelHub,
    axis: str,
    slice_index: int,
    *,
    box: tuple[float, float, float, float] | None = None,
    point: tuple[float, float, int] | None = None,
) -> str:
    """Add a box or point to the active object on ``(axis, slice)`` and segment that slice."""
    session.checkpoint()
    obj = session.active_object()
    obj.move_to(axis, int(slice_index))
    if box is not None:
        obj.box = tuple(float(v) for v in box)  # type: ignore[assignment]
    if point is not None:
        obj.points.append((float(point[0]), float(point[1]), int(point[2])))
    view = session.views[axis]
    try:
        prompt = validate_prompt(Prompt(axis, obj.slice_index, obj.box, obj.points), view)
    except MedsegError:
        session.undo()
        raise
    if obj.keys and (view.stack(session.labels) == obj.label).any():
        return correct_object(session, hub, obj, prompt)
    mask, iou = prompted_volume(session, hub, axis).predict(prompt)
    plane = view.stack(session.labels)[prompt.slice_index]  # a writable view of the labels
    plane[plane == obj.label] = 0
    plane[mask & (plane == 0)] = obj.label
    return f"{obj.name}: {int(mask.sum())} pixels on {axis} slice {obj.slice_index} (IoU {iou:.2f})"


@user_errors
def propagate(
    session: Session | None, hub: ModelHub, each_way: int, progress: Callable | None = None
) -> str:
    """Propagate the active object from its key slice, at most ``each_way`` slices up and down."""
    session = require(session)
    obj = session.objects.get(session.active) if session.active is not None else None
    if obj is None or not obj.has_prompt:
        raise ValueError("prompt an object on a slice first (box or points)")
    view = session.views[obj.axis]
    prompt = validate_prompt(Prompt(obj.axis, obj.slice_index, obj.box, obj.points), view)
    key, n = prompt.slice_index, max(int(each_way), 0)
    stop_at = (max(key - n, 0), min(key + n, view.num_slices - 1))
    total = stop_at[1] - stop_at[0] + 1
    report = None if progress is None else (lambda done: progress(done / total))
    masks, ious = prompted_volume(session, hub, obj.axis).segment([prompt], stop_at=stop_at,
                                                            progress=report)  # fmt: skip
    session.checkpoint()
    obj.keys, obj.ious = [key], ious
    stack = view.stack(session.labels)
    stack[stack == obj.label] = 0
    stack[masks & (stack == 0)] = obj.label
    slices = int(masks.reshape(len(masks), -1).any(axis=1).sum())
    return f"{obj.name}: propagated over {slices} {obj.axis} slice(s)"


# objects, undo, reset ---------------------------------------------------------------------------
@user_errors
def new_object(session: Session | None, name: str = "") -> str:
    session = require(session)
    session.checkpoint()
    obj = session.new_object(name.strip() or None)
    return f"new object {obj.label}: {obj.name}"


@user_errors
def select_object(session: Session | None, label: int | None) -> None:
    session = require(session)
    if label is not None and int(label) in session.objects:
        session.active = int(label)


@user_errors
def undo(session: Session | None) -> str:
    return "undone" if require(session).undo() else "nothing to undo"


@user_errors
def reset(session: Session | None) -> str:
    require(session).reset()
    return "prompts and edits cleared (undo brings them back)"


# models -----------------------------------------------------------------------------------------
@user_errors
def auto_segment(session: Session | None, hub: ModelHub, name: str) -> str:
    """Replace the label map by the automatic segmentation of model ``name`` (undoable)."""
    session = require(session)
    if name not in hub.segmenters:
        raise ValueError(f"no segmentation model {name!r}")
    model = hub.segmenters[name]
    out = model.segment(session.source)
    session.checkpoint()
    session.labels = np.asarray(out.labels.array).astype(np.uint16)
    session.names = {int(k): str(v) for k, v in model.label_names.items()}
    session.objects, session.active = {}, None
    return f"{name}: {len(np.unique(session.labels)) - 1} label(s)"


@user_errors
def restore(session: Session | None, hub: ModelHub, name: str) -> str:
    """Restore the displayed channel with model ``name``; the result may lie on a finer grid
    over the same box (super-resolution), see :mod:`apps.viewer.grids`."""
    session = require(session)
    if name not in hub.restorers:
        raise ValueError(f"no restoration model {name!r}")
    result = hub.restorers[name](session.image)
    grids.check_restored(session.image, result, name)
    session.restored = result
    if grids.same_grid(session.image, result):
        return f"{name}: restored (before | after)"
    spacing = "x".join(f"{v:.3g}" for v in result.spacing)
    shape = "x".join(map(str, result.spatial_shape))
    return f"{name}: restored on its own grid, {shape} voxels of {spacing} mm (before | after)"


# export -----------------------------------------------------------------------------------------
@user_errors
def export(
    session: Session | None, out_root: str, formats: str | Sequence[str] = "nifti"
) -> list[str]:
    """Write the label map in each of ``formats`` (:mod:`medseg.api.exports`: NIfTI on the
    image grid, DICOM SEG / RTSTRUCT against a DICOM image, 3D Slicer ``.seg.nrrd``),
    statistics (CSV, JSON) and the restored image when there is one (NIfTI on its own grid);
    return the paths."""
    from medseg.api import exports
    from medseg.api.outputs import write_outputs

    session = require(session)
    formats = exports.parse_formats(formats)
    exports.check_sources(formats, session.image)
    folder = Path(tempfile.mkdtemp(prefix="export-", dir=out_root))
    session.own_dirs.append(str(folder))
    dtype = np.uint8 if int(session.labels.max()) <= 255 else np.uint16
    stats = dict(statistics(session))
    stats["source"] = session.name
    stats["note"] = "research use, not a medical device"
    table = io.StringIO()
    writer = csv.writer(table)
    columns = ["label", "name", "voxels", "volume_ml", "mean", "sd", "touches_border"]
    writer.writerow(columns)
    for e in stats["labels"]:
        writer.writerow([e[c] for c in columns])
    label_path = folder / f"{session.name}_labels.nii.gz"
    labels = session.image.with_array(session.labels.astype(dtype))
    infos = exports.labels_of(labels, session.names)
    files: dict[Path, Volume | bytes] = {}
    for fmt in formats:
        path = (
            label_path if fmt == "nifti" else folder / exports.format_files(session.name, [fmt])[0]
        )
        files[path] = exports.encode(
            fmt, labels, session.image, infos, model="viewer", automatic=False
        )
    files.update(
        {
            folder / f"{session.name}_stats.csv": table.getvalue().encode("utf-8"),
            folder / f"{session.name}_stats.json": json.dumps(stats, indent=2).encode("utf-8"),
        }
    )
    if session.restored is not None:
        files[folder / f"{session.name}_restored.nii.gz"] = session.restored
    source = session.image.meta.get("path")
    nifti = [label_path] if "nifti" in formats else []
    paths = write_outputs(files, protect=[source] if source else (), labels=nifti)
    return [str(p) for p in paths]
