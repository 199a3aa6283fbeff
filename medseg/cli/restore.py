"""``medseg restore``: denoise, super-resolve or translate a volume with a restoration checkpoint.

    medseg restore scan.nii.gz -o out/ --checkpoint runs/rat_acdc/fold0/checkpoints/last.ckpt
    medseg restore t1.nii.gz -o t1_x2.nii.gz --checkpoint disgan.ckpt --scale 2

``IN`` is a volume file, a DICOM series folder or a folder of volume files (each restored in
turn; a failed case is listed and the others still run). ``-o`` is a folder
(``<name>_restored.nii.gz`` and ``<name>_restore.json`` are written there) or, for one input, a
volume file name (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``, ``.mhd``; the JSON goes next to
it). Intensities come back in the input's units (HU stays HU). Geometry: denoising keeps the
input grid exactly; super-resolution by ``s`` keeps the physical extent and the orientation with
``s`` times the voxels (``1/s`` the spacing) along the upsampled axes (all three for a 3-D model
such as DISGAN, the in-plane axes for a 2-D model such as RAT). ``--scale`` is a check: it must
equal the checkpoint's factor.

RAT needs a region partition of every slice: ``--regions sam`` (the shipped LiteMedSAM prompted
by a point grid: the faithful stand-in for SAM's automatic masks), ``kmeans`` (fast, not
faithful) or ``none`` (one region per slice: global attention). The default is what the model
was trained with.

``--seg-checkpoint CKPT --reference LABELS`` also segments the input and the restored volume
with a ``medseg fit`` segmentation checkpoint and reports the change in Dice against LABELS
(``downstream`` in the JSON). Exit codes as ``medseg segment``: 2 input/arguments, 3 output,
4 checkpoint. The two outputs are written all-or-nothing (temp files, then renamed) and never
over the input.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from medseg.errors import InputError

_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def add_parser(sub, parents) -> None:
    from .segment import add_input_arguments

    p = sub.add_parser(
        "restore",
        parents=parents,
        help="restore a volume (denoise / super-resolve) with a restoration checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "input", help="NIfTI, NRRD, MHA/MHD file, a DICOM series folder or a folder of volumes"
    )
    p.add_argument("-o", "--output", required=True, help="output folder or volume file name")
    p.add_argument("--checkpoint", required=True, help="restoration checkpoint from medseg fit")
    p.add_argument("--scale", type=int, default=None, help="expected upsampling factor (check)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--overlap", type=float, default=0.5, help="window overlap in [0, 1) (0.5)")
    p.add_argument("--roi", default=None, help="window size on the input grid, e.g. 256,256")
    p.add_argument("--batch-size", type=int, default=None, help="windows (2-D: slices) per pass")
    p.add_argument(
        "--regions",
        choices=("auto", "sam", "kmeans", "none"),
        default="auto",
        help="RAT region partitions (default: as trained)",
    )
    p.add_argument("--seg-checkpoint", default=None, help="segmentation checkpoint (downstream)")
    p.add_argument("--reference", default=None, help="label map for the downstream Dice")
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow checkpoints holding arbitrary pickled objects (trusted sources only)",
    )
    add_input_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from medseg.inference.restoration import Restorer, choose_partitioner
    from medseg.io import cleanup_orphan_temps

    from .batch import check_batch_outputs, list_inputs, note_ignored, run_cases
    from .outputs import case_name

    if (args.seg_checkpoint is None) != (args.reference is None):
        raise InputError("bad_argument", "--seg-checkpoint and --reference go together")
    roi = _sizes(args.roi)
    inputs, ignored = list_inputs(Path(args.input))
    batch = inputs != [Path(args.input)]
    if batch and _file_suffix(Path(args.output)) is not None:
        raise InputError(
            "bad_argument",
            f"{args.input} is a folder of volumes: -o must name an output folder, not a file",
        )
    if batch and args.reference is not None:
        raise InputError(
            "bad_argument",
            "--reference is one label map: give one input volume with --seg-checkpoint",
        )
    note_ignored(args.input, ignored)
    # outputs checked before the model loads: the folder for a batch, the files for one input
    _outputs(args, inputs[0], "" if batch else case_name(inputs[0]))
    out = Path(args.output)
    protect = check_batch_outputs(
        inputs, lambda name: [out / f"{name}_restored.nii.gz", out / f"{name}_restore.json"]
    )
    restorer = Restorer.from_checkpoint(
        args.checkpoint,
        device=args.device,
        trusted=args.trust_checkpoint,
        overlap=args.overlap,
        roi=roi,
        sw_batch_size=args.batch_size,
    )
    if args.scale is not None and args.scale != restorer.scale:
        raise InputError(
            "scale_mismatch",
            f"--scale {args.scale}, but the checkpoint upsamples by {restorer.scale}",
            path=args.checkpoint,
        )
    if restorer.takes_regions:
        restorer.partitioner = choose_partitioner(args.regions, restorer.restoration, args.device)

    def one(path: Path, name: str) -> None:
        image_path, report_path = _outputs(args, path, name, protect=protect)
        cleanup_orphan_temps(image_path.parent)
        restore_case(args, restorer, path, image_path, report_path, protect=protect)

    return run_cases(inputs, batch, one, quiet=args.quiet)


def restore_case(
    args, restorer, path: Path, image_path: Path, report_path: Path, *, protect=()
) -> None:
    """One input volume -> the restored volume and its JSON report (written all-or-nothing)."""
    from medseg.io import StagedWrites, load_volume, stage_volume

    started = time.perf_counter()
    volume = load_volume(
        path,
        volume_index="all" if args.volume is None else args.volume,
        series_uid=args.series_uid,
        nan_policy=args.nan_policy,
    )
    result = restorer.restore(volume)
    report = {
        "input": str(path),
        "output": str(image_path),
        "checkpoint": str(args.checkpoint),
        "input_shape": list(volume.spatial_shape),
        "output_shape": list(result.volume.spatial_shape),
        "input_spacing": [float(s) for s in volume.spacing],
        "output_spacing": [float(s) for s in result.volume.spacing],
        "inference": result.info,
    }
    if args.seg_checkpoint:
        from medseg.inference.downstream import downstream_dice

        report["downstream"] = downstream_dice(
            args.seg_checkpoint,
            volume,
            result.volume,
            load_volume(args.reference, role="label"),
            device=args.device,
            trusted=args.trust_checkpoint,
        )
    report["seconds"] = round(time.perf_counter() - started, 3)
    with StagedWrites() as staged:
        stage_volume(
            staged, result.volume, image_path, overwrite=args.overwrite, protect=[path, *protect]
        )
        staged.stage_bytes(report_path, (json.dumps(report, indent=2) + "\n").encode("utf-8"))
    if not args.quiet:
        print(f"restored: {image_path}")
        print(f"report:   {report_path}")
        if "downstream" in report:
            d = report["downstream"]
            print(f"dice: input {d['dice_input']:.4f} -> restored {d['dice_restored']:.4f}")


def _file_suffix(out: Path) -> str | None:
    """The volume suffix when ``-o`` names a file, else None (a folder)."""
    return next((s for s in _VOLUME_SUFFIXES if out.name.lower().endswith(s)), None)


def _outputs(args: argparse.Namespace, source: Path, name: str, *, protect=()) -> tuple[Path, Path]:
    """Output image and report paths for one case, checked before any work (exists, input,
    writable); with an empty ``name`` only the output folder is checked."""
    from .outputs import prepare_outputs

    out = Path(args.output)
    suffix = _file_suffix(out)
    if suffix is None:
        files = [f"{name}_restored.nii.gz", f"{name}_restore.json"] if name else []
        paths = prepare_outputs(out, files, overwrite=args.overwrite, protect=[source, *protect])
        return (paths[0], paths[1]) if name else (out, out)
    stem = out.name[: -len(suffix)]
    image, report = prepare_outputs(
        out.parent if str(out.parent) else Path("."),
        [out.name, f"{stem}_restore.json"],
        overwrite=args.overwrite,
        protect=[source],
    )
    return image, report


def _sizes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        sizes = [int(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise InputError("bad_argument", f"--roi takes sizes like 256,256: {text!r}") from None
    if min(sizes) < 1:
        raise InputError("bad_argument", f"--roi sizes must be positive: {text!r}")
    return sizes
