"""Interactive prompted segmentation on real scans: key box, stopping, 3D box, corrective clicks.

Structures with reference masks shipped in the project: aorta, T12 vertebra (real contrast CT)
and pulmonary artery (second CT) from ``tests/data/real_ct/`` (TotalSegmentator references,
see its README), and the brain of nilearn's MNI152 T1 (nilearn's brain mask) and its right
lateral ventricle (derived: the cerebrospinal fluid inside nilearn's brain mask, grey- and
white-matter probabilities both < 0.2, opened by one voxel; the connected part at the right
lateral ventricle). Every run goes
through the service (:class:`medseg.api.Segmenter` -> ``PromptedVolume.segment/correct``) with
prompts simulated from the reference, on the axial plane:

(a) box (reference box + 5 px) on the largest slice, propagated until the mask vanishes (the old
    rule: the baseline); (b) the same with the stopping rule(s) under test; (c) the 3D box (the
    reference's z-range and in-plane box: key on the middle slice, propagated within the range
    until the mask vanishes: the default rule inside a range the user gave);
    (d) (b) then up to 5 corrective clicks, each at the centre of the largest error component on
    the slice with the most error voxels (missed object -> positive click, false mask ->
    negative click); (e) one positive click at the centre of the largest slice, then (b);
(f) two key boxes, at a quarter and three quarters of the object's slices, the slices between
    them taken from the nearer key or from the higher predicted IoU (``between=``).

Columns: Dice and normalised surface Dice (MONAI, 2 mm), the area under Dice after 0..5 clicks
(mean), leak voxels (predicted on slices outside the reference's slice range) and seconds per
interaction (the embeddings are cached after the first run on a volume, as in the viewer).

    .venv/bin/python -m bench.interactive             # every structure, every protocol
    .venv/bin/python -m bench.interactive --quick     # one structure, smoke run
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from medseg.inference.interactive import StopRule
from medseg.inference.prompted import Prompt

ROOT = Path(__file__).resolve().parents[1]
REAL_CT = ROOT / "tests" / "data" / "real_ct"
# name -> (image, reference mask, CT window (level, width) or None: percentiles)
STRUCTURES = {
    "aorta": ("aorta_ct.nii.gz", "aorta_ct__aorta.nii.gz", (40.0, 400.0)),
    "T12 vertebra": ("aorta_ct.nii.gz", "aorta_ct__vertebrae_T12.nii.gz", (40.0, 400.0)),
    "pulmonary artery": (
        "pulmonary_ct.nii.gz",
        "pulmonary_ct__pulmonary_artery.nii.gz",
        (40.0, 400.0),
    ),  # fmt: skip
    "brain (MNI T1)": ("mni", "mni_mask", None),  # MR: percentile window
    "brain (MNI T1, demo window 40,80)": ("mni", "mni_mask", (40.0, 80.0)),
    "right lateral ventricle (MNI T1)": ("mni", "mni_ventricle", None),
}
RULES = {
    "vanish (old)": StopRule(),
    "iou>=0.6": StopRule(min_iou=0.6),
    "iou>=0.7": StopRule(min_iou=0.7),
    "growth<=1.5": StopRule(max_growth=1.5),
    "iou>=0.7+growth<=1.5": StopRule(min_iou=0.7, max_growth=1.5),
    "iou>=0.8*key": StopRule(relative_iou=0.8),
    "iou>=0.8*key+growth<=1.5": StopRule(relative_iou=0.8, max_growth=1.5),
    "iou>=min(0.7,0.8*key)+growth<=1.5": StopRule(min_iou=0.7, relative_iou=0.8, max_growth=1.5),
}
CLICKS = 5
BOX_MARGIN = 5


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="aorta only, two rules (smoke)")
    parser.add_argument("--rule", default="iou>=min(0.7,0.8*key)+growth<=1.5",
                        choices=sorted(RULES), help="rule of protocols (b), (d), (e)")  # fmt: skip
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--two-keys", action="store_true", help="protocol (f) only")
    parser.add_argument("--old-and-rule", action="store_true",
                        help="(a/b) with the old rule and --rule only, not every rule")  # fmt: skip
    parser.add_argument("--structure", action="append", choices=sorted(STRUCTURES),
                        help="only these structures (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    import torch

    torch.manual_seed(0)
    names = ["aorta"] if args.quick else args.structure or list(STRUCTURES)
    short = args.quick or args.old_and_rule
    rules = {k: RULES[k] for k in (["vanish (old)", args.rule] if short else RULES)}
    from medseg.api import Segmenter

    segmenter = Segmenter(device=args.device).load()
    print("| structure | protocol | Dice | NSD 2 mm | leak voxels | s/interaction |")
    print("| --- | --- | --- | --- | --- | --- |")
    summary, stacks = [], {}
    for name in names:
        case = Case(segmenter, name, stacks)
        for between in ("nearer", "iou"):
            print(case.row(f"(f) two keys, between: {between}", case.two_key_run(between)))
        if args.two_keys:
            continue
        for label, rule in rules.items():
            row = case.box_run(rule)
            print(case.row(f"(a/b) box, stop: {label}", row))
        rule = RULES[args.rule]
        print(case.row("(c) 3D box (within its ends: until vanished)", case.box3d_run()))
        curve, seconds = case.click_run(rule)
        print(case.row(f"(d) box + {CLICKS} clicks", {**curve[-1], "seconds": seconds}))
        dices = [c["dice"] for c in curve]
        print(f"|  | (d) Dice after 0..{CLICKS} clicks | {' / '.join(f'{d:.3f}' for d in dices)}"
              f" | AUC {np.mean(dices):.3f} |  |  |")  # fmt: skip
        print(case.row("(e) one click", case.one_click_run(rule)))
        summary.append((name, curve[0]["dice"], curve[-1]["dice"]))
    for name, before, after in summary:  # (b) -> (d)
        print(f"{name}: (b) {before:.3f} -> (d) {after:.3f}")


class Case:
    """One structure: its volume, reference, the session's PromptedVolume and scoring."""

    def __init__(self, segmenter, name: str, stacks: dict) -> None:
        image_name, mask_name, window = STRUCTURES[name]
        volume, reference = _load(image_name, mask_name)
        self.volume, self.name = volume, name
        if (image_name, window) not in stacks:  # structures of one image share its embeddings
            fork = segmenter.fork()
            stacks[image_name, window] = fork.prompt_volume(volume, axis="axial", window=window)
        self.prompted = stacks[image_name, window]
        self.ref_vol = reference
        self.ref = self.prompted.view.stack(reference)
        areas = self.ref.reshape(len(self.ref), -1).sum(1)
        self.key = int(np.argmax(areas))
        inside = np.flatnonzero(areas)
        self.extent = (int(inside[0]), int(inside[-1]))

    def box_run(self, rule: StopRule) -> dict:
        started = time.perf_counter()
        masks, _ = self.prompted.segment([self._box_prompt()], rule=rule)
        return self.score(masks, time.perf_counter() - started)

    def box3d_run(self) -> dict:
        lo, hi = self.extent
        rows, cols = np.nonzero(self.ref.any(axis=0))
        box = (cols.min(), rows.min(), cols.max(), rows.max())
        key = (lo + hi) // 2
        started = time.perf_counter()
        masks, _ = self.prompted.segment([Prompt("axial", key, _floats(box))], stop_at=(lo, hi))
        return self.score(masks, time.perf_counter() - started)

    def two_key_run(self, between: str) -> dict:
        lo, hi = self.extent
        prompts = [self._box_prompt(index) for index in (lo + (hi - lo) // 4, hi - (hi - lo) // 4)]
        started = time.perf_counter()
        masks, _ = self.prompted.segment(prompts, between=between)
        return self.score(masks, time.perf_counter() - started)

    def one_click_run(self, rule: StopRule) -> dict:
        x, y = _centre(self.ref[self.key])
        started = time.perf_counter()
        prompt = Prompt("axial", self.key, None, [(x, y, 1)])
        masks, _ = self.prompted.segment([prompt], rule=rule)
        return self.score(masks, time.perf_counter() - started)

    def click_run(self, rule: StopRule) -> tuple[list[dict], float]:
        """Dice/NSD after 0..CLICKS corrective clicks, and the median seconds per click."""
        masks, ious = self.prompted.segment([self._box_prompt()], rule=rule)
        curve, times, clicks, anchors = [self.score(masks, 0.0)], [], {}, [self.key]
        for _ in range(CLICKS):
            index, click = self._next_click(masks)
            if index is None:
                curve.append(curve[-1])
                continue
            clicks.setdefault(index, []).append(click)
            started = time.perf_counter()
            masks, ious, _ = self.prompted.correct(
                masks, ious, Prompt("axial", index, None, list(clicks[index])), anchors=anchors,
                rule=rule,
            )  # fmt: skip
            times.append(time.perf_counter() - started)
            anchors = sorted({*anchors, index})
            curve.append(self.score(masks, times[-1]))
        return curve, float(np.median(times)) if times else 0.0

    def _next_click(self, masks: np.ndarray):
        errors = (masks != self.ref).reshape(len(masks), -1).sum(1)
        index = int(np.argmax(errors))
        if errors[index] == 0:
            return None, None
        best = None
        for positive, error in ((1, self.ref[index] & ~masks[index]),
                                (0, masks[index] & ~self.ref[index])):  # fmt: skip
            parts, n = ndimage.label(error)
            if n:
                sizes = ndimage.sum(error, parts, range(1, n + 1))
                part = parts == int(np.argmax(sizes)) + 1
                if best is None or part.sum() > best[1].sum():
                    best = (positive, part)
        x, y = _centre(best[1])
        return index, (x, y, best[0])

    def _box_prompt(self, index: int | None = None) -> Prompt:
        index = self.key if index is None else index
        rows, cols = np.nonzero(self.ref[index])
        h, w = self.ref.shape[1:]
        m = BOX_MARGIN
        box = (max(cols.min() - m, 0), max(rows.min() - m, 0),
               min(cols.max() + m, w - 1), min(rows.max() + m, h - 1))  # fmt: skip
        return Prompt("axial", index, _floats(box))

    def score(self, masks: np.ndarray, seconds: float) -> dict:
        from medseg.metrics import dice

        lo, hi = self.extent
        leak = int(masks[:lo].sum() + masks[hi + 1 :].sum())
        labels = self.prompted.view.unstack(masks)
        return {"dice": float(dice(masks, self.ref, empty=1.0)),
                "nsd": _nsd(labels, self.ref_vol, self.volume.spacing), "leak": leak,
                "seconds": seconds}  # fmt: skip

    def row(self, protocol: str, r: dict) -> str:
        return (f"| {self.name} | {protocol} | {r['dice']:.3f} | {r['nsd']:.3f} | {r['leak']} "
                f"| {r['seconds']:.2f} |")  # fmt: skip


def _load(image_name: str, mask_name: str):
    from medseg.io import load_volume

    if image_name == "mni":
        from nilearn.datasets import MNI152_FILE_PATH, load_mni152_brain_mask

        volume = load_volume(MNI152_FILE_PATH)
        mask = np.asarray(load_mni152_brain_mask().dataobj) > 0
        return volume, (mask if mask_name == "mni_mask" else _ventricle(mask))
    volume = load_volume(REAL_CT / image_name)
    return volume, np.asarray(load_volume(REAL_CT / mask_name, role="label").array) > 0


def _ventricle(brain: np.ndarray) -> np.ndarray:
    """The right lateral ventricle of the MNI152 T1 (voxel grid (197, 233, 189), 1 mm): CSF
    inside the brain mask (grey and white matter probabilities < 0.2), opened by one voxel to
    cut it from the sulci, the part centred at voxel (84, 116, 87), restored within the CSF."""
    from nilearn.datasets import load_mni152_gm_template, load_mni152_wm_template

    grey = np.asarray(load_mni152_gm_template().dataobj)
    white = np.asarray(load_mni152_wm_template().dataobj)
    csf = brain & (grey < 0.2) & (white < 0.2)
    parts, count = ndimage.label(ndimage.binary_erosion(csf))
    centres = ndimage.center_of_mass(csf, parts, range(1, count + 1))
    sizes = ndimage.sum(csf, parts, range(1, count + 1))
    near = [np.linalg.norm(np.subtract(c, (84, 116, 87))) if s > 1000 else np.inf
            for c, s in zip(centres, sizes, strict=True)]  # fmt: skip
    if min(near) > 5:
        raise RuntimeError("the MNI template changed: no ventricle near voxel (84, 116, 87)")
    part = parts == int(np.argmin(near)) + 1
    return ndimage.binary_dilation(part) & csf


def _centre(mask: np.ndarray) -> tuple[float, float]:
    """``(x, y)`` of the pixel deepest inside ``mask`` (distance transform maximum)."""
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(depth)), mask.shape)
    return float(col), float(row)


def _nsd(pred: np.ndarray, ref: np.ndarray, spacing, tolerance: float = 2.0) -> float:
    """MONAI normalised surface Dice at ``tolerance`` mm, on the box around both masks."""
    import torch
    from monai.metrics import compute_surface_dice

    both = pred.astype(bool) | ref
    if not both.any():
        return 1.0
    box = tuple(slice(max(a.min() - 2, 0), a.max() + 3) for a in np.nonzero(both))
    p, r = torch.from_numpy(pred[box].astype(bool)), torch.from_numpy(ref[box])
    one_hot = [torch.stack([~m, m])[None].float() for m in (p, r)]
    value = compute_surface_dice(one_hot[0], one_hot[1], [tolerance],
                                 spacing=[float(s) for s in spacing])  # fmt: skip
    return float(value.nan_to_num(0.0).item())


def _floats(box) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in box)  # type: ignore[return-value]


if __name__ == "__main__":
    main()
