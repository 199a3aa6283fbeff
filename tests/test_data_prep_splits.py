"""Patient-level, seeded, (ACDC) group-stratified folds."""

from __future__ import annotations

from collections import Counter

import pytest

from data_prep.splits import make_splits
from medseg.errors import InputError

GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")


def _acdc_entries(n_patients: int) -> list[dict]:
    return [
        {"case": f"patient{p:03d}_{phase}", "patient": f"patient{p:03d}", "group": GROUPS[p % 5]}
        for p in range(1, n_patients + 1)
        for phase in ("ED", "ES")
    ]


def _patient(case: str) -> str:
    return case.split("_")[0]


@pytest.mark.parametrize("n_patients", [5, 13, 25])
def test_no_patient_in_two_folds_and_every_case_covered(n_patients):
    entries = _acdc_entries(n_patients)
    all_cases = {e["case"] for e in entries}
    splits = make_splits(entries, seed=12345)
    assert splits["group_by"] == "patient" and splits["seed"] == 12345
    assert splits["num_folds"] == len(splits["folds"]) == 5
    seen_val: list[str] = []
    for fold in splits["folds"]:
        train, val = set(fold["train"]), set(fold["val"])
        assert not train & val and train | val == all_cases
        assert not {_patient(c) for c in train} & {_patient(c) for c in val}
        assert fold["train"] == sorted(fold["train"]) and fold["val"] == sorted(fold["val"])
        seen_val += fold["val"]
    assert sorted(seen_val) == sorted(all_cases)  # each case validated exactly once
    sizes = [len({_patient(c) for c in f["val"]}) for f in splits["folds"]]
    assert max(sizes) - min(sizes) <= 1


def test_both_frames_of_a_patient_stay_together():
    splits = make_splits(_acdc_entries(10), seed=1)
    for fold in splits["folds"]:
        for case in fold["val"]:
            pid = _patient(case)
            assert {f"{pid}_ED", f"{pid}_ES"} <= set(fold["val"])


def test_seeded_and_reproducible():
    entries = _acdc_entries(20)
    assert make_splits(entries, seed=7) == make_splits(list(reversed(entries)), seed=7)
    assert make_splits(entries, seed=7)["folds"] != make_splits(entries, seed=8)["folds"]


def test_stratified_by_group_when_every_patient_has_one():
    splits = make_splits(_acdc_entries(25), seed=3)
    assert splits["stratify_by"] == "group"
    group_of = {f"patient{p:03d}": GROUPS[p % 5] for p in range(1, 26)}
    for fold in splits["folds"]:
        groups = Counter(group_of[p] for p in {_patient(c) for c in fold["val"]})
        assert groups == Counter(GROUPS)  # one patient of each pathology per fold


def test_msd_cases_without_groups():
    entries = [
        {"case": f"hippocampus_{i:03d}", "patient": f"hippocampus_{i:03d}"} for i in range(12)
    ]
    splits = make_splits(entries, seed=0, folds=3)
    assert splits["stratify_by"] is None and len(splits["folds"]) == 3
    assert sorted(len(f["val"]) for f in splits["folds"]) == [4, 4, 4]


def test_too_few_patients():
    with pytest.raises(InputError, match="4 patient") as info:
        make_splits(_acdc_entries(4), seed=0)
    assert info.value.code == "too_few_patients"
    with pytest.raises(InputError):
        make_splits(_acdc_entries(4), seed=0, folds=1)
