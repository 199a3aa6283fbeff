"""ACDC clinical indices for ``medseg evaluate --acdc``: per patient the ED/ES volumes, ejection
fractions and myocardial mass of prediction and ground truth, and their agreement table."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

from medseg.errors import InputError

ACDC_NAME = re.compile(r"^(patient\d+)_frame(\d+)$")
INDICES = ("lv_edv", "lv_esv", "lv_ef", "rv_edv", "rv_esv", "rv_ef", "myo_mass_ed")


def acdc_table(volumes: dict[str, dict], phases_path: str | None, failures: list) -> list[dict]:
    """Per patient: two rows (``which`` = pred / gt) of clinical indices."""
    from medseg.inference.evaluation import acdc_indices

    phases = json.loads(Path(phases_path).read_text(encoding="utf-8")) if phases_path else {}
    frames: dict[str, dict[int, str]] = {}
    for case in volumes:
        m = ACDC_NAME.match(case)
        if m is None:
            exc = InputError("not_acdc", f"case {case} is not named patientNNN_frameXX")
            print(f"error: {exc}", file=sys.stderr)
            failures.append((case, exc))
            continue
        frames.setdefault(m.group(1), {})[int(m.group(2))] = case
    rows, guessed = [], []
    for patient, cases in sorted(frames.items()):
        try:
            ed, es = _phases(patient, cases, volumes, phases, guessed)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failures.append((patient, exc))
            continue
        a, b = volumes[cases[ed]], volumes[cases[es]]
        for which in ("pred", "gt"):
            idx = acdc_indices(a[which], b[which], a["ml"], b["ml"])
            rows.append({"patient": patient, "ed": ed, "es": es, "which": which, **idx})
    if guessed:
        shown = ", ".join(guessed)
        print(f"note: ED/ES taken from the LV volume (no Info.cfg): {shown}", file=sys.stderr)
    return rows


def _phases(patient: str, cases: dict[int, str], volumes, phases: dict, guessed: list):
    if patient in phases:
        ed, es = int(phases[patient]["ED"]), int(phases[patient]["ES"])
    else:
        info = Path(volumes[next(iter(cases.values()))]["path"]).parent / "Info.cfg"
        if info.is_file():
            from medseg.data.acdc import parse_info_cfg

            cfg = parse_info_cfg(info)
            ed, es = cfg["ED"], cfg["ES"]
        elif len(cases) == 2:
            lv = {f: int((volumes[c]["gt"] == 3).sum()) for f, c in cases.items()}
            ed, es = sorted(lv, key=lambda f: -lv[f])
            guessed.append(patient)
        else:
            raise InputError("no_phases", f"{patient}: ED/ES unknown (no Info.cfg, --phases)")
    missing = [f for f in (ed, es) if f not in cases]
    if missing:
        raise InputError("missing_frame", f"{patient}: no frame(s) {missing} among the cases")
    return ed, es


def acdc_summary(rows: list[dict]) -> str:
    """Markdown table: index, patients, mean GT, mean prediction, correlation, MAD, bias."""
    from medseg.inference.evaluation import agreement

    pred = {r["patient"]: r for r in rows if r["which"] == "pred"}
    gt = {r["patient"]: r for r in rows if r["which"] == "gt"}
    ids = sorted(pred)
    lines = [
        "| index | patients | GT mean | pred mean | corr | MAD | bias |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in INDICES:
        p, g = [pred[i][key] for i in ids], [gt[i][key] for i in ids]
        a = agreement(p, g)
        gm = sum(g) / len(g) if g else math.nan
        pm = sum(p) / len(p) if p else math.nan
        lines.append(
            f"| {key} | {a['n']} | {gm:.2f} | {pm:.2f} | {a['corr']:.3f} | {a['mad']:.2f} "
            f"| {a['bias']:+.2f} |"
        )
    return "\n".join(lines)
