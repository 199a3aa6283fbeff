"""``medseg.restore`` and :class:`Restorer`: denoise, super-resolve or translate a volume with a
``medseg fit`` restoration checkpoint (RAT, DISGAN), in the input's units; without a checkpoint,
denoise with a classical method (DIPY's non-local means by default, ``method="mppca"`` for 4-D
series; :mod:`medseg.inference.classical`) or super-resolve a thick-slice volume through-plane
with a net trained on the volume itself (``method="self-sr"``; :mod:`medseg.inference.self_sr`).

Geometry: denoising keeps the input grid exactly; super-resolution by ``s`` gives ``s`` times
the voxels (``1/s`` the spacing) along the upsampled axes over the same physical box and
direction (see :func:`medseg.inference.restoration.super_resolved_affine`). Errors as
:mod:`medseg.api.segmenter`: InputError (exit 2), OutputError (3), ModelError (4).
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from medseg.errors import InputError
from medseg.io.volume import Volume

from . import options as opt
from .exports import IMAGE_FORMATS
from .results import Restoration, check_formats, default_stem, restore_paths

__all__ = ["REGIONS", "Restorer", "restore"]

REGIONS = ("auto", "sam", "kmeans", "none")
PathLike = str | os.PathLike[str]


class Restorer:
    """A restoration model loaded once, for many volumes.

    Args:
        checkpoint: a ``medseg fit`` restoration checkpoint; None (with ``method`` None or a
            classical method) denoises with a classical method instead, on the input grid.
        method: ``"nlmeans"`` (the default without a checkpoint) or ``"mppca"`` (4-D series);
            given together with a checkpoint it is refused. ``noise`` (``"auto"``, ``"rician"``,
            ``"gaussian"``) and ``sigma`` (input units; None: estimated) tune ``nlmeans``
            (:class:`medseg.inference.classical.ClassicalRestorer`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        trust_checkpoint: allow checkpoints holding arbitrary pickled objects (trusted only).
        overlap: window overlap in [0, 1); roi: window size on the input grid (2 or 3 sizes);
            batch_size: windows (2-D: slices) per pass.
        regions: RAT's region partitions: ``"auto"`` (as trained), ``"sam"``, ``"kmeans"``,
            ``"none"``.
        scale: the expected upsampling factor: a check against the checkpoint's; with
            ``method="self-sr"`` the through-plane factor (None: from the spacing).
        thickness: ``self-sr``'s slice thickness in mm (None: the slice spacing); steps: its
            training steps (None: 1000); progress: called with ``(done, total, stage)`` while
            it trains (``"train"``) and restores (``"restore"``).
    """

    def __init__(
        self,
        checkpoint: PathLike | None = None,
        *,
        method: str | None = None,
        noise: str = "auto",
        sigma: float | None = None,
        device: str = "auto",
        trust_checkpoint: bool = False,
        overlap: float = 0.5,
        roi: str | Sequence[int] | None = None,
        batch_size: int | None = None,
        regions: str = "auto",
        scale: int | None = None,
        thickness: float | None = None,
        steps: int | None = None,
        progress: Callable[[int, int, str], None] | None = None,
    ) -> None:
        if regions not in REGIONS:
            raise InputError("bad_argument", f"--regions must be one of {REGIONS}, got {regions!r}")
        self.method, self._classical = method, None
        if checkpoint is None:  # checked now: a bad option fails before any work
            from .classical import classical_restorer

            self._classical = classical_restorer(
                method, noise=noise, sigma=sigma, scale=scale, regions=regions,
                checkpoint_options={"overlap": overlap != 0.5, "roi": roi is not None,
                                    "batch_size": batch_size is not None},
                thickness=thickness, steps=steps, device=device, progress=progress,
            )  # fmt: skip
            self.method = self._classical.method
        elif (method, sigma, thickness, steps) != (None,) * 4 or noise != "auto":
            raise InputError(
                "bad_argument",
                "--method, --noise, --sigma, --slice-thickness and --steps choose a method "
                "that needs no checkpoint: give them or --checkpoint, not both",
            )
        else:
            from medseg.inference.checkpoints import check_checkpoint_file

            check_checkpoint_file(checkpoint)  # stat only: a FIFO or device is refused
        self.checkpoint, self.device, self.trusted = checkpoint, device, trust_checkpoint
        self.options = {
            "overlap": opt.check_overlap(overlap),
            "roi": opt.parse_roi(roi, keywords=()),
            "sw_batch_size": opt.check_positive(batch_size, "--batch-size"),
        }
        self.regions, self.scale = regions, opt.check_positive(scale, "--scale")
        self._restorer: Any = None

    def load(self) -> Restorer:
        """Load the checkpoint now (otherwise on first use); ModelError if it is bad, and
        ``scale_mismatch`` (InputError) when ``scale`` differs from the checkpoint's."""
        if self._restorer is not None:
            return self
        if self._classical is not None:
            self._restorer = self._classical
            return self
        from medseg.inference.restoration import Restorer as Predictor
        from medseg.inference.restoration import choose_partitioner

        restorer = Predictor.from_checkpoint(
            self.checkpoint, device=self.device, trusted=self.trusted, **self.options
        )
        if self.scale is not None and self.scale != restorer.scale:
            raise InputError(
                "scale_mismatch",
                f"--scale {self.scale}, but the checkpoint upsamples by {restorer.scale}",
                path=str(self.checkpoint),
            )
        if restorer.takes_regions:
            restorer.partitioner = choose_partitioner(
                self.regions, restorer.restoration, self.device
            )
        self._restorer = restorer
        return self

    @property
    def model(self) -> Any:
        """The loaded :class:`medseg.inference.restoration.Restorer` (net, windows, RAT's
        region partitioner); loads the checkpoint."""
        return self.load()._restorer

    @property
    def factor(self) -> int:
        """The checkpoint's upsampling factor (1 for denoising); loads the checkpoint."""
        return int(self.load()._restorer.scale)

    def restore(
        self,
        image: PathLike | Volume,
        *,
        volume_index: int | None = None,
        series_uid: str | None = None,
        nan_policy: str = "error",
        seg_checkpoint: PathLike | None = None,
        reference: PathLike | Volume | None = None,
        output: PathLike | None = None,
        output_name: str | None = None,
        formats: Sequence[str] = ("nifti",),
        overwrite: bool = False,
        protect: Iterable[PathLike] = (),
        on_warning: Callable[[str], None] | None = None,
    ) -> Restoration:
        """Restore one volume (a path or a :class:`Volume`); with ``output`` (a folder or a
        volume file name), also write it and its JSON report, checked before any model work.

        ``seg_checkpoint`` + ``reference`` (a label map of the input: a path or a label
        :class:`Volume`) also segment the input
        and the restored volume and report the Dice change (``details["downstream"]``);
        ``on_warning`` is called with each warning about the input as soon as it is read.
        """
        from medseg.io import load_volume

        started = time.perf_counter()
        if (seg_checkpoint is None) != (reference is None):
            raise InputError("bad_argument", "--seg-checkpoint and --reference go together")
        formats = check_formats(formats, IMAGE_FORMATS)
        source = None if isinstance(image, Volume) else str(image)
        protect = [*([source] if source else []), *protect]
        if output is not None:
            paths = restore_paths(output, output_name or default_stem(source, "image"))
            from .outputs import plan_outputs

            plan_outputs(paths[0].parent, [p.name for p in paths], overwrite=overwrite,
                         protect=protect)  # fmt: skip
        labels = None
        if seg_checkpoint is not None:  # both checked before the restoration model loads
            from medseg.inference.checkpoints import check_checkpoint_file

            check_checkpoint_file(seg_checkpoint)
            labels = reference
            if not isinstance(reference, Volume):
                labels = load_volume(reference, role="label")
        self.load()
        if isinstance(image, Volume):
            volume = image
        else:
            volume = load_volume(
                image,
                volume_index="all" if volume_index is None else volume_index,
                series_uid=series_uid,
                nan_policy=nan_policy,
                on_header=self._restorer.memory_guard(),
            )
        for text in volume.meta.get("warnings", []) if on_warning is not None else ():
            on_warning(text)
        out = self._restorer.restore(volume)
        details: dict[str, Any] = {
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            **({"method": self.method} if self.checkpoint is None else {}),
            "inference": out.info,
        }
        if seg_checkpoint is not None:
            from medseg.inference.downstream import downstream_dice

            details["downstream"] = downstream_dice(
                seg_checkpoint, volume, out.volume, labels,
                device=self.device, trusted=self.trusted,
            )  # fmt: skip
        result = Restoration(out.volume, volume, details, source=source or volume.meta.get("path"))
        result.timings["seconds"] = round(time.perf_counter() - started, 3)
        if output is not None:
            result.save(output, name=output_name, formats=formats, overwrite=overwrite,
                        protect=protect)  # fmt: skip
        return result

    def __call__(self, volume: Volume) -> Volume:
        """The restored volume alone (what the viewer's before | after shows)."""
        return self.restore(volume).volume


def restore(
    image: PathLike | Volume, *, checkpoint: PathLike | None = None, **kwargs: Any
) -> Restoration:
    """Restore one volume: ``Restorer(checkpoint, ...)`` then :meth:`Restorer.restore` with the
    remaining keywords (see both for the arguments); without ``checkpoint``, DIPY's non-local
    means (or ``method=``) on the input grid."""
    made = {k: kwargs.pop(k) for k in list(kwargs) if k in _RESTORER_KEYWORDS}
    return Restorer(checkpoint, **made).restore(image, **kwargs)


_RESTORER_KEYWORDS = frozenset(inspect.signature(Restorer).parameters) - {"checkpoint"}
