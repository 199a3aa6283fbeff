"""``medseg demo``: segment a real brain MRI with the shipped LiteMedSAM, offline.

The volume is the MNI152 2009a T1 template that ships inside ``nilearn`` (1 mm, 197x233x189,
skull-stripped). The prompt is a box around the brain on the mid-axial slice, drawn from
nilearn's own brain mask (``load_mni152_brain_mask``: template > 0.2 of its maximum), and the
result is propagated through the volume. The CT-style "brain" window (level 40, width 80 on the
template's 0-255 scale) shows the brain as one bright object on black: that is what MedSAM-family
models are good at. With the default MR percentile window the same box gives Dice ~0.6, because
the model then separates grey from white matter (see README, "What the demo number means").

``--quick`` propagates through the ``2 * QUICK_HALF + 1`` slices around the key slice only (about
a minute on a 2-core CPU instead of several); the Dice is then computed over those slices.
"""

from __future__ import annotations

import argparse

import numpy as np

DEMO_WINDOW = (40.0, 80.0)
BOX_MARGIN = 5  # pixels around the reference mask's box on the key slice
QUICK_HALF = 10  # --quick: slices on each side of the key slice


def add_parser(sub, parents) -> None:
    p = sub.add_parser(
        "demo",
        parents=parents,
        help="segment the MNI152 brain template with the shipped LiteMedSAM (offline)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-o", "--output", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--axis", default="axial", choices=("axial", "coronal", "sagittal"))
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--runtime", default="auto", choices=("auto", "torch", "openvino"),
                   help="LiteMedSAM encoder runtime (auto = torch)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"segment only the {2 * QUICK_HALF + 1} slices around the prompted one (Dice over "
        "those slices)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from medseg.api import Box, Segmenter
    from medseg.inference.stats import dice
    from medseg.transforms.planes import PlaneView

    from .report import SliceProgress, print_summary, warning_printer

    image_path, reference = _shipped_data()
    view = PlaneView.from_affine(reference.affine, reference.shape, args.axis)
    ref_stack = view.stack(reference.array)
    key = view.num_slices // 2
    rows, cols = np.nonzero(ref_stack[key])
    box = (
        max(int(cols.min()) - BOX_MARGIN, 0),
        max(int(rows.min()) - BOX_MARGIN, 0),
        min(int(cols.max()) + BOX_MARGIN, view.width - 1),
        min(int(rows.max()) + BOX_MARGIN, view.height - 1),
    )
    lo, hi = 0, view.num_slices - 1
    if args.quick:
        lo, hi = max(key - QUICK_HALF, 0), min(key + QUICK_HALF, hi)
    if not args.quiet:
        print(f"MNI152 T1 template: {image_path}")
        print(f"prompt: {args.axis} slice {key}, box {box} (display pixels), window 40/80")
    segmenter = Segmenter(device=args.device, precision=args.precision, runtime=args.runtime)
    with SliceProgress(args.quiet) as progress:
        result = segmenter.segment(
            image_path,
            prompts=Box(box, axis=args.axis, slice=key),
            window=DEMO_WINDOW,
            label_name="brain",
            slices=(lo, hi) if args.quick else None,
            output=args.output,
            output_name="mni152_t1",
            overwrite=args.overwrite,
            on_warning=warning_printer(image_path),
            progress=progress,
        )
    labels = result.statistics["labels"]
    if not args.quiet:
        print_summary(result.paths, labels, prompted=True)
    score = dice(view.stack(result.labels.array)[lo : hi + 1] > 0, ref_stack[lo : hi + 1])
    within = f" ({args.axis} slices {lo}-{hi})" if args.quick else ""
    print(
        f"Dice vs nilearn's MNI152 brain mask{within}: {score:.3f} "
        f"({labels[0]['volume_ml'] if labels else 0:.0f} mL segmented, "
        f"{result.timings['seconds']:.0f} s)"
    )
    return 0


class _Reference:
    def __init__(self, array: np.ndarray, affine: np.ndarray) -> None:
        self.array, self.affine, self.shape = array, affine, array.shape


def _shipped_data():
    """The template path and nilearn's brain mask on the same grid (both from the wheel)."""
    try:
        from nilearn.datasets import MNI152_FILE_PATH, load_mni152_brain_mask
    except ImportError as exc:  # pragma: no cover - nilearn is a dependency
        from medseg.errors import InputError

        raise InputError(
            "missing_dependency", "the demo needs nilearn: pip install nilearn"
        ) from exc
    mask = load_mni152_brain_mask()
    return MNI152_FILE_PATH, _Reference(np.asarray(mask.dataobj) > 0, mask.affine)
