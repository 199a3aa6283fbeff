"""Small synthetic datasets written in the **exact raw layouts** of MSD and ACDC.

They exercise the real indexers (``._`` junk, 4-D multi-channel MSD images, flat test lists,
headerless ``Info.cfg``, ED/ES frame files, test labels) and hold structures a small network can
learn. Everything is deterministic from ``seed`` (each case uses ``default_rng([seed, n])``).

MSD (:func:`write_msd`) -> ``OUT/Task99_Synthetic/{dataset.json, imagesTr, labelsTr, imagesTs}``:
an "organ" ellipsoid (label 1) holding a smaller "lesion" ellipsoid (label 2) at random position
and size; MR-like intensities per channel (contrast differs per channel; ``channels > 1`` writes
``(X, Y, Z, C)`` 4-D NIfTI, ``tensorImageSize`` "4D") or, with ``ct=True``, int16 Hounsfield
units (air -1000, body ~30, organ ~110, hypodense lesion ~55, a bone-like blob ~700). Noise and a
smooth multiplicative bias field (MR) on top. A few macOS ``._*`` files and a ``.DS_Store`` are
written next to the volumes.

ACDC (:func:`write_acdc`) -> ``OUT/database/{MANDATORY_CITATION.md, training/patient001..,
testing/patient101..}``, each with ``Info.cfg`` (no section header), ``MANDATORY_CITATION.md``,
``patientNNN_4d.nii.gz`` (the whole cine, ``(X, Y, Z, T)`` int16) and the ED/ES frames with
``_gt`` labels: LV blood pool (bright disk, 3), myocardium ring around it (dark, 2) and an RV
crescent beside it (bright, 1), shrinking from base to apex; the LV contracts from ED (frame 1)
to ES with the myocardium thickening (ring area conserved); groups NOR/MINF/DCM/HCM/RV cycle over
patients and change size, contraction and wall thickness. Default geometry (64, 64, 8) voxels of
(1.5, 1.5, 10) mm. Ten patients take well under 2 s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.errors import InputError

MSD_TASK = "Task99_Synthetic"
MSD_LABELS = {"0": "background", "1": "organ", "2": "lesion"}
MR_CHANNELS = {
    1: ["MRI"],
    2: ["T2", "ADC"],
    3: ["FLAIR", "T1w", "T2w"],
    4: ["FLAIR", "T1w", "t1gd", "T2w"],
}
# per MR channel: (background, organ, lesion) intensity
MR_CONTRAST = [(30.0, 150.0, 260.0), (40.0, 120.0, 50.0), (20.0, 200.0, 120.0), (60.0, 90.0, 220.0)]
ACDC_GROUPS = ("NOR", "MINF", "DCM", "HCM", "RV")
# group -> (LV size factor, ES/ED LV radius ratio, wall thickness factor, RV size factor)
_GROUP_SHAPE = {
    "NOR": (1.0, 0.68, 1.0, 1.0),
    "MINF": (1.1, 0.82, 0.9, 1.0),
    "DCM": (1.25, 0.88, 0.8, 1.0),
    "HCM": (0.85, 0.55, 1.6, 1.0),
    "RV": (1.0, 0.70, 1.0, 1.5),
}
_APPLEDOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + b"\x00" * 58
_CITATION = (
    "Synthetic stand-in written by medseg (data_prep.synthetic); not patient data.\n"
    "The real ACDC data must be cited as: O. Bernard et al., Deep Learning Techniques for "
    "Automatic MRI Cardiac Multi-structures Segmentation and Diagnosis: Is the Problem Solved?, "
    "IEEE TMI 37(11), 2018.\n"
)


def write_synthetic(
    layout: str,
    out: str | Path,
    *,
    cases: int | None = None,
    test_cases: int | None = None,
    channels: int = 1,
    ct: bool = False,
    seed: int = 0,
) -> Path:
    """Write a raw ``layout`` ("msd" | "acdc") dataset under ``out``; return the folder to pass
    to ``prepare`` as ``src`` (the task folder for MSD, ``OUT`` for ACDC).

    ``cases``: training cases (MSD, default 8) or training patients (ACDC, default 10);
    ``test_cases``: default 2. ``channels``/``ct`` are MSD only.
    """
    if layout == "msd":
        return write_msd(
            out,
            cases=8 if cases is None else cases,
            test_cases=2 if test_cases is None else test_cases,
            channels=channels,
            ct=ct,
            seed=seed,
        )
    if layout == "acdc":
        if channels != 1 or ct:
            raise InputError(
                "bad_argument", "ACDC is single-channel cine MRI: drop --channels/--ct"
            )
        return write_acdc(
            out,
            patients=10 if cases is None else cases,
            test_patients=2 if test_cases is None else test_cases,
            seed=seed,
        )
    raise InputError("bad_argument", f"layout must be 'msd' or 'acdc', got {layout!r}")


def write_msd(
    out: str | Path,
    *,
    cases: int = 8,
    test_cases: int = 2,
    channels: int = 1,
    ct: bool = False,
    seed: int = 0,
    shape: Sequence[int] = (40, 40, 24),
    spacing: Sequence[float] = (1.0, 1.0, 1.5),
    task: str = MSD_TASK,
) -> Path:
    """Write ``OUT/<task>/`` in the MSD layout (see module docstring); return the task folder."""
    if channels not in MR_CHANNELS or (ct and channels != 1):
        raise InputError("bad_argument", f"channels must be 1-4 (1 for CT), got {channels}")
    if cases < 1 or test_cases < 0:
        raise InputError("bad_argument", "need at least 1 training case and >= 0 test cases")
    root = _fresh(Path(out) / task)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir()
    names = ["CT"] if ct else MR_CHANNELS[channels]
    affine = _affine(spacing, shape)
    training, test = [], []
    for n in range(1, cases + test_cases + 1):
        name = f"synthetic_{n:03d}.nii.gz"
        image, label = _msd_case(np.random.default_rng([seed, n]), shape, spacing, len(names), ct)
        split = "Tr" if n <= cases else "Ts"
        _save(root / f"images{split}" / name, image, affine)
        if n <= cases:
            _save(root / "labelsTr" / name, label, affine)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            test.append(f"./imagesTs/{name}")
        if n in (1, 2, cases + 1):  # macOS junk next to a few files, as in the real tarballs
            (root / f"images{split}" / f"._{name}").write_bytes(_APPLEDOUBLE)
            if n <= cases:
                (root / "labelsTr" / f"._{name}").write_bytes(_APPLEDOUBLE)
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    meta = {
        "name": "Synthetic",
        "description": "Synthetic organ/lesion ellipsoids (medseg data_prep.synthetic)",
        "reference": "medseg",
        "licence": "CC-BY-SA 4.0",
        "release": "1.0 synthetic",
        "tensorImageSize": "4D" if len(names) > 1 else "3D",
        "modality": {str(i): v for i, v in enumerate(names)},
        "labels": dict(MSD_LABELS),
        "numTraining": cases,
        "numTest": test_cases,
        "training": training,
        "test": test,
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=4) + "\n", encoding="utf-8")
    return root


def write_acdc(
    out: str | Path,
    *,
    patients: int = 10,
    test_patients: int = 2,
    seed: int = 0,
    shape: Sequence[int] = (64, 64, 8),
    spacing: Sequence[float] = (1.5, 1.5, 10.0),
) -> Path:
    """Write ``OUT/database/`` in the ACDC layout (see module docstring); return ``OUT``."""
    if patients < 1 or test_patients < 0:
        raise InputError("bad_argument", "need at least 1 training patient and >= 0 test patients")
    base = _fresh(Path(out) / "database")
    (base / "MANDATORY_CITATION.md").write_text(_CITATION, encoding="utf-8")
    first_test = max(101, patients + 1)
    numbers = [("training", n) for n in range(1, patients + 1)]
    numbers += [("testing", n) for n in range(first_test, first_test + test_patients)]
    affine = _affine(spacing, shape)
    for split, n in numbers:
        _acdc_patient(base / split / f"patient{n:03d}", n, seed, shape, affine)
    return Path(out)


# MSD --------------------------------------------------------------------------------------------
def _msd_case(rng, shape, spacing, n_channels: int, ct: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(image (X, Y, Z) or (X, Y, Z, C), label (X, Y, Z) uint8)``."""
    grid = _mm_grid(shape, spacing)
    extent = np.asarray(shape) * np.asarray(spacing)
    centre = extent * rng.uniform(0.38, 0.62, size=3)
    radii = extent * rng.uniform(0.18, 0.3, size=3)
    organ = _ellipsoid(grid, centre, radii)
    lesion_radii = radii * rng.uniform(0.3, 0.45, size=3)
    lesion_centre = centre + radii * rng.uniform(-0.3, 0.3, size=3)
    lesion = _ellipsoid(grid, lesion_centre, lesion_radii) & organ
    label = organ.astype(np.uint8)
    label[lesion] = 2
    if ct:
        body = ((grid[..., :2] - extent[:2] / 2) ** 2 / (extent[:2] * 0.48) ** 2).sum(-1) <= 1
        hu = np.where(body, 30.0, -1000.0)
        bone = _ellipsoid(grid, extent * rng.uniform(0.2, 0.8, 3), extent * 0.06) & body & ~organ
        hu[bone] = 700.0
        hu[organ] = 110.0 + rng.normal(0, 8)
        hu[lesion] = 55.0 + rng.normal(0, 8)
        hu += rng.normal(0, 15.0, size=hu.shape)
        return np.clip(np.round(hu), -1024, 3071).astype(np.int16), label
    bias = _bias(rng, grid / extent)
    chans = []
    for c in range(n_channels):
        bg, org, les = MR_CONTRAST[c]
        img = np.full(shape, bg) + (org - bg) * organ + (les - org) * lesion
        img = img * rng.uniform(0.8, 1.25) * bias + rng.normal(0, 8.0, size=shape)
        chans.append(np.clip(img, 0, None).astype(np.float32))
    return (chans[0] if n_channels == 1 else np.stack(chans, axis=-1)), label


# ACDC -------------------------------------------------------------------------------------------
def _acdc_patient(folder: Path, n: int, seed: int, shape, affine: np.ndarray) -> None:
    rng = np.random.default_rng([seed, n])
    group = ACDC_GROUPS[(n - 1) % len(ACDC_GROUPS)]
    size_f, es_ratio, wall_f, rv_f = _GROUP_SHAPE[group]
    nb_frames = int(rng.integers(10, 16))
    ed, es = 1, int(round(nb_frames * rng.uniform(0.3, 0.45))) + 1
    heart = {
        "cx": shape[0] / 2 + rng.uniform(-6, 6),
        "cy": shape[1] / 2 + rng.uniform(-6, 6),
        "r_ed": rng.uniform(7.0, 9.0) * size_f,
        "es_ratio": es_ratio + rng.uniform(-0.03, 0.03),
        "wall": rng.uniform(2.5, 3.3) * wall_f,
        "rv_r": rng.uniform(1.1, 1.3) * rv_f,  # x the ED epicardial radius
        "rv_angle": rng.uniform(0.8, 1.2) * np.pi,
    }
    look = {
        "blood": rng.uniform(170, 240),
        "myo": rng.uniform(50, 80),
        "tissue": rng.uniform(95, 125),
        "noise": rng.uniform(5, 10),
        "bias": rng.uniform(-0.15, 0.15, size=3),
    }
    _cine_fields(shape, look)
    frames, labels = [], {}
    for t in range(nb_frames):
        contraction = _contraction(t, ed - 1, es - 1, nb_frames)
        label = _heart_label(shape, heart, contraction)
        frames.append(_cine_image(rng, label, look))
        if t + 1 in (ed, es):
            labels[t + 1] = label
    folder.mkdir(parents=True)
    info = {
        "ED": ed,
        "ES": es,
        "Group": group,
        "Height": round(float(rng.uniform(150, 195)), 1),
        "NbFrame": nb_frames,
        "Weight": round(float(rng.uniform(50, 110)), 1),
    }
    (folder / "Info.cfg").write_text(
        "".join(f"{k}: {v}\n" for k, v in info.items()), encoding="utf-8"
    )
    (folder / "MANDATORY_CITATION.md").write_text(_CITATION, encoding="utf-8")
    pid = folder.name
    _save(folder / f"{pid}_4d.nii.gz", np.stack(frames, axis=-1), affine)
    for frame in (ed, es):
        _save(folder / f"{pid}_frame{frame:02d}.nii.gz", frames[frame - 1], affine)
        _save(folder / f"{pid}_frame{frame:02d}_gt.nii.gz", labels[frame], affine)


def _contraction(t: int, ed: int, es: int, n: int) -> float:
    """0 at ED, 1 at ES, back towards 0 by the end of the cycle (cosine ramps)."""
    if t <= es:
        return float(0.5 - 0.5 * np.cos(np.pi * (t - ed) / max(es - ed, 1)))
    return float(0.5 + 0.5 * np.cos(np.pi * (t - es) / max(n - es, 1)))


def _heart_label(shape, h: dict, c: float) -> np.ndarray:
    """(X, Y, Z) uint8: 1 RV, 2 MYO, 3 LV at contraction ``c`` (0 = ED, 1 = ES)."""
    x, y = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    r_lv = h["r_ed"] * (1 - c * (1 - h["es_ratio"]))
    ring = (h["r_ed"] + h["wall"]) ** 2 - h["r_ed"] ** 2  # myocardial area / pi, conserved
    r_out = np.sqrt(r_lv**2 + ring)
    epi_ed = h["r_ed"] + h["wall"]
    rv_r = h["rv_r"] * epi_ed * (1 - 0.2 * c)
    dist = 0.85 * epi_ed  # the RV disk overlaps the LV; cutting the LV out leaves a crescent
    d_lv = np.hypot(x - h["cx"], y - h["cy"])
    label = np.zeros(tuple(shape), dtype=np.uint8)
    nz = shape[2]
    for z in range(nz):
        s = 1.0 - 0.55 * (z / max(nz - 1, 1)) ** 1.5  # base (z = 0) -> apex
        outer = d_lv <= r_out * s
        cavity = d_lv <= r_lv * s * (0.4 if z == nz - 1 else 1.0)
        if z < nz - 1:
            rx = h["cx"] + dist * s * np.cos(h["rv_angle"])
            ry = h["cy"] + dist * s * np.sin(h["rv_angle"])
            rv = (np.hypot(x - rx, y - ry) <= rv_r * s) & (d_lv > r_out * s + 1.0)
            label[..., z][rv] = 1
        label[..., z][outer] = 2
        label[..., z][cavity] = 3
    return label


def _cine_image(rng, label: np.ndarray, look: dict) -> np.ndarray:
    """(X, Y, Z) int16 image for a label map: bright blood, dark myocardium, textured tissue."""
    img = look["background"].copy()
    img[label == 2] = look["myo"]
    img[(label == 1) | (label == 3)] = look["blood"]
    img = img * look["bias_field"] + rng.normal(0, look["noise"], size=img.shape)
    return np.clip(np.round(img), 0, None).astype(np.int16)


def _cine_fields(shape, look: dict) -> None:
    """Add the per-patient ``background`` (body disk in air) and ``bias_field`` to ``look``."""
    unit = _mm_grid(shape, (1.0, 1.0, 1.0)) / np.asarray(shape, dtype=float)
    body = ((unit[..., :2] - 0.5) ** 2).sum(-1) <= 0.45**2
    look["background"] = np.where(body, look["tissue"], 12.0)
    look["bias_field"] = 1.0 + (unit - 0.5) @ look["bias"]


# helpers ----------------------------------------------------------------------------------------
def _fresh(folder: Path) -> Path:
    if folder.exists() and any(folder.iterdir()):
        raise InputError(
            "exists", "folder exists and is not empty; choose another --out", path=str(folder)
        )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _affine(spacing: Sequence[float], shape: Sequence[int]) -> np.ndarray:
    """Axis-aligned RAS affine with the grid centred near the scanner origin."""
    aff = np.diag([*map(float, spacing), 1.0])
    aff[:3, 3] = -np.asarray(spacing, dtype=float) * (np.asarray(shape) - 1) / 2
    return aff


def _mm_grid(shape, spacing) -> np.ndarray:
    axes = [np.arange(s) * float(d) for s, d in zip(shape, spacing, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def _ellipsoid(grid: np.ndarray, centre, radii) -> np.ndarray:
    return (((grid - np.asarray(centre)) / np.asarray(radii)) ** 2).sum(-1) <= 1.0


def _bias(rng, unit_grid: np.ndarray) -> np.ndarray:
    """Smooth multiplicative field within about +-20% (linear + one quadratic term)."""
    lin = (unit_grid - 0.5) @ rng.uniform(-0.2, 0.2, size=3)
    quad = rng.uniform(-0.15, 0.15) * ((unit_grid - 0.5) ** 2).sum(-1)
    return 1.0 + lin + quad


def _save(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.header.set_data_dtype(array.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
