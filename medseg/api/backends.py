"""The three ways :class:`medseg.api.Segmenter` segments, each loading its model on demand.

- :class:`PromptedBackend`: LiteMedSAM (shipped or user weights) or a fine-tuned DB-SAM; a box
  and/or points on one slice, propagated through the volume (:class:`PromptedVolume`).
- :class:`SupportBackend`: SAM2-SGP, prompt-free, guided by image/label pairs in a folder.
- :class:`AutomaticBackend`: a ``medseg fit`` segmentation checkpoint, every trained label, by
  sliding windows on the training preprocessing.

Each has ``load()`` (idempotent; :class:`~medseg.errors.ModelError`, exit 4, on a bad model),
``model`` (the provenance string of the report) and a ``memory_guard`` for ``load_volume``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from medseg.io.volume import Volume

__all__ = ["AutomaticBackend", "PromptedBackend", "SupportBackend"]

PathLike = str | os.PathLike[str]
Progress = Callable[[int], None] | None


class PromptedBackend:
    """Box/point prompts on one slice: LiteMedSAM (``model="litemedsam"``) or DB-SAM."""

    def __init__(
        self,
        model: str,
        checkpoint: PathLike | None,
        *,
        device: str,
        precision: str,
        trusted: bool,
        cache_slices: int = 256,
        runtime: str = "auto",
    ) -> None:
        self.name, self.checkpoint = model, checkpoint
        self.device, self.precision, self.trusted = device, precision, trusted
        self.runtime = runtime
        self.cache_slices = cache_slices
        self.predictor: Any = None

    @property
    def model(self) -> str:
        return self.name if self.checkpoint is None else f"{self.name}:{self.checkpoint}"

    def memory_guard(self) -> Callable:
        from medseg.inference.memory import prompted_guard

        return prompted_guard()

    def load(self) -> None:
        if self.predictor is not None:
            return
        from medseg.inference.device import resolve_device

        device = resolve_device(self.device)
        if self.name == "db_sam":
            from medseg.inference.sam_family import BoxPromptPredictor, load_promptable_net

            net = load_promptable_net(
                "db_sam", self.checkpoint, device=device, trusted=self.trusted
            )
            self.predictor = BoxPromptPredictor(net, device=device)
            return
        from medseg.inference.litemedsam import LiteMedSAMPredictor
        from medseg.models.litemedsam import load_litemedsam

        net = load_litemedsam(self.checkpoint, device=device)
        self.predictor = LiteMedSAMPredictor(
            net, device=device, precision=self.precision, cache_slices=self.cache_slices,
            runtime=self.runtime,
        )  # fmt: skip

    def fork(self, cache_slices: int | None = None) -> PromptedBackend:
        """A backend sharing the loaded weights, with its own slices and embedding cache
        (``cache_slices`` embeddings; default: this backend's)."""
        self.load()
        cache = self.cache_slices if cache_slices is None else int(cache_slices)
        twin = PromptedBackend(
            self.name, self.checkpoint, device=self.device, precision=self.precision,
            trusted=self.trusted, cache_slices=cache, runtime=self.runtime,
        )  # fmt: skip
        fork = getattr(self.predictor, "fork", None)
        if fork is None:
            raise ValueError(f"{self.name} predictors cannot be shared between sessions")
        twin.predictor = fork()
        if hasattr(twin.predictor, "cache_slices"):
            twin.predictor.cache_slices = max(cache, getattr(twin.predictor, "batch_size", 1))
        return twin

    def prompt_volume(self, volume: Volume, axis: str, window):
        """A :class:`medseg.inference.prompted.PromptedVolume` on this backend's predictor."""
        from medseg.inference.prompted import PromptedVolume

        self.load()
        return PromptedVolume(volume, axis, self.predictor, window=window)

    def run(self, volume: Volume, axis: str, plans, *, window, propagate: bool,
            progress: Progress) -> tuple[np.ndarray, list[str]]:  # fmt: skip
        """``(labels (X, Y, Z), warnings)`` of the planned objects
        (:class:`medseg.api.planning.ObjectPlan`, already checked): each from its key slices,
        then its corrections; overlaps go to the higher predicted IoU."""
        from medseg.inference.interactive import merge_objects

        prompted = self.prompt_volume(volume, axis, window)
        tracks, notes, offset = [], [], 0
        for plan in plans:
            report = None if progress is None else (lambda n, o=offset: progress(o + n))
            masks, ious = prompted.segment(plan.keys, stop_at=plan.stop_at, propagate=propagate,
                                           progress=report)  # fmt: skip
            anchors = [k.slice_index for k in plan.keys]
            for fix in plan.corrections:
                masks, ious, _ = prompted.correct(masks, ious, fix, anchors=anchors,
                                                  stop_at=plan.stop_at)  # fmt: skip
                anchors.append(fix.slice_index)
            offset += int(masks.reshape(len(masks), -1).any(1).sum())
            notes += _empty_keys(plan, masks)
            tracks.append((plan.label, masks, ious))
        merged = merge_objects(tracks)
        return np.ascontiguousarray(prompted.view.unstack(merged)), notes


def _empty_keys(plan, masks: np.ndarray) -> list[str]:
    """A warning per key slice where the object's mask is empty, with what to try."""
    return [
        f"{plan.name} (label {plan.label}): the prompt on {k.axis} slice {k.slice_index} gave "
        "an empty mask; draw a box around the object (LiteMedSAM was trained with boxes) or "
        "add a positive click inside it"
        for k in plan.keys
        if not masks[k.slice_index].any()
    ]


class SupportBackend:
    """SAM2-SGP: prompt-free, guided by the slices of ``support`` holding ``support_label``."""

    def __init__(
        self,
        checkpoint: PathLike | None,
        *,
        support: PathLike,
        support_label: int,
        support_size: int | None,
        bank_size: int,
        device: str,
        trusted: bool,
    ) -> None:
        self.checkpoint, self.support, self.support_label = checkpoint, support, support_label
        self.support_size, self.bank_size = support_size, bank_size
        self.device, self.trusted = device, trusted
        self.net: Any = None

    @property
    def model(self) -> str:
        return f"sam2_sgp:{self.checkpoint}"

    def memory_guard(self) -> Callable:
        from medseg.inference.memory import prompted_guard

        return prompted_guard()

    def check(self) -> None:
        """Refuse (before the model loads) a support folder without pairs, or whose files are
        not regular files (a FIFO or a device would hang or exhaust the reader)."""
        from medseg.files import check_regular_file
        from medseg.inference.sam_family import support_pairs

        for pair in support_pairs(self.support):
            for path in pair:
                check_regular_file(path, what="support file")

    def load(self) -> None:
        if self.net is not None:
            return
        from medseg.inference.device import resolve_device
        from medseg.inference.sam_family import check_single_channel, load_promptable_net

        self.device = resolve_device(self.device)
        net = load_promptable_net(
            "sam2_sgp", self.checkpoint, device=self.device, trusted=self.trusted
        )
        check_single_channel(net)
        self.net = net

    def run(self, volume: Volume, *, axis: str, window, label: int,
            progress: Progress) -> tuple[np.ndarray, dict[str, Any]]:  # fmt: skip
        """``(labels (X, Y, Z), report fields)``."""
        from medseg.inference.litemedsam import to_uint8
        from medseg.inference.sam_family import SupportPredictor, load_support_slices
        from medseg.transforms.planes import PlaneView

        self.load()
        images, masks = load_support_slices(
            self.support, axis, label=self.support_label, window=window
        )
        predictor = SupportPredictor(
            self.net, device=self.device, support_size=self.support_size,
            bank_size=self.bank_size,
        )  # fmt: skip
        used = predictor.set_support(images, masks)
        view = PlaneView.from_affine(volume.affine, volume.spatial_shape, axis)
        stack = np.ascontiguousarray(to_uint8(view.stack(volume.array), window=window))
        mask = predictor.segment_stack(stack, progress=progress)
        dtype = np.uint8 if label <= 255 else np.uint16
        labels = np.ascontiguousarray(view.unstack(mask.astype(dtype) * dtype(label)))
        k = self.support_size or int(self.net.support_size)
        support = {"folder": str(self.support), "slices": used, "label": self.support_label,
                   "per_slice": min(k, used)}  # fmt: skip
        return labels, {"support": support}


class AutomaticBackend:
    """A ``medseg fit`` segmentation checkpoint (see
    :class:`medseg.inference.automatic.AutomaticSegmenter` for the options)."""

    def __init__(self, checkpoint: PathLike, *, trusted: bool, **options: Any) -> None:
        self.checkpoint, self.trusted, self.options = checkpoint, trusted, options
        self.segmenter: Any = None

    @property
    def model(self) -> str:
        return f"segmentation:{self.checkpoint}"

    @property
    def label_names(self) -> dict[int, str]:
        self.load()
        return self.segmenter.label_names

    def memory_guard(self, probabilities: bool = False) -> Callable:
        self.load()
        return self.segmenter.memory_guard(probabilities=probabilities)

    def load(self) -> None:
        if self.segmenter is None:
            from medseg.inference.automatic import AutomaticSegmenter

            self.segmenter = AutomaticSegmenter.from_checkpoint(
                self.checkpoint, trusted=self.trusted, **self.options
            )

    def run(self, volume: Volume, *, probabilities: bool, progress: bool = False):
        """``(labels (X, Y, Z), probabilities Volume or None, report fields)``."""
        self.load()
        self.segmenter.progress = progress
        result = self.segmenter.segment(volume, probabilities=probabilities)
        details = {
            "inference": result.info,
            "channel_names": self.segmenter.preprocessing["channel_names"],
        }
        return np.asarray(result.labels.array), result.probabilities, details
