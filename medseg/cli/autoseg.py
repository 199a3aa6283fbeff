"""Automatic mode of ``medseg segment`` (a ``medseg fit`` checkpoint, no prompt).

Mode choice (:func:`choose_mode`): the checkpoint's *content* decides, never its name. A zip
checkpoint whose pickle holds ``state_dict`` + ``hyper_parameters`` is a segmentation checkpoint
(automatic); anything else goes to LiteMedSAM (prompted). A prompt with a segmentation
checkpoint, or automatic options / no prompt with a LiteMedSAM checkpoint, is refused (exit 2).

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
import time
from pathlib import Path

from medseg.errors import InputError

__all__ = ["add_automatic_arguments", "choose_mode", "run_automatic"]

AUTO_FLAGS = {
    "overlap": "--overlap",
    "tta": "--tta",
    "largest_component": "--largest-component",
    "save_probabilities": "--save-probabilities",
    "batch_size": "--batch-size",
    "roi": "--roi",
    "trust_checkpoint": "--trust-checkpoint",
}


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


def choose_mode(args: argparse.Namespace) -> str:
    """``"automatic"`` or ``"prompted"``; raises :class:`InputError` on a mismatch."""
    from medseg.inference.checkpoints import checkpoint_kind

    prompted = any([args.box, args.point, args.box_mm, args.point_mm, args.slice is not None])
    prompted = prompted or bool(args.slices) or args.no_propagate
    auto = [flag for key, flag in AUTO_FLAGS.items() if getattr(args, key) not in (None, False)]
    kind = "shipped" if args.checkpoint is None else checkpoint_kind(args.checkpoint)
    if kind == "lightning":
        if prompted:
            raise InputError(
                "prompt_with_segmentation_checkpoint",
                "is a segmentation checkpoint (medseg fit): it segments without a prompt; drop "
                "--box/--point/--slice/--slices, or pass a LiteMedSAM checkpoint for prompts",
                path=args.checkpoint,
            )
        return "automatic"
    if kind == "unknown" and not prompted:
        return "automatic"  # the checkpoint loader names the problem (missing/corrupt, exit 4)
    if auto:
        raise InputError(
            "automatic_option_without_checkpoint",
            f"{', '.join(auto)} {'needs' if len(auto) == 1 else 'need'} a segmentation "
            "checkpoint (--checkpoint run.ckpt from medseg fit), not LiteMedSAM weights",
        )
    if not prompted and kind == "state_dict":
        raise InputError(
            "prompt_required",
            "is a LiteMedSAM (prompted) checkpoint: give a prompt (--box/--point with --slice), "
            "or pass a medseg fit checkpoint for automatic segmentation",
            path=args.checkpoint,
        )
    if not prompted and kind == "shipped":
        raise InputError(
            "bad_prompt",
            "give a prompt: --box x0,y0,x1,y1 and/or --point x,y with --slice K (LiteMedSAM), "
            "or --checkpoint run.ckpt from medseg fit for automatic segmentation",
        )
    return "prompted"


def run_automatic(args: argparse.Namespace) -> int:
    """Segment every input; returns 0, or the first failure's exit code after listing them."""
    from medseg.inference.automatic import AutomaticSegmenter
    from medseg.io import cleanup_orphan_temps

    from .batch import check_batch_outputs, list_inputs, note_ignored, run_cases
    from .outputs import prepare_outputs

    inputs, ignored = list_inputs(Path(args.input))
    note_ignored(args.input, ignored)
    out = Path(args.output)
    protect = check_batch_outputs(inputs, lambda name: [out / f for f in _files(args, name)])
    prepare_outputs(args.output, [], overwrite=args.overwrite, protect=[])  # folder usable?
    cleanup_orphan_temps(Path(args.output))
    batch = inputs != [Path(args.input)]
    segmenter = AutomaticSegmenter.from_checkpoint(
        args.checkpoint,
        trusted=args.trust_checkpoint,
        device=args.device,
        precision=args.precision,
        overlap=0.5 if args.overlap is None else args.overlap,
        sw_batch_size=args.batch_size,
        roi=_roi(args.roi),
        tta=args.tta,
        largest_component=_labels(args.largest_component),
        progress=not args.quiet and not batch,
    )

    def one(path: Path, name: str) -> None:
        report, out_paths = segment_case(args, segmenter, path, name, protect=protect)
        _summary(args, out_paths, report)

    return run_cases(inputs, batch, one, quiet=args.quiet)


def _summary(args: argparse.Namespace, out_paths, report: dict) -> None:
    if not args.quiet:
        from .segment import print_summary

        print_summary(out_paths, report)


def _files(args: argparse.Namespace, name: str) -> list[str]:
    files = [f"{name}_seg.nii.gz", f"{name}_stats.json", f"{name}_preview.png"]
    return files + [f"{name}_probabilities.nii.gz"] if args.save_probabilities else files


def segment_case(args: argparse.Namespace, segmenter, path: Path, name: str, *, protect=()):
    """One input -> its outputs; returns ``(report, out_paths)``. ``protect``: the other
    inputs of the run, never overwritten."""
    from medseg.io import load_volume, save_volume

    from .outputs import prepare_outputs
    from .segment import print_warnings, write_outputs

    started = time.perf_counter()
    protect = [path, *protect]
    out_paths = prepare_outputs(
        args.output, _files(args, name), overwrite=args.overwrite, protect=protect
    )
    volume = load_volume(
        path,
        volume_index="all" if args.volume is None else args.volume,
        series_uid=args.series_uid,
        nan_policy=args.nan_policy,
    )
    print_warnings(volume)
    result = segmenter.segment(volume, probabilities=args.save_probabilities)
    extra = {
        "inference": result.info,
        "channel_names": segmenter.preprocessing["channel_names"],
        "seconds": round(time.perf_counter() - started, 3),
    }
    report = write_outputs(
        args,
        volume,
        result.labels.array,
        None,
        out_paths,
        extra=extra,
        names=segmenter.label_names,
        model=f"segmentation:{args.checkpoint}",
        source=path,
        protect=protect,
    )
    if result.probabilities is not None:
        save_volume(result.probabilities, out_paths[3], overwrite=args.overwrite, protect=protect)
    return report, out_paths


def _roi(text: str | None):
    if text is None or text in ("auto", "patch"):
        return text or "auto"
    try:
        sizes = [int(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise InputError(
            "bad_argument", f"--roi: auto, patch or sizes like 96,96,96: {text!r}"
        ) from None
    if min(sizes) < 1:
        raise InputError("bad_argument", f"--roi sizes must be positive: {text!r}")
    return sizes


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
