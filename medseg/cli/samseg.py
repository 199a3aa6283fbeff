"""SAM-family options of ``medseg segment``: ``--model db_sam`` (box prompt, 3-D propagation,
through the LiteMedSAM machinery) and ``--model sam2_sgp --support DIR`` (prompt-free).

``--checkpoint`` is a ``medseg fit`` checkpoint of ``PromptableSegmentationTask`` (or a full
state dict of the published preset); it holds every weight, the original SAM/SAM2 file is not
needed. ``--support DIR`` holds image/label volume pairs (``images/`` + ``labels/`` with equal
names, or ``NAME.nii.gz`` + ``NAME_label.nii.gz``); the slices holding ``--support-label``
guide the segmentation (``--support-size`` of them per slice, the most similar), which writes
``--label``. Both models take single-channel volumes (nets fine-tuned on several channels are
refused with the reason).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from medseg.errors import InputError

__all__ = ["add_sam_arguments", "build_box_predictor", "check_sam_arguments", "run_support"]

MODEL_CHOICES = ("litemedsam", "db_sam", "sam2_sgp")


def add_sam_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("SAM family (DB-SAM, SAM2-SGP)")
    g.add_argument(
        "--model",
        choices=MODEL_CHOICES,
        default="litemedsam",
        help="litemedsam (default), db_sam (box prompt + propagation; --checkpoint from medseg "
        "fit) or sam2_sgp (prompt-free with --support DIR)",
    )
    g.add_argument("--support", default=None, metavar="DIR", help="sam2_sgp: image/label pairs")
    g.add_argument(
        "--support-label",
        type=int,
        default=1,
        metavar="L",
        help="label value of the object in --support",
    )
    g.add_argument(
        "--support-size",
        type=int,
        default=None,
        metavar="K",
        help="sam2_sgp: supports chosen per slice (most similar first; default: the model's, "
        "1 in 2-D training, 4 in 3-D)",
    )
    g.add_argument(
        "--bank-size",
        type=int,
        default=16,
        metavar="N",
        help="sam2_sgp: memories of previous slices kept while propagating (0 = 2-D per slice)",
    )


def check_sam_arguments(args: argparse.Namespace) -> None:
    """Refuse option mixes that cannot work, before any model work (exit 2)."""
    from .autoseg import AUTO_FLAGS

    model = getattr(args, "model", "litemedsam")
    if model != "sam2_sgp" and args.support_size is not None:
        raise InputError("bad_argument", "--support-size needs --model sam2_sgp")
    if model == "litemedsam":
        if args.support:
            raise InputError("bad_argument", "--support needs --model sam2_sgp")
        return
    auto = [flag for key, flag in AUTO_FLAGS.items() if getattr(args, key) not in (None, False)]
    auto = [f for f in auto if f != "--trust-checkpoint"]
    if auto:
        raise InputError("bad_argument", f"{', '.join(auto)}: automatic-mode options only")
    if model == "sam2_sgp":
        prompted = [args.box, args.point, args.box_mm, args.point_mm, args.slice is not None]
        if any(prompted) or args.slices or args.no_propagate:
            raise InputError("bad_prompt", "sam2_sgp is prompt-free: drop --box/--point/--slice(s)")
        if not args.support:
            raise InputError("bad_argument", "--model sam2_sgp needs --support DIR")
    elif args.support:
        raise InputError("bad_argument", "--support needs --model sam2_sgp")
    if args.bank_size < 0:
        raise InputError("bad_argument", "--bank-size must be >= 0")
    if args.support_size is not None and args.support_size < 1:
        raise InputError("bad_argument", "--support-size must be >= 1")


def build_box_predictor(args: argparse.Namespace):
    from medseg.inference.device import resolve_device
    from medseg.inference.sam_family import BoxPromptPredictor, load_promptable_net

    device = resolve_device(args.device)
    net = load_promptable_net(
        "db_sam", args.checkpoint, device=device, trusted=args.trust_checkpoint
    )
    return BoxPromptPredictor(net, device=device)


def run_support(args: argparse.Namespace) -> int:
    """``medseg segment IN -o OUT --model sam2_sgp --checkpoint CKPT --support DIR``."""
    import numpy as np
    from tqdm.auto import tqdm

    from medseg.inference.device import resolve_device
    from medseg.inference.litemedsam import to_uint8
    from medseg.inference.sam_family import (
        SupportPredictor,
        check_single_channel,
        load_promptable_net,
        load_support_slices,
    )
    from medseg.io import cleanup_orphan_temps, load_volume
    from medseg.transforms.planes import PlaneView

    from .outputs import case_name, prepare_outputs
    from .segment import print_summary, write_outputs

    started = time.perf_counter()
    volume = load_volume(
        args.input, volume_index=args.volume, series_uid=args.series_uid, nan_policy=args.nan_policy
    )
    device = resolve_device(args.device)
    net = load_promptable_net(
        "sam2_sgp", args.checkpoint, device=device, trusted=args.trust_checkpoint
    )
    check_single_channel(net)  # before the volume's channels: the net decides what fits
    if volume.num_channels != 1:
        raise InputError(
            "multi_channel", f"{volume.num_channels} channels; choose one with --volume N"
        )
    name = case_name(args.input)
    out_paths = prepare_outputs(
        args.output,
        [f"{name}_seg.nii.gz", f"{name}_stats.json", f"{name}_preview.png"],
        overwrite=args.overwrite,
        protect=[Path(args.input)],
    )
    cleanup_orphan_temps(Path(args.output))
    window = tuple(args.window) if args.window else None
    images, masks = load_support_slices(
        args.support, args.axis, label=args.support_label, window=window
    )
    predictor = SupportPredictor(
        net, device=device, support_size=args.support_size, bank_size=args.bank_size
    )
    used = predictor.set_support(images, masks)
    view = PlaneView.from_affine(volume.affine, volume.spatial_shape, args.axis)
    stack = np.ascontiguousarray(to_uint8(view.stack(volume.array), window=window))
    with tqdm(desc="segmenting", unit="slice", disable=args.quiet, leave=False) as bar:
        mask = predictor.segment_stack(stack, progress=lambda n: bar.update(n - bar.n))
    dtype = np.uint8 if args.label <= 255 else np.uint16
    labels = np.ascontiguousarray(view.unstack(mask.astype(dtype) * dtype(args.label)))
    k = args.support_size or int(net.support_size)
    extra = {
        "seconds": time.perf_counter() - started,
        "support": {
            "folder": str(args.support),
            "slices": used,
            "label": args.support_label,
            "per_slice": min(k, used),
        },
    }
    report = write_outputs(
        args,
        volume,
        labels,
        None,
        out_paths,
        extra=extra,
        names={args.label: args.name or "object"},
        model=f"sam2_sgp:{args.checkpoint}",
    )
    if not args.quiet:
        print_summary(out_paths, report)
    return 0
