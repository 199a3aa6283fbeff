"""Automatic mode of ``medseg segment`` (a ``medseg fit`` checkpoint, no prompt).

Mode choice (:meth:`medseg.api.Segmenter.resolve_mode`): the checkpoint's *content* decides,
never its name. A zip checkpoint whose pickle holds ``state_dict`` + ``hyper_parameters`` is a
segmentation checkpoint (automatic); anything else goes to LiteMedSAM (prompted). A prompt
with a segmentation checkpoint, or automatic options / no prompt with a LiteMedSAM
checkpoint, is refused (exit 2).

Inputs: a file, a DICOM series folder, or a folder of volume files
(:func:`medseg.cli.batch.list_inputs`).

Outputs per case ``<name>`` (the file name without its extension): ``<name>_seg.nii.gz`` (label
map on the input grid, the input's affine and NIfTI forms), ``<name>_stats.json`` (volumes per
label, named as in the checkpoint), ``<name>_preview.png`` and, with ``--save-probabilities``,
``<name>_probabilities.nii.gz``: float32 ``(X, Y, Z, K)`` softmax on the input grid, costing
``4 K`` bytes per input voxel on disk (uncompressed) and twice that in memory while resampling.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.errors import InputError

__all__ = ["add_automatic_arguments", "run_automatic", "segmenter_options"]


def add_automatic_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("automatic (with a `medseg fit` checkpoint, no prompt)")
    g.add_argument(
        "--overlap", type=float, default=None, help="sliding-window overlap in [0, 1) (0.5)"
    )
    g.add_argument("--tta", action="store_true", help="mirror test-time augmentation (8x in 3-D)")
    g.add_argument(
        "--largest-component",
        nargs="?",
        const="all",
        default=None,
        metavar="LABELS",
        help="keep the largest connected component of every label, or of LABELS (e.g. 1,3)",
    )
    g.add_argument(
        "--save-probabilities",
        action="store_true",
        help="also write <name>_probabilities.nii.gz: float32 softmax (X, Y, Z, K), 4K bytes/voxel",
    )
    g.add_argument(
        "--batch-size", type=int, default=None, help="windows per forward pass (2 in 3-D, 8 in 2-D)"
    )
    g.add_argument(
        "--roi",
        default=None,
        help="window size: auto (the patch, grown up to 8x where the image allows), patch, or "
        "sizes like 96,96,96",
    )
    g.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow a checkpoint that holds arbitrary pickled objects (trusted sources only)",
    )


def segmenter_options(args: argparse.Namespace) -> dict:
    """The :class:`medseg.api.Segmenter` keywords of ``medseg segment``'s model and
    automatic-mode options."""
    return {
        "model": getattr(args, "model", "litemedsam"),
        "device": args.device,
        "precision": args.precision,
        "runtime": args.runtime,
        "trust_checkpoint": args.trust_checkpoint,
        "overlap": args.overlap,
        "tta": args.tta,
        "largest_component": _labels(args.largest_component),
        "batch_size": args.batch_size,
        "roi": args.roi,
    }


def run_automatic(args: argparse.Namespace, segmenter) -> int:
    """Segment every input with ``segmenter`` (automatic mode); returns 0, or the first
    failure's exit code after listing the failed cases."""
    from medseg.api.exports import check_sources
    from medseg.api.outputs import plan_outputs
    from medseg.api.results import check_formats, segmentation_files

    from .batch import check_batch_outputs, list_inputs, note_ignored, run_cases
    from .report import print_summary, warning_printer
    from .segment import read_options

    inputs, ignored = list_inputs(Path(args.input))
    note_ignored(args.input, ignored)
    out = Path(args.output)
    formats = check_formats(args.format)
    for path in inputs:  # a DICOM format for a NIfTI input: refused before any model work
        check_sources(formats, str(path))
    protect = check_batch_outputs(
        inputs,
        lambda name: [out / f for f in segmentation_files(name, args.save_probabilities, formats)],
    )
    plan_outputs(out, [], overwrite=args.overwrite)  # the folder is usable (nothing created)
    batch = inputs != [Path(args.input)]
    segmenter.progress = not args.quiet and not batch
    segmenter.load()

    def one(path: Path, name: str) -> None:
        result = segmenter.segment(
            path,
            probabilities=args.save_probabilities,
            axis=args.axis,
            output=out,
            output_name=name,
            overwrite=args.overwrite,
            formats=formats,
            protect=protect,
            on_warning=warning_printer(path),
            **read_options(args),
        )
        if not args.quiet:
            print_summary(result.paths, result.statistics["labels"], prompted=False)

    return run_cases(inputs, batch, one, quiet=args.quiet)


def _labels(text: str | None) -> bool | list[int]:
    if text is None:
        return False
    if text == "all":
        return True
    try:
        return [int(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise InputError(
            "bad_argument",
            f"--largest-component takes label values like 1,3, got {text!r} (put the option "
            "after IN, or write --largest-component=all)",
        ) from None
