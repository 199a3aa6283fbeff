"""Index a raw Medical Segmentation Decathlon task folder in place.

Layout (ANCHORS.md §12.1): ``TaskNN_Name/{dataset.json, imagesTr/, labelsTr/, imagesTs/}``, one
file per case; multi-modal tasks store the channels as the 4th NIfTI dimension (``(X, Y, Z, C)``
on disk, read with ``load_volume(volume_index="all")`` as ``(C, X, Y, Z)``), labels are 3-D.

Quirks handled:

- macOS ``._*`` files (and anything else starting with ``.`` or ``_``) next to every NIfTI are
  ignored, whether they appear in the folder or in ``dataset.json`` (nnU-Net's converter rule).
- Task04 spells ``release`` as ``relase``; either key is read into ``"release"``.
- ``labels`` is index -> name (``{"0": "background", ...}``); nnU-Net v2's name -> index form is
  accepted and inverted. Indices must be consecutive from 0.
- ``test`` is a flat list of strings (``"./imagesTs/X.nii.gz"``); dict entries are accepted too.
- Paths start with ``"./"``; they are stored relative to the task folder without it.
- Without a ``training`` list, ``imagesTr/`` is scanned and paired with ``labelsTr/`` by name.

The index is a ``dataset.json`` dict (schema in :mod:`data_prep`) with ``"skipped": []``; no file
is opened except ``dataset.json`` (the checks in :mod:`data_prep.checks` read the volumes).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from medseg.errors import InputError

VOLUME_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def index_msd(src: str | Path) -> dict[str, Any]:
    """Read ``src/dataset.json`` and the task folders into a dataset dict (paths not opened).

    Raises InputError (``not_found``, ``bad_dataset_json``) naming the file and the key.
    """
    root = Path(src).expanduser().resolve()
    meta_path = root / "dataset.json"
    if not root.is_dir():
        raise InputError("not_found", "MSD task folder not found", path=str(root))
    if not meta_path.is_file():
        raise InputError(
            "not_found",
            "no dataset.json here: pass the MSD task folder (TaskNN_Name/ holding dataset.json, "
            "imagesTr/, labelsTr/)",
            path=str(root),
        )
    raw = _read_json(meta_path)
    where = str(meta_path)
    modality = _modality(raw, where)
    labels = _labels(raw, where)
    channels = [modality[k] for k in sorted(modality, key=int)]

    if "training" in raw:
        training = [
            _training_entry(item, i, where) for i, item in enumerate(_list(raw, "training", where))
        ]
    else:
        training = _scan_training(root)
    training = [e for e in training if not _hidden(e["image"])]
    test = [_test_entry(item, i, where) for i, item in enumerate(raw.get("test") or [])]
    test = [e for e in test if not _hidden(e["image"])]
    _check_unique(training + test, where)

    return {
        "name": str(raw.get("name") or root.name),
        "layout": "msd",
        "root": str(root),
        "release": _release(raw),
        "modality": {str(i): name for i, name in enumerate(channels)},
        "channel_names": channels,
        "labels": labels,
        "tensorImageSize": "4D" if len(channels) > 1 else "3D",
        "numTraining": len(training),
        "numTest": len(test),
        "training": training,
        "test": test,
        "skipped": [],
        "warnings": [],
    }


def case_id(path: str | PurePosixPath) -> str:
    """File name without its volume extension: ``./imagesTr/spleen_10.nii.gz`` -> ``spleen_10``."""
    name = PurePosixPath(str(path)).name
    for ext in VOLUME_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def is_hidden(name: str) -> bool:
    """macOS ``._*`` resource forks, ``.DS_Store`` and anything starting with ``.`` or ``_``."""
    return name.startswith((".", "_"))


# helpers ---------------------------------------------------------------------------------------
def _hidden(rel: str) -> bool:
    return is_hidden(PurePosixPath(rel).name)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(
            "bad_dataset_json", "dataset.json is not UTF-8 text", path=str(path)
        ) from e
    except json.JSONDecodeError as e:
        raise InputError(
            "bad_dataset_json",
            f"dataset.json is not valid JSON ({e.msg}, line {e.lineno})",
            path=str(path),
        ) from e
    except OSError as e:
        raise InputError(
            "permission", f"cannot read dataset.json ({e.strerror})", path=str(path)
        ) from e
    if not isinstance(data, dict):
        raise InputError("bad_dataset_json", "dataset.json must hold a JSON object", path=str(path))
    return data


def _list(raw: dict[str, Any], key: str, where: str) -> list[Any]:
    value = raw.get(key)
    if not isinstance(value, list):
        raise InputError("bad_dataset_json", f"dataset.json key {key!r} must be a list", path=where)
    return value


def _modality(raw: dict[str, Any], where: str) -> dict[str, str]:
    mod = raw.get("modality", raw.get("channel_names"))
    if not isinstance(mod, dict) or not mod:
        raise InputError(
            "bad_dataset_json",
            'dataset.json needs a \'modality\' object (channel index -> name, e.g. {"0": "CT"})',
            path=where,
        )
    if not all(str(k).isdigit() for k in mod):
        raise InputError(
            "bad_dataset_json",
            f"dataset.json 'modality' keys must be channel indices, got {sorted(mod)}",
            path=where,
        )
    out = {str(int(k)): str(v) for k, v in mod.items()}
    if sorted(int(k) for k in out) != list(range(len(out))):
        raise InputError(
            "bad_dataset_json",
            f"dataset.json 'modality' indices must be 0..{len(out) - 1}",
            path=where,
        )
    return out


def _labels(raw: dict[str, Any], where: str) -> dict[str, str]:
    """index (str) -> name; accepts nnU-Net v2's name -> index and inverts it."""
    labels = raw.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise InputError("bad_dataset_json", "dataset.json needs a 'labels' object", path=where)
    if all(str(k).isdigit() for k in labels):
        pairs = {int(k): str(v) for k, v in labels.items()}
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in labels.values()):
        pairs = {int(v): str(k) for k, v in labels.items()}  # nnU-Net v2: name -> index
    else:
        raise InputError(
            "bad_dataset_json",
            'dataset.json \'labels\' must map index -> name (e.g. {"0": "background"}); '
            "region-based (list) labels are not supported",
            path=where,
        )
    if sorted(pairs) != list(range(len(pairs))):
        raise InputError(
            "bad_dataset_json",
            f"dataset.json label indices must be consecutive from 0, got {sorted(pairs)}",
            path=where,
        )
    return {str(k): pairs[k] for k in sorted(pairs)}


def _release(raw: dict[str, Any]) -> str | None:
    value = raw.get("release", raw.get("relase"))  # Task04_Hippocampus misspells the key
    return None if value is None else str(value)


def _rel(path: Any, where: str, what: str) -> str:
    """``"./imagesTr/x.nii.gz"`` -> ``"imagesTr/x.nii.gz"``; refuses absolute and ``..`` paths."""
    if not isinstance(path, str) or not path.strip():
        raise InputError(
            "bad_dataset_json", f"{what}: expected a path string, got {path!r}", path=where
        )
    p = PurePosixPath(path.strip().replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts:
        raise InputError(
            "bad_dataset_json",
            f"{what}: path {path!r} must be relative to the task folder",
            path=where,
        )
    return str(PurePosixPath(*[part for part in p.parts if part != "."]))


def _training_entry(item: Any, i: int, where: str) -> dict[str, Any]:
    if not isinstance(item, dict) or "image" not in item or "label" not in item:
        raise InputError(
            "bad_dataset_json", f'training[{i}] must be {{"image": ..., "label": ...}}', path=where
        )
    image = _rel(item["image"], where, f"training[{i}].image")
    label = _rel(item["label"], where, f"training[{i}].label")
    case = case_id(image)
    return {"case": case, "patient": case, "image": image, "label": label}


def _test_entry(item: Any, i: int, where: str) -> dict[str, Any]:
    if isinstance(item, dict):  # some re-packaged dataset.json files use dicts
        if "image" not in item:
            raise InputError("bad_dataset_json", f"test[{i}] has no 'image'", path=where)
        image = _rel(item["image"], where, f"test[{i}].image")
        label = _rel(item["label"], where, f"test[{i}].label") if item.get("label") else None
    else:
        image, label = _rel(item, where, f"test[{i}]"), None
    case = case_id(image)
    entry = {"case": case, "patient": case, "image": image}
    if label is not None:
        entry["label"] = label
    return entry


def _scan_training(root: Path) -> list[dict[str, Any]]:
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise InputError(
            "not_found",
            "dataset.json has no 'training' list and there is no imagesTr/ folder",
            path=str(root),
        )
    entries = []
    for image in sorted(images_dir.iterdir()):
        if is_hidden(image.name) or not image.is_file():
            continue
        rel = f"imagesTr/{image.name}"
        case = case_id(rel)
        entries.append(
            {"case": case, "patient": case, "image": rel, "label": f"labelsTr/{image.name}"}
        )
    if not labels_dir.is_dir():
        raise InputError("not_found", "no labelsTr/ folder", path=str(root))
    return entries


def _check_unique(entries: list[dict[str, Any]], where: str) -> None:
    seen: set[str] = set()
    for e in entries:
        if e["case"] in seen:
            raise InputError(
                "bad_dataset_json", f"case {e['case']}: listed twice in dataset.json", path=where
            )
        seen.add(e["case"])
