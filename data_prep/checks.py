"""Check every training case before training (RELIABILITY.md §C.2 rows 21-23).

Per training case, in this order (the first failure is the reason):

1. the image is readable (``load_volume(role="image", volume_index="all")``: any 3-D or 4-D
   NIfTI/NRRD/MHA; a 3-D file is one channel);
2. the image has ``len(modality)`` channels;
3. the label is readable, whole numbers, values within the dataset's classes
   (``load_volume(role="label", classes=...)``);
4. the label is on the image's grid: shape, spacing, origin, direction
   (``check_same_grid``, 1e-3 mm).

A failure raises :class:`~medseg.errors.InputError` whose message starts with ``case <id>:`` and
names the field (``image``, ``image channels``, ``label``, ``label shape``/``spacing``/
``origin``/``direction``), with ``path`` the offending file; with ``skip_bad=True`` the case is
recorded in ``skipped`` with that reason and the next case is checked. An empty label is a
warning; the case is kept. Test cases are only checked to exist (they are not read).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import InputError
from medseg.io import Volume, check_same_grid, load_volume

#: ``visit(entry, image, label)`` is called for every good training case (fingerprint collection)
Visitor = Callable[[dict[str, Any], Volume, Volume], None]


@dataclass
class CheckReport:
    """Outcome of :func:`check_dataset`: the good training and test entries, the skipped cases
    (``{"case", "reason"}``) and warnings (``{"case", "warning"}``)."""

    good: list[dict[str, Any]] = field(default_factory=list)
    test: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    warnings: list[dict[str, str]] = field(default_factory=list)


def check_case(
    root: str | Path, entry: dict[str, Any], *, classes: Iterable[int], num_channels: int
) -> tuple[Volume, Volume, list[str]]:
    """Load and check one training case; return ``(image, label, warnings)``.

    ``image.array`` is ``(C, X, Y, Z)`` float32 with ``C == num_channels``; ``label.array`` is
    ``(X, Y, Z)`` integer. Raises InputError ``case <id>: <field> ...`` (see module docstring).
    """
    case = entry["case"]
    root = Path(root)
    image_path = root / entry["image"]
    label_path = root / entry["label"] if entry.get("label") else None
    image = _load(case, "image", image_path, role="image", volume_index="all")
    if image.num_channels != num_channels:
        raise InputError(
            "channel_mismatch",
            f"case {case}: image channels: the file holds {image.num_channels} channel(s) but "
            f"dataset.json lists {num_channels} modality(ies)",
            path=str(image_path),
        )
    if label_path is None:
        raise InputError("not_found", f"case {case}: label: no label file listed", path=str(root))
    label = _load(case, "label", label_path, role="label", classes=list(classes))
    try:
        check_same_grid(image, label, what="label")
    except InputError as exc:
        raise InputError(exc.code, f"case {case}: {exc.message}", path=str(label_path)) from exc
    warnings = [f"image: {w}" for w in image.meta.get("warnings", [])]
    warnings += [f"label: {w}" for w in label.meta.get("warnings", [])]
    return image, label, warnings


def check_dataset(
    dataset: dict[str, Any],
    *,
    skip_bad: bool = False,
    visit: Visitor | None = None,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
) -> CheckReport:
    """Check every training case of ``dataset`` (a dict as built by the indexers).

    ``visit`` receives each good case's volumes (they are dropped afterwards, so memory stays at
    one case); ``progress`` wraps the iteration (e.g. ``tqdm``). Test entries are checked to
    exist (missing ones are skipped too with ``skip_bad``). Raises the first InputError unless
    ``skip_bad``; raises ``no_training_cases`` when no
    training case is left.
    """
    root = Path(dataset["root"])
    classes = [int(k) for k in dataset["labels"]]
    num_channels = len(dataset["channel_names"])
    report = CheckReport()
    entries = dataset["training"]
    for entry in progress(entries) if progress else entries:
        try:
            image, label, warnings = check_case(
                root, entry, classes=classes, num_channels=num_channels
            )
        except InputError as exc:
            if not skip_bad:
                raise
            report.skipped.append({"case": entry["case"], "reason": str(exc)})
            continue
        report.warnings += [{"case": entry["case"], "warning": w} for w in warnings]
        report.good.append(entry)
        if visit is not None:
            visit(entry, image, label)
        del image, label
    for entry in dataset["test"]:
        try:
            _check_exists(root, entry)
        except InputError as exc:
            if not skip_bad:
                raise
            report.skipped.append({"case": entry["case"], "reason": str(exc)})
            continue
        report.test.append(entry)
    if not report.good:
        raise InputError(
            "no_training_cases",
            f"no usable training case ({len(report.skipped)} skipped)",
            path=str(root),
        )
    return report


def _load(case: str, what: str, path: Path, **kwargs: Any) -> Volume:
    try:
        return load_volume(path, **kwargs)
    except InputError as exc:
        raise InputError(exc.code, f"case {case}: {what}: {exc.message}", path=str(path)) from exc


def _check_exists(root: Path, entry: dict[str, Any]) -> None:
    for key in ("image", "label"):
        if entry.get(key) and not (root / entry[key]).is_file():
            raise InputError(
                "not_found",
                f"case {entry['case']}: test {key}: file not found",
                path=str(root / entry[key]),
            )
