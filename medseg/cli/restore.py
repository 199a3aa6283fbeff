"""``medseg restore``: denoise a volume (no checkpoint needed), or denoise, super-resolve or
translate it with a restoration checkpoint.

    medseg restore scan.nii.gz -o out/                     # DIPY non-local means, input grid
    medseg restore dwi.nii.gz -o out/ --method mppca       # MP-PCA across a 4-D series
    medseg restore scan.nii.gz -o out/ --checkpoint runs/rat_acdc/fold0/checkpoints/last.ckpt
    medseg restore t1.nii.gz -o t1_x2.nii.gz --checkpoint disgan.ckpt --scale 2
    medseg restore thick_t2.nii.gz -o out/ --method self-sr  # 5 mm slices -> 1 mm, no training data

``IN`` is a volume file, a DICOM series folder or a folder of volume files (each restored in
turn; a failed case is listed and the others still run). ``-o`` is a folder
(``<name>_restored.nii.gz`` and ``<name>_restore.json`` are written there) or, for one input, a
volume file name (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``, ``.mhd``; the JSON goes next to
it). Intensities come back in the input's units (HU stays HU). Geometry: denoising keeps the
input grid exactly; super-resolution by ``s`` keeps the physical extent and the orientation with
``s`` times the voxels (``1/s`` the spacing) along the upsampled axes (all three for a 3-D model
such as DISGAN, the in-plane axes for a 2-D model such as RAT). ``--scale`` is a check: it must
equal the checkpoint's factor.

Without ``--checkpoint`` the volume is denoised on exactly its grid by a classical method
(``--method``, default ``nlmeans``): DIPY's non-local means with its own noise estimate,
Rician-aware for MR magnitude images (``--noise auto`` picks ``rician`` when no voxel is
negative, ``gaussian`` otherwise, e.g. CT in HU; ``--sigma`` gives the noise level in the input's
units), or ``mppca`` (Marchenko-Pastur PCA) across the volumes of a 4-D series (diffusion, fMRI).
Every channel of a 4-D input is denoised. Sliding-window and region options need a checkpoint.

``--method self-sr`` super-resolves a thick-slice volume through-plane without any training
data: a tiny RAT is trained on the volume's own in-plane slices, degraded along one axis with
the slice profile (a box ``--slice-thickness`` mm wide, default the slice spacing), then applied
across the thick axis (SMORE-style). The factor is ``--scale`` or the rounded ratio of slice
spacing to in-plane spacing; ``--steps`` sets the training length (default 1000, a few minutes
on a laptop CPU, faster with ``--device cuda``). The output has ``scale`` times the slices over
the same physical box.

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
from pathlib import Path

from medseg.errors import InputError, printable


def add_parser(sub, parents) -> None:
    from .segment import add_input_arguments

    p = sub.add_parser(
        "restore",
        parents=parents,
        help="restore a volume: denoise (no checkpoint needed) or super-resolve (checkpoint)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "input", help="NIfTI, NRRD, MHA/MHD file, a DICOM series folder or a folder of volumes"
    )
    p.add_argument("-o", "--output", required=True, help="output folder or volume file name")
    p.add_argument(
        "--checkpoint", default=None, help="restoration checkpoint from medseg fit (RAT, DISGAN)"
    )
    p.add_argument(
        "--method",
        choices=("nlmeans", "mppca", "self-sr"),
        default=None,
        help="without a checkpoint: nlmeans (default) or mppca denoising, or self-sr "
        "(through-plane super-resolution of thick slices, trained on the input itself)",
    )
    p.add_argument(
        "--slice-thickness", type=float, default=None, help="self-sr: slice thickness in mm"
    )
    p.add_argument("--steps", type=int, default=None, help="self-sr: training steps (1000)")
    p.add_argument(
        "--noise",
        choices=("auto", "rician", "gaussian"),
        default="auto",
        help="nlmeans noise model (auto: rician unless a voxel is negative)",
    )
    p.add_argument("--sigma", type=float, default=None, help="nlmeans noise std (input units)")
    p.add_argument(
        "--scale",
        type=int,
        default=None,
        help="expected upsampling factor (a check); self-sr: the through-plane factor",
    )
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
    p.add_argument(
        "--format",
        default="nifti",
        help="nifti only: a restored image is no segmentation (dicom-seg, rtstruct and "
        "seg-nrrd are refused); -o FILE's extension picks .nii.gz, .nrrd or .mha",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from medseg.api import Restorer
    from medseg.api.exports import IMAGE_FORMATS
    from medseg.api.outputs import case_name, plan_outputs
    from medseg.api.results import check_formats, restore_paths, volume_suffix

    from .batch import check_batch_outputs, list_inputs, note_ignored, run_cases
    from .report import StageProgress, warning_printer
    from .segment import read_options

    if (args.seg_checkpoint is None) != (args.reference is None):
        raise InputError("bad_argument", "--seg-checkpoint and --reference go together")
    formats = check_formats(args.format, IMAGE_FORMATS)
    restorer = Restorer(
        args.checkpoint,
        method=args.method,
        noise=args.noise,
        sigma=args.sigma,
        device=args.device,
        trust_checkpoint=args.trust_checkpoint,
        overlap=args.overlap,
        roi=args.roi,
        batch_size=args.batch_size,
        regions=args.regions,
        scale=args.scale,
        thickness=args.slice_thickness,
        steps=args.steps,
        progress=StageProgress(args.quiet),
    )
    inputs, ignored = list_inputs(Path(args.input))
    batch = inputs != [Path(args.input)]
    out = Path(args.output)
    if batch and volume_suffix(out) is not None:
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
    names = [] if batch else [p.name for p in restore_paths(out, case_name(inputs[0]))]
    folder = restore_paths(out, "x")[0].parent
    plan_outputs(folder, names, overwrite=args.overwrite, protect=inputs)
    protect = check_batch_outputs(inputs, lambda name: list(restore_paths(out, name)))
    reference = None
    if args.seg_checkpoint is not None:  # both checked before the restoration model loads
        from medseg.inference.checkpoints import check_checkpoint_file
        from medseg.io import load_volume

        check_checkpoint_file(args.seg_checkpoint)
        reference = load_volume(args.reference, role="label")
    restorer.load()

    def one(path: Path, name: str) -> None:
        result = restorer.restore(
            path,
            seg_checkpoint=args.seg_checkpoint,
            reference=reference,
            output=out,
            output_name=name,
            overwrite=args.overwrite,
            formats=formats,
            protect=protect,
            on_warning=warning_printer(path),
            **read_options(args),
        )
        if not args.quiet:
            print(f"restored: {printable(result.paths[0])}")
            print(f"report:   {printable(result.paths[1])}")
            d = result.details.get("downstream")
            if d is not None:
                print(f"dice: input {d['dice_input']:.4f} -> restored {d['dice_restored']:.4f}")

    return run_cases(inputs, batch, one, quiet=args.quiet)
