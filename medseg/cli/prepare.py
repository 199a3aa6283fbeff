"""``medseg prepare``: index a raw MSD task or ACDC download, check it, split it, fingerprint it.

    medseg prepare msd  --src RAW/Task04_Hippocampus --out PREP [--seed 12345] [--skip-bad]
    medseg prepare acdc --src RAW (holding database/) --out PREP [--folds 5] [--overwrite]
    medseg prepare synthetic --layout msd|acdc --out RAW [--cases N] [--channels C] [--ct]

``msd``/``acdc`` write ``PREP/dataset.json``, ``PREP/splits.json`` and ``PREP/fingerprint.json``
and never touch the raw folder (schemas in the ``data_prep`` package docstring). Every training
case is read and checked first: a bad case stops with exit 2 naming the case and the field, or is
skipped and listed with ``--skip-bad``. ``synthetic`` writes a small dataset in the exact raw
layout, for trying the pipeline without a download.
"""

from __future__ import annotations

import argparse


def add_parser(sub, parents) -> None:
    p = sub.add_parser(
        "prepare",
        help="raw MSD/ACDC folder -> dataset.json, splits.json, fingerprint.json",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    layouts = p.add_subparsers(dest="layout", metavar="LAYOUT", parser_class=type(p))
    layouts.required = True
    for layout, what in (
        ("msd", "an MSD task folder (TaskNN_Name/)"),
        ("acdc", "an ACDC download"),
    ):
        q = layouts.add_parser(layout, parents=parents, help=f"prepare {what}")
        q.add_argument("--src", required=True, help=f"raw folder: {what}")
        q.add_argument("--out", required=True, help="prepared folder (outside the raw folder)")
        q.add_argument("--seed", type=int, default=12345, help="fold/sampling seed (12345)")
        q.add_argument("--folds", type=int, default=5, help="cross-validation folds (5)")
        q.add_argument("--skip-bad", action="store_true", help="skip and list bad cases")
        q.add_argument("--overwrite", action="store_true", help="replace existing JSON files")
        q.set_defaults(run=run)
    q = layouts.add_parser(
        "synthetic", parents=parents, help="write a small synthetic dataset in a raw layout"
    )
    q.add_argument("--layout", dest="synthetic_layout", choices=("msd", "acdc"), required=True)
    q.add_argument("--out", required=True, help="folder to write the raw dataset into")
    q.add_argument("--cases", type=int, default=None, help="training cases/patients (8 / 10)")
    q.add_argument("--test-cases", type=int, default=None, help="test cases/patients (2)")
    q.add_argument("--channels", type=int, default=1, help="MSD image channels, 1-4 (1)")
    q.add_argument("--ct", action="store_true", help="MSD: CT-like Hounsfield units")
    q.add_argument("--seed", type=int, default=0, help="generator seed (0)")
    q.set_defaults(run=run_synthetic)


def run(args: argparse.Namespace) -> int:
    from data_prep import prepare
    from medseg.data.prepared_files import load_prepared

    progress = None
    if not args.quiet:
        from tqdm.auto import tqdm

        def progress(items):
            return tqdm(items, desc="checking cases", unit="case", leave=False, disable=None)

    out = prepare(
        args.layout,
        args.src,
        args.out,
        seed=args.seed,
        skip_bad=args.skip_bad,
        folds=args.folds,
        overwrite=args.overwrite,
        progress=progress,
    )
    if not args.quiet:
        print(summary(*load_prepared(out), out=str(out)))
    return 0


def run_synthetic(args: argparse.Namespace) -> int:
    from data_prep import write_synthetic

    src = write_synthetic(
        args.synthetic_layout,
        args.out,
        cases=args.cases,
        test_cases=args.test_cases,
        channels=args.channels,
        ct=args.ct,
        seed=args.seed,
    )
    if not args.quiet:
        print(f"wrote a synthetic {args.synthetic_layout.upper()} dataset: {src}")
        print(f"next: medseg prepare {args.synthetic_layout} --src {src} --out PREP")
    return 0


def summary(dataset: dict, splits: dict, fingerprint: dict, *, out: str) -> str:
    """A few lines: cases, classes, target spacing, patch size, skipped cases and warnings."""
    labels = ", ".join(f"{k} {v}" for k, v in dataset["labels"].items())
    mm = " x ".join(f"{v:g}" for v in fingerprint["target_spacing"])
    patch = " x ".join(str(v) for v in fingerprint["patch_size"])
    lines = [
        f"prepared {dataset['name']} ({dataset['layout']}) -> {out}",
        f"  cases: {dataset['numTraining']} training, {dataset['numTest']} test, "
        f"{len(dataset['skipped'])} skipped; {splits['num_folds']} folds by patient",
        f"  channels: {', '.join(dataset['channel_names'])} ({fingerprint['modality_kind']})",
        f"  classes: {labels}",
        f"  target spacing: {mm} mm; {fingerprint['spatial_dims']}D patch {patch}",
    ]
    lines += [f"  skipped {s['case']}: {s['reason']}" for s in dataset["skipped"]]
    warnings = dataset.get("warnings", [])
    lines += [f"  warning {w['case']}: {w['warning']}" for w in warnings[:10]]
    if len(warnings) > 10:
        lines.append(f"  ... {len(warnings) - 10} more warnings in dataset.json")
    return "\n".join(lines)
