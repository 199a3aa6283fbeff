"""3D Slicer segmentations (``.seg.nrrd``) through slicerio: label map -> file and back.

Writing (:func:`write_seg_nrrd`): one layer on exactly the label map's grid (``ijkToLPS`` from
the RAS affine), voxel value = label value, and per segment its name, colour, extent and a
terminology entry (the SNOMED category/type of :func:`medseg.io.label_names.anatomy_code`), so
3D Slicer opens it as a segmentation with named, coloured segments. gzip level 1 (label maps
compress well; level 9 costs seconds on a CT). The NRRD header is ASCII (pynrrd writes no
other), so segment names lose their accents (``Tumör`` -> ``Tumor``) and other non-ASCII
characters become ``?``; the NIfTI label table and the DICOM outputs keep the names as given.

Reading (:func:`read_seg_nrrd`): single-layer files keep their label values; files with several
layers (Slicer stores overlapping segments so) are flattened with segments numbered 1..N in file
order, later segments winning where they overlap (a warning says so). A cropped file (Slicer
crops to the segments' extent) is put on ``grid`` when one is given
(:func:`medseg.io.placement.place_on_grid`).
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Sequence

import numpy as np

from medseg.errors import InputError
from medseg.io.label_names import LabelInfo, anatomy_code
from medseg.io.placement import place_on_grid
from medseg.io.volume import Volume

__all__ = ["SEG_NRRD_SUFFIX", "read_seg_nrrd", "write_seg_nrrd"]

SEG_NRRD_SUFFIX = ".seg.nrrd"
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_seg_nrrd(target, labels: Volume, infos: Sequence[LabelInfo]) -> None:
    """Write ``labels`` ``(X, Y, Z)`` whole numbers with one segment per ``infos`` item into
    ``target`` (a path or a binary file object such as ``io.BytesIO``)."""
    import slicerio

    array = labels.array
    dtype = np.uint8 if array.max(initial=0) <= 255 else np.uint16
    from scipy.ndimage import find_objects

    boxes = find_objects(array)  # one pass: bounding box of every label value
    segments = []
    for info in infos:
        category, type_ = anatomy_code(info.name)
        box = boxes[info.value - 1] if info.value <= len(boxes) else None
        extent = [int(v) for b in box for v in (b.start, b.stop - 1)] if box else []
        segments.append(
            {
                "id": f"Segment_{info.value}",
                "name": _ascii(info.name) or f"label {info.value}",
                "labelValue": int(info.value),
                "layer": 0,
                "color": [round(c / 255, 6) for c in info.color],
                "extent": extent or [0, -1, 0, -1, 0, -1],
                "terminology": {
                    "contextName": "Segmentation category and type - DICOM master list",
                    "category": [category.scheme_designator, category.value, category.meaning],
                    "type": [type_.scheme_designator, type_.value, type_.meaning],
                },
            }
        )
    segmentation = {
        "voxels": np.asarray(array, dtype=dtype),
        "ijkToLPS": _LPS @ labels.affine,
        "segments": segments,
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
    }
    target = target if hasattr(target, "write") else os.fspath(target)
    slicerio.write_segmentation(target, segmentation, compression_level=1)


def read_seg_nrrd(
    path: str | os.PathLike[str], grid: Volume | None = None, warnings: list[str] | None = None
) -> Volume:
    """A ``.seg.nrrd`` as a label ``Volume`` ``(X, Y, Z)``; ``meta`` gets ``label_names`` and
    ``label_colors``."""
    import slicerio

    where = str(path)
    seg = slicerio.read_segmentation(where)
    voxels = np.asarray(seg["voxels"])
    if voxels.ndim not in (3, 4) or not np.issubdtype(voxels.dtype, np.integer):
        raise InputError("unsupported_dtype", "not a label-map segmentation", path=where)
    layers = voxels if voxels.ndim == 4 else voxels[None]
    segments = seg.get("segments", [])
    several = layers.shape[0] > 1
    biggest = len(segments) if several else max([int(s["labelValue"]) for s in segments], default=1)
    out = np.zeros(layers.shape[1:], dtype=np.uint8 if biggest <= 255 else np.uint16)
    names, colors = {}, {}
    overlap = False
    for number, segment in enumerate(segments, start=1):
        value = number if several else int(segment["labelValue"])
        mask = layers[int(segment.get("layer", 0))] == int(segment["labelValue"])
        overlap = overlap or bool(np.any(out[mask]))
        out[mask] = value
        names[value] = str(segment.get("name", f"label {value}"))
        if "color" in segment:
            colors[value] = tuple(int(round(float(c) * 255)) for c in segment["color"][:3])
    if overlap and warnings is not None:
        warnings.append("segments overlap in the .seg.nrrd; the later segment wins")
    affine = _LPS @ np.asarray(seg["ijkToLPS"], dtype=np.float64)
    if grid is not None:
        out = place_on_grid(out, affine, grid.spatial_shape, grid.affine, where)
        affine = grid.affine
    return Volume(out, affine, meta={"label_names": names, "label_colors": colors})


def _ascii(name: str) -> str:
    """``name`` in ASCII: accents dropped, other characters ``?``, no control characters."""
    folded = unicodedata.normalize("NFKD", name)
    kept = "".join(c for c in folded if not unicodedata.combining(c))
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in kept).strip()
