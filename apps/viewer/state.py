"""Per-user viewer state: one :class:`Session` per browser tab, kept in a ``gr.State``.

Nothing here is shared between sessions: the image may be the same read-only ``Volume`` object
for every session opened on the command-line PATH, but labels, prompts, history, predictor
(with its embedding cache) and exports are created per session.

Label convention: ``labels`` is one ``(X, Y, Z)`` uint16 map on the image grid holding loaded or
automatic labels and prompted objects alike; a prompted object owns one label id and writes
only over background and its own voxels (it never erases another label).
"""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medseg.inference.memory import viewer_session_need
from medseg.io.volume import Volume, VolumeHeader
from medseg.transforms.planes import AXES, PlaneView
from medseg.viz import LabelStyle, Viewport

from .budget import BUDGET

HISTORY_DEPTH = 10  # undo steps kept per session
MODES = ("crosshair", "point +", "point -", "box")


@dataclass
class ObjectPrompt:
    """The prompts of one object on its current slice (display pixels, x = column, y = row).

    A prompt on another slice or plane starts a new key slice for the object; voxels already
    segmented elsewhere stay until a propagation overwrites them. ``keys``: once the object
    was propagated, the slices of plane ``axis`` its mask came from; a prompt on that plane is
    then a correction (the slice and its neighbours re-segmented while they change);
    ``ious``: LiteMedSAM's predicted IoU per slice of that plane (NaN where not segmented),
    which corrections use to stop where the old mask was rated better.
    """

    label: int
    name: str
    axis: str | None = None
    slice_index: int | None = None
    box: tuple[float, float, float, float] | None = None
    points: list[tuple[float, float, int]] = field(default_factory=list)
    keys: list[int] = field(default_factory=list)
    ious: np.ndarray | None = None

    def move_to(self, axis: str, slice_index: int) -> None:
        """Start a fresh key slice (drops the old prompts) unless it is the current one."""
        if axis != self.axis:
            self.keys, self.ious = [], None  # corrections: on the plane it was propagated on
        if (axis, slice_index) != (self.axis, self.slice_index):
            self.axis, self.slice_index, self.box, self.points = axis, slice_index, None, []

    @property
    def has_prompt(self) -> bool:
        return self.axis is not None and (self.box is not None or bool(self.points))


@dataclass
class Snapshot:
    """What undo restores: labels ``(X, Y, Z)``, names, objects and the active object."""

    labels: np.ndarray
    names: dict[int, str]
    objects: dict[int, ObjectPrompt]
    active: int | None


@dataclass
class Session:
    """Everything one user has open.

    Attributes:
        image: ``(X, Y, Z)`` float32 volume that is displayed and prompted.
        source: the volume as loaded (``(C, X, Y, Z)`` for multi-channel files), for models.
        name: short name of the input, used for export file names.
        labels: ``(X, Y, Z)`` uint16 label map on the image grid.
        names: label id -> name (legend, statistics, export).
        base_labels, base_names: what :func:`reset` returns to (the opened label file or empty).
        objects: prompted objects by label id; ``active`` is the one new prompts go to.
        channel: which channel of ``source`` is ``image``.
        crosshair: voxel index ``(i, j, k)`` shown by all three planes.
        window: ``(level, width)`` for display and for the model's input; ``preset`` its name.
        zoom, size: crop factor and rendered size of the longer side of each plane (pixels).
        mode: one of :data:`MODES`; ``pending`` holds the first corner ``(axis, slice, row, col)``
            of a box being drawn.
        style: overlay opacity, visible ids, outline.
        history: undo snapshots, oldest first (at most :data:`HISTORY_DEPTH`).
        predictor, predictor_key, prompted: this session's LiteMedSAM segmenter
            (:meth:`medseg.api.Segmenter.fork`), the ``(axis, level, width)`` its stack was
            built for and the :class:`~medseg.inference.prompted.PromptedVolume` holding it.
        restored: the restoration result, or None: on the image grid, or on a finer grid over
            the same box (super-resolution; see :mod:`apps.viewer.grids`).
        viewports: the last rendered :class:`Viewport` of each plane (maps clicks back).
        render_dir, render_count, rendered: this session's picture files (see
            :func:`apps.viewer.render.picture_file`).
        own_dirs: folders this session wrote (pictures, exports); :func:`discard` removes them.
        version, stats_cache: edit counter and the statistics computed at a version.
        range_cache: ``(channel, min, max)`` of the displayed channel.
    """

    image: Volume
    source: Volume
    name: str
    labels: np.ndarray
    names: dict[int, str]
    base_labels: np.ndarray
    base_names: dict[int, str]
    crosshair: tuple[int, int, int]
    window: tuple[float, float]
    preset: str
    objects: dict[int, ObjectPrompt] = field(default_factory=dict)
    active: int | None = None
    channel: int = 0
    zoom: float = 1.0
    size: int = 384
    mode: str = "crosshair"
    pending: tuple[str, int, int, int] | None = None
    style: LabelStyle = LabelStyle()
    history: list[Snapshot] = field(default_factory=list)
    predictor: Any = None
    predictor_key: tuple | None = None
    prompted: Any = None
    restored: Volume | None = None
    viewports: dict[str, Viewport] = field(default_factory=dict)
    views: dict[str, PlaneView] = field(default_factory=dict)
    render_dir: str | None = None
    render_count: int = 0
    rendered: dict[str, list[str]] = field(default_factory=dict)
    own_dirs: list[str] = field(default_factory=list)
    version: int = 0
    stats_cache: tuple[int, dict] | None = None
    range_cache: tuple[int, float, float] | None = None

    def __post_init__(self) -> None:
        shape = self.image.spatial_shape
        self.views = {a: PlaneView.from_affine(self.image.affine, shape, a) for a in AXES}

    # geometry ------------------------------------------------------------------------------
    def slice_of(self, axis: str) -> int:
        """Displayed slice index of ``axis`` at the crosshair."""
        return int(round(self.views[axis].to_display(np.asarray(self.crosshair))[0]))

    def set_slice(self, axis: str, index: int) -> None:
        """Move the crosshair along ``axis``'s slice axis (clamped to the grid)."""
        view = self.views[axis]
        ijk = list(self.crosshair)
        ijk[view.slice_axis] = int(np.clip(int(index), 0, view.num_slices - 1))
        self.crosshair = tuple(ijk)  # type: ignore[assignment]

    def set_crosshair(self, axis: str, row: int, col: int) -> None:
        """Put the crosshair on pixel ``(row, col)`` of ``axis``'s current slice."""
        ijk = self.views[axis].to_voxel(self.slice_of(axis), row, col)
        hi = np.asarray(self.image.spatial_shape) - 1
        self.crosshair = tuple(int(v) for v in np.clip(np.rint(ijk), 0, hi))  # type: ignore

    def value_range(self) -> tuple[float, float]:
        """``(min, max)`` of the displayed channel (cached per channel)."""
        if self.range_cache is None or self.range_cache[0] != self.channel:
            array = self.image.array
            self.range_cache = (self.channel, float(array.min()), float(array.max()))
        return self.range_cache[1], self.range_cache[2]

    # labels and objects --------------------------------------------------------------------
    def next_label(self) -> int:
        used = [int(self.labels.max()), *self.objects, *self.names]
        return max(used, default=0) + 1

    def new_object(self, name: str | None = None) -> ObjectPrompt:
        """Create an object with a fresh label id and make it active."""
        label = self.next_label()
        if label > np.iinfo(np.uint16).max:
            raise ValueError("no label ids left")
        obj = ObjectPrompt(label=label, name=name or f"object {label}")
        self.objects[label] = obj
        self.names[label] = obj.name
        self.active = label
        return obj

    def active_object(self) -> ObjectPrompt:
        """The active object, created on first use."""
        if self.active is None or self.active not in self.objects:
            return self.new_object()
        return self.objects[self.active]

    # undo / reset --------------------------------------------------------------------------
    def checkpoint(self) -> None:
        """Remember the current labels and prompts (call before every edit)."""
        self.version += 1
        self.history.append(
            Snapshot(self.labels.copy(), dict(self.names), copy.deepcopy(self.objects), self.active)
        )
        del self.history[:-HISTORY_DEPTH]

    def undo(self) -> bool:
        """Go back one edit; False when there is nothing to undo."""
        if not self.history:
            return False
        self.version += 1
        snap = self.history.pop()
        self.labels, self.names, self.objects, self.active = (
            snap.labels,
            snap.names,
            snap.objects,
            snap.active,
        )
        self.pending = None
        return True

    def reset(self) -> None:
        """Drop every prompted object and edit (undoable): back to the opened labels."""
        self.checkpoint()
        self.labels = self.base_labels.copy()
        self.names = dict(self.base_names)
        self.objects, self.active, self.pending = {}, None, None


def discard(session: Session | None) -> None:
    """Delete the files a session wrote (``gr.State`` calls this when the session ends)."""
    if session is None:
        return
    for folder in session.own_dirs:
        shutil.rmtree(folder, ignore_errors=True)
    session.own_dirs.clear()
    session.render_dir, session.rendered, session.predictor = None, {}, None
    session.prompted = None


def new_session(
    source: Volume,
    name: str,
    *,
    labels: np.ndarray | None = None,
    names: dict[int, str] | None = None,
    window: tuple[float, float],
    preset: str,
) -> Session:
    """A session on ``source`` (``(X, Y, Z)`` or ``(C, X, Y, Z)``; channel 0 is displayed).

    Reserves the session's memory in the viewer's budget (:mod:`apps.viewer.budget`) until the
    session is garbage collected; ``InputError`` (``not_enough_memory``) when it does not fit.
    """
    image = source if source.array.ndim == 3 else source.with_array(source.array[0])
    shape = image.spatial_shape
    need = viewer_session_need(VolumeHeader.of(image), loaded=True)
    reservation = BUDGET.reserve(need, what="a viewer session", path=source.meta.get("path"))
    try:
        base = np.zeros(shape, np.uint16) if labels is None else labels.astype(np.uint16)
        base_names = dict(names or {})
        session = Session(
            image=image,
            source=source,
            name=name,
            labels=base.copy(),
            names=dict(base_names),
            base_labels=base,
            base_names=base_names,
            crosshair=tuple(s // 2 for s in shape),  # type: ignore[arg-type]
            window=window,
            preset=preset,
        )
    except BaseException:
        reservation.release()
        raise
    reservation.bind(session)
    return session
