"""RT Structure Sets (RTSTRUCT) through rt-utils: label map -> contours on the source series.

rt-utils 1.2.7 runs on pydicom 3 (tested here), but three of its habits do not fit medseg, so
:func:`build_rtstruct` uses its dataset and contour builders and not its folder loader or
writer: ``RTStructBuilder.create_new`` reads *every* DICOM file under the folder (other series
included) with pixel data, and ``RTStruct.save`` prints to stdout and writes in place. Here the
source slices are the ones :func:`medseg.io.dicom_seg.source_headers` checked (headers only, Z
order, which is rt-utils' own order: ascending along row x column), and the caller writes the
dataset through the staged writer. rt-utils declares ``ISO_IR 100`` whatever the names hold;
the dataset is written as UTF-8 (``ISO_IR 192``) so non-Latin patient and ROI names survive.

One ROI per label *present* (name, colour, generation algorithm AUTOMATIC or SEMIAUTOMATIC);
contours are the pixel outlines of each slice (OpenCV; collinear points merged, which keeps the
polygon), so the structure is polygonal: read back onto the grid its Dice with the label map is
about 0.98-1.0. A label map
with no label at all is refused (``empty_segmentation``): a structure set needs a contour.
Images with non-square pixels are refused (``rtstruct_unsupported``): rt-utils 1.2.7 scales the
contour points with the wrong pixel spacing then (and its reader swaps rows and columns on
non-square images, so the tests read contours back with pydicom instead).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator, Sequence

import numpy as np

from medseg.errors import InputError
from medseg.io.dicom_seg import check_dicom_source, source_headers
from medseg.io.label_names import LabelInfo
from medseg.io.volume import Volume

__all__ = ["build_rtstruct"]


def build_rtstruct(
    labels: Volume,
    infos: Sequence[LabelInfo],
    meta: dict,
    *,
    algorithm: str = "medseg",
    version: str = "0",
    automatic: bool = True,
    description: str = "medseg segmentation",
):
    """A pydicom RTSTRUCT dataset of ``labels`` ``(X, Y, Z)`` against the series in ``meta``."""
    from rt_utils import ds_helper
    from rt_utils.rtstruct import RTStruct

    check_dicom_source(Volume(labels.array, labels.affine, meta=meta), "rtstruct")
    found = set(np.unique(labels.array).tolist())
    present = [i for i in infos if i.value in found]
    if not present:
        raise InputError(
            "empty_segmentation",
            "rtstruct: the segmentation is empty, and an RT structure set needs at least one "
            "contour; drop rtstruct from --format",
            path=meta.get("path"),
        )
    headers = source_headers(labels, meta)
    rows_mm, cols_mm = (float(v) for v in headers[0].PixelSpacing)
    if abs(rows_mm - cols_mm) > 1e-4 * max(rows_mm, cols_mm):
        raise InputError(
            "rtstruct_unsupported",
            f"rtstruct: the pixels are not square ({rows_mm:g} x {cols_mm:g} mm), and rt-utils "
            "places contours wrongly on such images; write dicom-seg instead",
            path=meta.get("path"),
        )
    with _quiet_pydicom():  # rt-utils sets the transfer syntax the way pydicom 3 deprecates
        ds = ds_helper.create_rtstruct_dataset(headers)
    structure = RTStruct(headers, ds)
    for info in present:
        structure.add_roi(
            mask=np.ascontiguousarray((labels.array == info.value).transpose(1, 0, 2)),
            color=list(info.color),
            name=_name(info.name),
            description=f"label value {info.value}",
            approximate_contours=True,  # straight runs merged: the same polygon
            roi_generation_algorithm="AUTOMATIC" if automatic else "SEMIAUTOMATIC",
        )
    out = structure.ds
    _conform(out, headers[0])
    out.SpecificCharacterSet = "ISO_IR 192"
    out.Manufacturer = out.InstitutionName = "medseg"
    out.ManufacturerModelName = _name(algorithm)
    out.SoftwareVersions = _name(version)
    out.StructureSetLabel = "medseg"
    out.SeriesDescription = _name(description)
    out.SeriesNumber = 901
    return out


def _conform(ds, source) -> None:
    """What rt-utils 1.2.7 leaves out of the standard (dciodvfy's findings): Contour Data as
    float32 strings over the 16 characters a DS may hold (rounded to 0.1 um here), and the
    Type 1/2 attributes of the General Study, RT Series and Frame of Reference modules."""
    from pydicom.valuerep import format_number_as_ds

    for roi in ds.ROIContourSequence:
        for contour in roi.ContourSequence:
            points = [round(float(v), 4) for v in contour.ContourData]
            contour.ContourData = [format_number_as_ds(v) for v in points]
            contour.NumberOfContourPoints = len(points) // 3
    for key in ("ReferringPhysicianName", "AccessionNumber"):
        setattr(ds, key, source.get(key, ""))
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = source.FrameOfReferenceUID
    ds.PositionReferenceIndicator = source.get("PositionReferenceIndicator", "")


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    """pydicom's deprecation warnings (warned *and* logged) silenced for one block."""
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        logger.setLevel(level)


def _name(text: str) -> str:
    """A DICOM LO value (ROI name): no backslash or control characters, <= 64 characters."""
    clean = "".join(" " if ord(c) < 32 or c == "\\" else c for c in str(text)).strip()
    return clean[:64] or "unnamed"
