"""Seeded k-fold cross-validation splits grouped by patient (never by case or frame).

Every case of a patient lands in the same fold (ACDC: both the ED and the ES frame), every case is
in exactly one validation fold, and the same ``(cases, seed, folds)`` always gives the same
splits. When every entry carries a ``group`` (ACDC pathology: NOR, MINF, DCM, HCM, RV), folds are
stratified by it: the patients of each group are shuffled and dealt round-robin over the folds,
the dealing continuing from fold to fold across groups so that fold sizes differ by at most one
patient. Without groups it is the same with a single stratum.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from medseg.errors import InputError


def make_splits(entries: Sequence[dict[str, Any]], *, seed: int, folds: int = 5) -> dict[str, Any]:
    """Patient-grouped folds for ``entries`` (dicts with ``case``, ``patient``, optional ``group``).

    Returns the ``splits.json`` dict: ``{"seed", "group_by": "patient", "stratify_by",
    "num_folds", "folds": [{"train": [case ids], "val": [case ids]}, ...]}`` with case ids sorted
    inside each list. Raises InputError ``too_few_patients`` when there are fewer patients than
    folds (``folds`` must be >= 2).
    """
    if folds < 2:
        raise InputError("bad_argument", f"--folds must be >= 2, got {folds}")
    cases_of: dict[str, list[str]] = defaultdict(list)
    group_of: dict[str, str | None] = {}
    for e in entries:
        cases_of[str(e["patient"])].append(str(e["case"]))
        group_of.setdefault(str(e["patient"]), e.get("group"))
    patients = sorted(cases_of)
    if len(patients) < folds:
        raise InputError(
            "too_few_patients",
            f"{len(patients)} patient(s) cannot make {folds} folds; add cases or lower --folds",
        )
    stratify = all(group_of[p] is not None for p in patients)
    strata: dict[str, list[str]] = defaultdict(list)
    for p in patients:
        strata[str(group_of[p]) if stratify else ""].append(p)

    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    position = 0
    for name in sorted(strata):
        members = strata[name]
        for i in rng.permutation(len(members)):
            fold_of[members[int(i)]] = position % folds
            position += 1

    result = []
    for k in range(folds):
        val = sorted(c for p in patients if fold_of[p] == k for c in cases_of[p])
        train = sorted(c for p in patients if fold_of[p] != k for c in cases_of[p])
        result.append({"train": train, "val": val})
    return {
        "seed": int(seed),
        "group_by": "patient",
        "stratify_by": "group" if stratify and len(strata) > 1 else None,
        "num_folds": folds,
        "folds": result,
    }
