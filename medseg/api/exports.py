"""Output formats of a segmentation: which files each writes, what each needs, their bytes.

========================= ============================ =========================================
format                    file                         needs / holds
========================= ============================ =========================================
``nifti`` (default)       ``<name>_seg.nii.gz``        any input; label names and colours in a
                                                       header extension (TotalSegmentator's)
``dicom-seg``             ``<name>_seg.dcm``           a DICOM series input; BINARY DICOM SEG
                                                       referencing every source slice
``dicom-seg-labelmap``    ``<name>_seg_labelmap.dcm``  the same as a LABELMAP SEG (DICOM 2024)
``rtstruct``              ``<name>_rtstruct.dcm``      a DICOM series input with square pixels;
                                                       one contoured ROI per label present
``seg-nrrd``              ``<name>_seg.seg.nrrd``      any input; 3D Slicer segmentation
========================= ============================ =========================================

Every format gets the same labels (:func:`labels_of`): the named ones plus every value present,
coloured with the viewer's palette (:func:`medseg.viz.core.label_color`). The DICOM formats are
checked against the input before any model work (:func:`check_sources`): a SEG or RTSTRUCT
references its source images, so for a NIfTI/NRRD input they are refused with the reason
(``needs_dicom_source``) rather than written against nothing.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from medseg.errors import InputError
from medseg.io.volume import Volume

__all__ = [
    "FORMATS",
    "IMAGE_FORMATS",
    "DICOM_FORMATS",
    "check_sources",
    "encode",
    "format_files",
    "labels_of",
    "parse_formats",
]

#: every segmentation format, in the order of the table above
FORMATS = ("nifti", "dicom-seg", "dicom-seg-labelmap", "rtstruct", "seg-nrrd")
#: the formats that reference the source DICOM series
DICOM_FORMATS = ("dicom-seg", "dicom-seg-labelmap", "rtstruct")
#: what a restored *image* can be written as (the output name's extension picks the container)
IMAGE_FORMATS = ("nifti",)
_SUFFIX = {
    "nifti": "_seg.nii.gz",
    "dicom-seg": "_seg.dcm",
    "dicom-seg-labelmap": "_seg_labelmap.dcm",
    "rtstruct": "_rtstruct.dcm",
    "seg-nrrd": "_seg.seg.nrrd",
}


def parse_formats(formats: str | Sequence[str], allowed: Sequence[str] = FORMATS) -> list[str]:
    """``"nifti,dicom-seg"`` or ``["nifti", "dicom-seg"]`` as a list without repeats, refusing
    (``bad_argument``) an unknown format, an empty list, or one not in ``allowed``."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    items = list(dict.fromkeys(f.strip().lower() for f in items if f and f.strip()))
    unknown = [f for f in items if f not in FORMATS]
    if unknown or not items:
        raise InputError(
            "bad_argument",
            f"unknown output format {', '.join(map(repr, unknown)) or '(none)'}; "
            f"supported: {', '.join(FORMATS)} (comma-separated for several)",
        )
    refused = [f for f in items if f not in allowed]
    if refused:
        raise InputError(
            "bad_argument",
            f"--format {', '.join(refused)} holds a segmentation; a restored image is written "
            f"as {', '.join(allowed)} (the output name's extension picks .nii.gz, .nrrd or .mha)",
        )
    return items


def format_files(stem: str, formats: Sequence[str]) -> list[str]:
    """The file name each format writes for output stem ``stem``, in ``formats`` order."""
    return [f"{stem}{_SUFFIX[f]}" for f in formats]


def check_sources(formats: Sequence[str], image: Volume | str | None) -> None:
    """Refuse the DICOM formats for an input that is not a DICOM series (``image``: the input
    Volume, or its path when not read yet: only a folder can be a series)."""
    from pathlib import Path

    from medseg.io.dicom_seg import check_dicom_source

    for fmt in formats:
        if fmt not in DICOM_FORMATS:
            continue
        if isinstance(image, Volume):
            check_dicom_source(image, fmt)
        elif image is None or not Path(image).is_dir():
            check_dicom_source(None, fmt, where=None if image is None else str(image))


def labels_of(labels: Volume, names: dict[int, str]) -> list:
    """The :class:`medseg.io.label_names.LabelInfo` s every format writes."""
    from medseg.io.label_names import describe_labels
    from medseg.viz.core import label_color

    return describe_labels(labels.array, names, label_color)


def encode(
    fmt: str, labels: Volume, image: Volume, infos: list, *, model: str, automatic: bool
) -> Volume | bytes:
    """What :func:`medseg.api.outputs.write_outputs` writes for ``fmt``: the label Volume
    (NIfTI, with its label table) or the file's bytes."""
    from medseg import __version__

    if fmt == "nifti":
        return replace(labels, meta={**labels.meta, "label_table": infos})
    buffer = io.BytesIO()
    if fmt == "seg-nrrd":
        from medseg.io.seg_nrrd import write_seg_nrrd

        write_seg_nrrd(buffer, labels, infos)
        return buffer.getvalue()
    about: dict[str, Any] = {
        "algorithm": f"medseg {model.split(':')[0]}",
        "version": __version__,
        "automatic": automatic,
        "description": f"medseg {model.split(':')[0]} segmentation",
    }
    if fmt == "rtstruct":
        from medseg.io.rtstruct import build_rtstruct

        dataset = build_rtstruct(labels, infos, image.meta, **about)
    else:
        from medseg.io.dicom_seg import build_seg

        dataset = build_seg(labels, infos, image.meta, labelmap=fmt.endswith("labelmap"), **about)
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
