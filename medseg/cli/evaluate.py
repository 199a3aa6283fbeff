"""``medseg evaluate PRED GT``: per-case, per-label Dice and HD95 (mm), optional ACDC indices.

PRED and GT are two label files or two folders. **Pairing rule** (folders are searched
recursively for ``.nii``, ``.nii.gz``, ``.nrrd`` (3D Slicer ``.seg.nrrd`` included), ``.mha``,
``.mhd`` and DICOM SEG ``.dcm`` files; hidden files skipped):

- a prediction is every ``X_seg.<ext>`` file (what ``medseg segment`` writes); in a folder with
  no ``*_seg`` file, every volume file. Its case name is ``X``;
- a ground truth is every ``X_gt.<ext>`` file (ACDC); in a folder with no ``*_gt`` file, every
  volume file (``X.<ext>``, MSD ``labelsTr``). Its case name is ``X``;
- a case with several files (``X_seg.nii.gz`` beside ``X_seg.dcm`` and ``X_seg.seg.nrrd``, as
  ``medseg segment --format`` writes them) is scored once, from the first of NIfTI, NRRD/MHA,
  ``.seg.nrrd``, DICOM SEG;
- cases pair by name. Ground truths without a prediction are counted and a few named in one
  ``note:`` line (``no prediction for N case(s): ...``) and not scored; predictions without a
  ground truth likewise. The run exits 0 when every prediction with a ground truth was scored;
  no pair at all is an error (exit 2). Two files are paired as given.

Every file is read with ``load_volume(role="label")``; a prediction must lie on its ground
truth's grid (else exit 2 naming the file). A DICOM SEG or ``.seg.nrrd`` (which may hold only
the slices or box their segments cover) is read onto the other file's grid. Metric conventions
(empty labels, HD95 in mm) are in
:mod:`medseg.inference.evaluation`. ``-o metrics.csv`` writes one row per case and label
(label names from the ``X_stats.json`` files next to the predictions, or RV/MYO/LV with
``--acdc``). ``--acdc`` adds per-patient clinical indices (``<stem>_acdc.csv``) from the ED/ES
frames, found by the ``patientNNN_frameXX`` names and the ``Info.cfg`` next to the ground truth,
or a ``--phases`` JSON ``{"patient001": {"ED": 1, "ES": 12}, ...}``; without either, the frame
with the larger ground-truth LV volume is taken as ED (a ``note:`` says so).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

from medseg.errors import InputError, MedsegError

from .acdc_report import INDICES, acdc_summary, acdc_table


def add_parser(sub, parents) -> None:
    p = sub.add_parser(
        "evaluate",
        parents=parents,
        help="Dice / HD95 of predicted label maps against ground truth (+ ACDC indices)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pred", help="predicted label map, or a folder of them")
    p.add_argument("gt", help="ground-truth label map, or a folder of them")
    p.add_argument("-o", "--output", default=None, help="CSV file for the per-case metrics")
    p.add_argument("--labels", default=None, help="labels to score, e.g. 1,2,3 (default: all)")
    p.add_argument("--no-hd95", action="store_true", help="skip HD95 (distance transforms)")
    p.add_argument("--acdc", action="store_true", help="ACDC clinical indices per patient")
    p.add_argument("--phases", default=None, help="JSON {patient: {ED: frame, ES: frame}}")
    p.add_argument("--overwrite", action="store_true", help="replace existing CSV files")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from medseg.inference.evaluation import ACDC_LABELS, label_metrics, label_names
    from medseg.io import check_same_grid

    wanted = _parse_labels(args.labels) if args.labels else None
    if args.acdc and wanted is None:
        wanted = sorted(ACDC_LABELS)
    out_paths = _output_paths(args)
    pairs, failures = pair_cases(Path(args.pred), Path(args.gt))
    rows: list[dict[str, Any]] = []
    volumes: dict[str, dict[str, Any]] = {}  # label maps kept for --acdc only
    file_names: dict[int, str] = {}  # label names the files carry (SEG, .seg.nrrd, NIfTI table)
    for case, (pred_path, gt_path) in sorted(pairs.items()):
        try:
            gt, pred = _read_pair(gt_path, pred_path)
            check_same_grid(gt, pred, what="prediction")
            for name_source in (pred, gt):
                for value, name in name_source.meta.get("label_names", {}).items():
                    file_names.setdefault(int(value), name)
        except MedsegError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failures.append((case, exc))
            continue
        labels = wanted or sorted({int(v) for a in (gt.array, pred.array) for v in _values(a)})
        metrics = label_metrics(pred.array, gt.array, labels, gt.spacing, hd95=not args.no_hd95)
        for m in metrics:
            rows.append({"case": case, "pred": str(pred_path), "gt": str(gt_path), **m})
        if args.acdc:
            volumes[case] = {"pred": pred.array, "gt": gt.array, "ml": gt.voxel_volume_ml}
            volumes[case]["path"] = gt_path
    rows = _fill_absent_labels(rows)
    known = ACDC_LABELS if args.acdc else _names_from_stats([p for p, _ in pairs.values()])
    known = {**file_names, **known}
    names = label_names(known, sorted({r["label"] for r in rows}))
    for r in rows:
        r["name"] = names[r["label"]]
    if out_paths:
        _write_csv(out_paths[0], rows, _METRIC_COLUMNS)
    if not args.quiet:
        print(metrics_table(rows, names))
    if args.acdc:
        acdc_rows = acdc_table(volumes, args.phases, failures)
        if out_paths:
            _write_csv(out_paths[1], acdc_rows, ["patient", "ed", "es", "which", *INDICES])
        if not args.quiet:
            print(acdc_summary(acdc_rows))
    if failures:
        listed = ", ".join(c for c, _ in failures)
        print(f"error: {len(failures)} case(s) failed: {listed}", file=sys.stderr)
        return failures[0][1].exit_code
    return 0


def _fill_absent_labels(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for labels absent from both maps of a case (Dice and HD95 NaN, 0 voxels), so every
    case has a row for every label seen anywhere; sorted by case, then label."""
    labels = sorted({r["label"] for r in rows})
    by_case: dict[str, dict[int, dict[str, Any]]] = {}
    for r in rows:
        by_case.setdefault(r["case"], {})[r["label"]] = r
    out = []
    for case, have in sorted(by_case.items()):
        first = next(iter(have.values()))
        for label in labels:
            empty = {"dice": math.nan, "hd95": math.nan, "pred_voxels": 0, "gt_voxels": 0}
            empty.update(pred_ml=0.0, gt_ml=0.0, case=case, pred=first["pred"], gt=first["gt"])
            out.append(have.get(label, {"label": label, **empty}))
    return out


def _names_from_stats(preds: list[Path]) -> dict[int, str]:
    """Label names from the ``X_stats.json`` that ``medseg segment`` writes next to
    ``X_seg.nii.gz`` (first file found wins per label); {} when there is none."""
    names: dict[int, str] = {}
    for pred in preds:
        stats = pred.with_name(f"{_case(pred, '_seg')}_stats.json")
        if not stats.is_file():
            continue
        try:
            entries = json.loads(stats.read_text(encoding="utf-8")).get("labels", [])
            for e in entries:
                names.setdefault(int(e["label"]), str(e["name"]))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # a foreign or damaged JSON only loses the names, never the metrics
    return names


def pair_cases(pred: Path, gt: Path) -> tuple[dict[str, tuple[Path, Path]], list]:
    """``{case: (pred file, gt file)}`` and failures ``[(case, InputError)]`` (module rule)."""
    for p in (pred, gt):
        if not p.exists():
            raise InputError("not_found", "no such file or folder", path=str(p))
    if pred.is_dir() != gt.is_dir():
        raise InputError("bad_argument", "PRED and GT must both be files or both be folders")
    if not pred.is_dir():
        return {_case(pred, "_seg"): (pred, gt)}, []
    preds, gts = _index(pred, "_seg"), _index(gt, "_gt")
    if not gts:
        raise InputError("no_cases", "no label files found", path=str(gt))
    paired = sorted(set(preds) & set(gts))
    if not paired:
        raise InputError(
            "no_cases",
            f"no prediction matches a ground-truth case ({len(preds)} prediction(s), "
            f"{len(gts)} ground truth(s); cases pair by name: X_seg.* with X.* or X_gt.*)",
            path=str(pred),
        )
    missing = sorted(set(gts) - set(preds))
    if missing:
        print(f"note: no prediction for {len(missing)} case(s) (not scored): {_few(missing)}",
              file=sys.stderr)  # fmt: skip
    extra = sorted(set(preds) - set(gts))
    if extra:
        print(f"note: predictions without ground truth (ignored): {_few(extra)}", file=sys.stderr)
    return {c: (preds[c], gts[c]) for c in paired}, []


def _few(names: list[str], shown: int = 5) -> str:
    """The first ``shown`` names, then how many there are in all."""
    more = f", ... ({len(names)} in all)" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _index(folder: Path, tag: str) -> dict[str, Path]:
    from medseg.io.sniff import extension_kind

    files = sorted(
        f
        for f in folder.rglob("*")
        if f.is_file()
        and not any(part.startswith(".") for part in f.relative_to(folder).parts)
        and (extension_kind(f)[1] is not None or f.name.lower().endswith(".dcm"))
    )
    tagged = [f for f in files if _stem(f).endswith(tag)]
    chosen = sorted(tagged or files, key=lambda f: (_format_rank(f), str(f)))
    out: dict[str, Path] = {}
    for f in chosen:
        case = _case(f, tag)
        if case in out and _format_rank(out[case]) != _format_rank(f):
            continue  # the same case in another format (segment --format): the first one wins
        if case in out:
            raise InputError(
                "duplicate_case", f"two files for case {case}: {out[case]} and {f}", path=str(f)
            )
        out[case] = f
    return out


def _stem(path: Path) -> str:
    from medseg.api.outputs import case_name

    lower = path.name.lower()
    for suffix in _SEGMENTATION_SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return path.name[: -len(suffix)]
    return case_name(path)


_SEGMENTATION_SUFFIXES = (".seg.nrrd", ".dcm")


def _read_pair(gt_path: Path, pred_path: Path):
    """``(gt, pred)`` label Volumes; a DICOM SEG / ``.seg.nrrd`` (which may cover only part of
    its grid) is put on the other file's grid, trying the other way round if that fails."""
    from medseg.io import load_volume

    first, second = (gt_path, pred_path)
    if _partial_grid(gt_path) and not _partial_grid(pred_path):
        first, second = second, first
    a = load_volume(first, role="label")
    try:
        b = load_volume(second, role="label", grid=a)
    except InputError as exc:
        if exc.code != "grid_mismatch" or not _partial_grid(first):
            raise
        b = load_volume(second, role="label")
        a = load_volume(first, role="label", grid=b)
    return (a, b) if first == gt_path else (b, a)


def _partial_grid(path: Path) -> bool:
    """Whether the file may hold only part of its image grid (DICOM SEG, ``.seg.nrrd``)."""
    return path.name.lower().endswith(_SEGMENTATION_SUFFIXES)


def _format_rank(path: Path) -> int:
    """Preference among files of one case: NIfTI, NRRD/MHA, ``.seg.nrrd``, DICOM SEG."""
    lower = path.name.lower()
    if lower.endswith(".dcm"):
        return 3
    if lower.endswith(".seg.nrrd"):
        return 2
    return 0 if ".nii" in lower else 1


def _case(path: Path, tag: str) -> str:
    stem = _stem(path)
    return stem[: -len(tag)] if stem.endswith(tag) and len(stem) > len(tag) else stem


def _values(array) -> list[int]:
    import numpy as np

    return [int(v) for v in np.unique(array) if v != 0]


def metrics_table(rows: list[dict[str, Any]], names: dict[int, str]) -> str:
    """Markdown table: label, cases, Dice mean ± std, HD95 mean ± std (inf counted)."""
    from medseg.inference.evaluation import summarise

    lines = ["| label | cases | Dice | HD95 (mm) |", "|---|---|---|---|"]
    fg_means = []
    for label in sorted(names):
        sel = [r for r in rows if r["label"] == label]
        d, h = summarise(r["dice"] for r in sel), summarise(r["hd95"] for r in sel)
        fg_means.append(d["mean"])
        inf = f" ({h['n_inf']} inf)" if h["n_inf"] else ""
        lines.append(f"| {label} {names[label]} | {len(sel)} | {_pm(d)} | {_pm(h)}{inf} |")
    finite = [m for m in fg_means if not math.isnan(m)]
    mean = sum(finite) / len(finite) if finite else math.nan
    lines.append(f"| mean | | {mean:.4f} | |")
    return "\n".join(lines)


_METRIC_COLUMNS = [
    "case", "label", "name", "dice", "hd95", "pred_voxels", "gt_voxels", "pred_ml", "gt_ml",
    "pred", "gt",
]  # fmt: skip


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    from medseg.api.outputs import write_outputs

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: _fmt(r.get(k)) for k in columns})
    write_outputs({path: buf.getvalue().encode()}, overwrite=True)  # checked before any work


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.6g}")
    return value


def _pm(s: dict) -> str:
    return "n/a" if s["n"] == 0 else f"{s['mean']:.4f} +/- {s['std']:.4f}"


def _output_paths(args: argparse.Namespace) -> list[Path]:
    """``[metrics.csv, metrics_acdc.csv]`` checked before any work ([] without ``-o``)."""
    from medseg.api.outputs import plan_outputs

    if args.output is None:
        return []
    out = Path(args.output)
    names = [out.name] + ([f"{out.stem}_acdc{out.suffix or '.csv'}"] if args.acdc else [])
    protect = [Path(args.pred), Path(args.gt)]
    return plan_outputs(out.parent, names, overwrite=args.overwrite, protect=protect)


def _parse_labels(text: str) -> list[int]:
    try:
        labels = sorted({int(v) for v in text.replace(" ", "").split(",") if v})
    except ValueError:
        raise InputError("bad_argument", f"--labels takes values like 1,2,3: {text!r}") from None
    if not labels or min(labels) < 1:
        raise InputError("bad_argument", f"--labels must be positive label values: {text!r}")
    return labels
