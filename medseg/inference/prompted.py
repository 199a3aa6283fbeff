"""Prompted 3D segmentation of a Volume: user prompt -> display stack -> predictor -> label map.

The predictor works on a stack of displayed slices ``(S, H, W)``; this module owns the mapping
between the user's coordinates (display pixels or RAS millimetres, see
:mod:`medseg.transforms.planes`) and that stack, and puts the result back on the input grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from medseg.errors import InputError
from medseg.io.volume import Volume, VolumeHeader
from medseg.transforms.planes import PlaneView, world_to_voxel

from .interactive import StopRule

#: the stopping rule of prompted propagation: a direction also ends where LiteMedSAM's predicted
#: IoU drops below both 0.7 and 0.8x that of the slice it started from, or the mask grows over
#: 1.5x (bench/interactive.py: T12 leak 13,131 -> 877 voxels, Dice 0.354 -> 0.539; MNI brain
#: leak 4,828 -> 0; 0.7 alone stops at the key slice of a low-IoU object, 0.8x alone stops
#: early on a confident one)
DEFAULT_STOP = StopRule(min_iou=0.7, relative_iou=0.8, max_growth=1.5)


def default_rule(stop_at: tuple[int, int] | None) -> StopRule:
    """:data:`DEFAULT_STOP`, or "until the mask vanishes" within a slice range the user gave
    (``--slices``, a 3D box, the viewer's slices each way): the object's extent is known."""
    return DEFAULT_STOP if stop_at is None else StopRule()


@dataclass
class Prompt:
    """A prompt on one displayed slice.

    Attributes:
        axis: ``"axial" | "coronal" | "sagittal"``.
        slice_index: voxel index along the plane's slice axis.
        box: ``(x0, y0, x1, y1)`` display pixels (x = column, y = row, inclusive) or None.
        points: ``[(x, y, label)]`` display pixels, label 1 = foreground, 0 = background.
    """

    axis: str
    slice_index: int
    box: tuple[float, float, float, float] | None = None
    points: list[tuple[float, float, int]] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "axis": self.axis,
            "slice": self.slice_index,
            "box": None if self.box is None else [float(v) for v in self.box],
            "points": [[float(x), float(y), int(lab)] for x, y, lab in self.points],
            "coordinates": "display pixels (x = column, y = row) of the slice as displayed",
        }


def prompt_from_mm(
    volume: Volume,
    axis: str,
    *,
    box_mm: Sequence[float] | None = None,
    points_mm: Sequence[Sequence[float]] = (),
    slice_index: int | None = None,
) -> Prompt:
    """Convert RAS-mm prompts to a display :class:`Prompt`.

    ``box_mm`` is two opposite corners ``(x0, y0, z0, x1, y1, z1)``; ``points_mm`` entries are
    ``(x, y, z[, label])``. Without ``slice_index`` the slice is the nearest to the corners' (or
    first point's) position along the plane normal.
    """
    view = PlaneView.from_affine(volume.affine, volume.spatial_shape, axis)
    centres = []
    box = None
    if box_mm is not None:
        corners = world_to_voxel(volume.affine, np.asarray(box_mm, dtype=float).reshape(2, 3))
        disp = np.array([view.to_display(c) for c in corners])  # (2, 3): slice, row, col
        centres.append(disp[:, 0].mean())
        rows, cols = np.sort(disp[:, 1]), np.sort(disp[:, 2])
        box = (cols[0], rows[0], cols[1], rows[1])
    points = []
    for entry in points_mm:
        xyz, label = entry[:3], int(entry[3]) if len(entry) > 3 else 1
        s, r, c = view.to_display(world_to_voxel(volume.affine, np.asarray(xyz, dtype=float)))
        centres.append(s)
        points.append((c, r, label))
    if slice_index is None:
        if not centres:
            raise InputError("bad_prompt", "a millimetre prompt needs --box-mm or --point-mm")
        slice_index = int(round(float(np.mean(centres))))
        if not 0 <= slice_index < view.num_slices:
            raise InputError(
                "bad_prompt",
                f"the millimetre prompt lies outside the volume along the {axis} normal (its "
                f"slice would be {slice_index}, the volume has 0..{view.num_slices - 1}): give "
                "RAS millimetres of this scan (the viewer shows them under the cursor)",
            )
    return Prompt(axis=axis, slice_index=slice_index, box=box, points=points)


def validate_prompt(prompt: Prompt, view: PlaneView) -> Prompt:
    """Check a prompt against the slice grid; return it with the box clipped to the slice.

    A box that overlaps the slice is clipped to it (users draw boxes up to the edge); a box
    entirely outside, an inverted box, a point off the slice or a slice off the grid raises
    :class:`InputError` (code ``bad_prompt``).
    """
    s, h, w = view.num_slices, view.height, view.width
    if not 0 <= prompt.slice_index < s:
        raise InputError(
            "bad_prompt", f"--slice {prompt.slice_index} is outside 0..{s - 1} ({prompt.axis})"
        )
    if prompt.box is None and not prompt.points:
        raise InputError("bad_prompt", "give a prompt: --box x0,y0,x1,y1 and/or --point x,y")
    box = prompt.box
    if box is not None:
        x0, y0, x1, y1 = box
        if not (x0 < x1 and y0 < y1):
            raise InputError("bad_prompt", f"box {tuple(box)} needs x0 < x1 and y0 < y1")
        if x1 < 0 or y1 < 0 or x0 > w - 1 or y0 > h - 1:
            raise InputError(
                "bad_prompt",
                f"box {tuple(box)} is outside the {prompt.axis} slice (x 0..{w - 1}, y 0..{h - 1})",
            )
        box = (max(x0, 0.0), max(y0, 0.0), min(x1, w - 1.0), min(y1, h - 1.0))
    for x, y, label in prompt.points:
        if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
            raise InputError(
                "bad_prompt",
                f"point ({x}, {y}) is outside the {prompt.axis} slice (x 0..{w - 1}, y 0..{h - 1})",
            )
        if label not in (0, 1):
            raise InputError("bad_prompt", f"point label must be 1 (object) or 0, got {label}")
    return Prompt(prompt.axis, prompt.slice_index, box, list(prompt.points))


class PromptedVolume:
    """A volume cut along one plane and windowed for a SAM-family predictor: prompts in display
    pixels in, masks on the display stack out. The one prompted path of the CLI, the Python API
    and the viewer.

    Args:
        volume: a single-channel volume ``(X, Y, Z)`` (``multi_channel`` InputError otherwise).
        axis: ``"axial" | "coronal" | "sagittal"``.
        predictor: a predictor with ``set_stack``, ``stack``, ``predict`` and, optionally,
            ``follow`` (:class:`medseg.inference.litemedsam.LiteMedSAMPredictor`, DB-SAM's
            ``BoxPromptPredictor``; see :mod:`medseg.inference.interactive`); it receives the
            ``(S, H, W)`` uint8 display stack now.
        window: ``(level, width)`` for CT, or None for MedSAM's percentile clipping.
    """

    def __init__(
        self,
        volume: Volume,
        axis: str,
        predictor,
        *,
        window: tuple[float, float] | None = None,
    ) -> None:
        from medseg.inference.litemedsam import to_uint8
        from medseg.inference.memory import check_prompted

        check_single_channel_volume(volume)
        check_prompted(VolumeHeader.of(volume))  # not_enough_memory before any copy is made
        self.view = PlaneView.from_affine(volume.affine, volume.spatial_shape, axis)
        self.axis, self.window, self.predictor = axis, window, predictor
        stack = np.ascontiguousarray(to_uint8(self.view.stack(volume.array), window=window))
        predictor.set_stack(stack)

    @property
    def num_slices(self) -> int:
        return self.view.num_slices

    def check(self, prompt: Prompt) -> Prompt:
        """:func:`validate_prompt` on this plane (the prompt's axis must be this one)."""
        if prompt.axis != self.axis:
            raise InputError("bad_prompt", f"prompt on {prompt.axis}, volume cut {self.axis}")
        return validate_prompt(prompt, self.view)

    def predict(self, prompt: Prompt) -> tuple[np.ndarray, float]:
        """``(mask (H, W) bool, predicted IoU)`` on the prompt's slice (positive clicks without
        a box: :func:`medseg.inference.interactive.click_prompt`)."""
        from .interactive import predict_key

        return predict_key(self.predictor, self._key(prompt))

    def segment(
        self,
        prompts: Sequence[Prompt],
        *,
        stop_at: tuple[int, int] | None = None,
        rule: StopRule | None = None,
        between: str = "iou",
        propagate: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One object from prompts on one or more key slices of this plane (one prompt per
        slice): ``(masks (S, H, W) bool, predicted IoU (S,), NaN where not segmented)``, by
        :func:`medseg.inference.interactive.segment_keys` within ``stop_at`` (inclusive) and
        ``rule`` (default: :data:`DEFAULT_STOP`, or only "until the mask vanishes" within a
        ``stop_at`` the user gave: the object's extent is known there). Between two keys a
        slice keeps the prediction with the higher predicted IoU (``between="iou"``; measured
        against the nearer key's in bench/interactive.py: 0.439 vs 0.417 mean Dice)."""
        from .interactive import segment_keys

        keys = [self._key(p) for p in prompts]
        lo, hi = self._range(stop_at, [k.index for k in keys])
        rule = default_rule(stop_at) if rule is None else rule
        return segment_keys(self.predictor, keys, lo=lo, hi=hi, rule=rule, between=between,
                            propagate=propagate, progress=progress)  # fmt: skip

    def correct(
        self,
        masks: np.ndarray,
        ious: np.ndarray,
        prompt: Prompt,
        *,
        anchors: Sequence[int] = (),
        stop_at: tuple[int, int] | None = None,
        rule: StopRule | None = None,
    ) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """A correction (clicks and/or a box on one slice) of an object's ``masks``: new
        ``(masks, ious, changed slices)`` (:func:`medseg.inference.interactive.correct`);
        ``anchors``: the object's key slices, left as they are; ``rule`` as in :meth:`segment`."""
        from .interactive import correct

        key = self._key(prompt)
        lo, hi = self._range(stop_at, [key.index])
        rule = default_rule(stop_at) if rule is None else rule
        return correct(self.predictor, masks, ious, key, anchors=anchors, lo=lo, hi=hi, rule=rule)

    def _key(self, prompt: Prompt):
        from .interactive import Key

        prompt = self.check(prompt)
        return Key(prompt.slice_index, prompt.box, list(prompt.points))

    def _range(self, stop_at, indices: Sequence[int]) -> tuple[int, int]:
        for index in indices:
            check_stop_at(stop_at, index, self.num_slices, self.axis)
        return (0, self.num_slices - 1) if stop_at is None else (stop_at[0], stop_at[1])

    def labels(self, masks: np.ndarray, label: int = 1) -> np.ndarray:
        """Display-stack masks ``(S, H, W)`` -> labels ``(X, Y, Z)`` uint8/uint16 on the grid."""
        dtype = np.uint8 if label <= 255 else np.uint16
        return np.ascontiguousarray(self.view.unstack(masks.astype(dtype) * dtype(label)))


def check_single_channel_volume(volume: Volume) -> None:
    """Refuse (``multi_channel``) a volume with several channels: prompts need one image."""
    if volume.num_channels != 1:
        raise InputError(
            "multi_channel",
            f"{volume.num_channels} channels; choose one with --volume N (volume_index=N)",
            path=volume.meta.get("path"),
        )


def check_stop_at(stop_at: tuple[int, int] | None, key: int, count: int, axis: str) -> None:
    """Refuse (``bad_prompt``) a propagation range that does not hold the prompted slice."""
    if stop_at is not None and not 0 <= stop_at[0] <= key <= stop_at[1] < count:
        raise InputError(
            "bad_prompt",
            f"--slices {stop_at[0]},{stop_at[1]} must satisfy 0 <= LO <= the prompted slice "
            f"({key}) <= HI <= {count - 1} ({axis})",
        )


def segment_with_prompt(
    volume: Volume,
    prompt: Prompt,
    predictor,
    *,
    window: tuple[float, float] | None = None,
    label: int = 1,
    propagate: bool = True,
    stop_at: tuple[int, int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Segment one object from ``prompt`` and return labels ``(X, Y, Z)`` uint8/uint16.

    Args:
        volume: a single-channel volume ``(X, Y, Z)``.
        prompt: the user's prompt in display coordinates.
        predictor: a :class:`medseg.inference.litemedsam.LiteMedSAMPredictor` (or another
            predictor :class:`PromptedVolume` accepts).
        window: ``(level, width)`` for CT, or None for MedSAM's percentile clipping.
        label: the label value written for the object.
        propagate: segment through the volume (True) or the prompted slice only.
        stop_at: ``(lo, hi)`` inclusive voxel range along the plane's slice axis that
            propagation stays within (``InputError`` unless ``lo <= slice <= hi``).
        progress: called with the number of slices done.

    Raises:
        InputError: ``not_enough_memory`` when the work on this volume would not fit
            (:func:`medseg.inference.memory.check_prompted`), ``multi_channel``, ``bad_prompt``.
    """
    check_single_channel_volume(volume)
    view = PlaneView.from_affine(volume.affine, volume.spatial_shape, prompt.axis)
    prompt = validate_prompt(prompt, view)
    check_stop_at(stop_at, prompt.slice_index, view.num_slices, prompt.axis)
    prompted = PromptedVolume(volume, prompt.axis, predictor, window=window)
    masks, _ = prompted.segment([prompt], stop_at=stop_at, propagate=propagate, progress=progress)
    return prompted.labels(masks, label)
