"""DICOM Segmentation objects (SEG): label map -> SEG against its source series, and back.

Writing (:func:`build_seg`, highdicom): the label map must lie on the grid of the DICOM series it
was made from, as :func:`medseg.io.load_volume` read it (``Volume.meta`` keeps the series' study,
series, frame-of-reference and per-slice SOP instance UIDs and file paths, in Z order). The slice
headers are read again (no pixel data) and must still be the ones read then (same SOP instance
UIDs, same positions; missing Type 2 patient/study attributes, which anonymisers drop, are
copied as empty values): a SEG references its source images one frame each, so it is never built
against anything else. One segment per label (:func:`medseg.io.label_names.describe_labels`):
name, colour (CIELab from the RGB), SNOMED category/type
(:func:`~medseg.io.label_names.anatomy_code`), the algorithm (name, version, family "Artificial
Intelligence"), and the label value in the segment's Segment Description (``label value N``) so
that values survive the 1..N segment numbering. ``BINARY`` by default; ``LABELMAP`` (DICOM 2024,
one frame per slice) on request. Slices without any label are left out (highdicom's default).

Reading (:func:`read_seg`, pydicom): BINARY, FRACTIONAL (thresholded at half the maximum) and
LABELMAP SEGs of one frame of reference and one orientation, frames at whole-voxel steps. The
label value of a segment is the value medseg wrote, else its segment number; where segments
overlap the higher-numbered segment wins (a warning says so). The grid is the block from the
first to the last frame; with ``grid`` (the image's) the block is put on that grid
(:func:`medseg.io.placement.place_on_grid`), so a SEG that left out empty slices still lines up.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.io.label_names import LabelInfo, anatomy_code
from medseg.io.placement import place_on_grid
from medseg.io.volume import Volume

__all__ = ["SEG_SOP_CLASSES", "build_seg", "check_dicom_source", "read_seg", "source_headers"]

#: SOP class UIDs of segmentation storage (binary/fractional, label map)
SEG_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"}
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
_POSITION_TOL_MM = 1e-2
_VALUE_TAG = re.compile(r"^label value (\d+)$")
# Type 2 patient/study attributes the derived objects copy (present, possibly empty)
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber",
          "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")  # fmt: skip
_SOURCE_KEYS = ("study_uid", "series_uid", "frame_of_reference_uid", "sop_instance_uids")


def check_dicom_source(image: Volume | None, fmt: str, where: str | None = None) -> None:
    """Refuse (``needs_dicom_source``) a DICOM SEG/RTSTRUCT for an image that was not read
    from a DICOM series (``image`` None: the input is a file, not a series folder)."""
    meta = image.meta if image is not None else {}
    if image is None or meta.get("format") != "dicom" or not all(meta.get(k) for k in _SOURCE_KEYS):
        raise InputError(
            "needs_dicom_source",
            f"--format {fmt} references the source DICOM images, but this input is not a DICOM "
            "series: segment the DICOM series folder, or write nifti/seg-nrrd",
            path=where or meta.get("path"),
        )


def source_headers(labels: Volume, meta: dict) -> list:
    """The source slices' pydicom headers (no pixel data) in Z order, after checking that they
    are the slices that were read and that ``labels`` ``(X, Y, Z)`` lies on their grid."""
    import pydicom

    files, uids = meta["dicom_files"], meta["sop_instance_uids"]
    if labels.array.ndim != 3 or labels.spatial_shape[2] != len(files):
        raise InputError(
            "grid_mismatch",
            "the label map is not on the source series' grid",
            path=meta.get("path"),
        )
    headers = []
    lps = _LPS @ labels.affine
    for k, (name, uid) in enumerate(zip(files, uids, strict=True)):
        try:
            ds = pydicom.dcmread(name, stop_before_pixels=True)
        except (OSError, pydicom.errors.InvalidDicomError) as err:
            raise InputError(
                "dicom_source_changed",
                f"the source slice cannot be read again ({type(err).__name__})",
                path=name,
            ) from err
        position = np.asarray([float(v) for v in ds.get("ImagePositionPatient", [])])
        expected = (lps @ [0.0, 0.0, k, 1.0])[:3]
        if str(ds.get("SOPInstanceUID", "")) != uid or position.shape != (3,):
            raise InputError(
                "dicom_source_changed",
                "the source DICOM series changed since it was read",
                path=name,
            )
        if np.max(np.abs(position - expected)) > _POSITION_TOL_MM:
            raise InputError(
                "grid_mismatch",
                "the label map is not on the source series' grid",
                path=name,
            )
        for key in _TYPE2:  # anonymisers drop them; the SEG/RTSTRUCT must carry them (empty)
            if key not in ds:
                setattr(ds, key, "")
        headers.append(ds)
    return headers


def build_seg(
    labels: Volume,
    infos: Sequence[LabelInfo],
    meta: dict,
    *,
    labelmap: bool = False,
    algorithm: str = "medseg",
    version: str = "0",
    automatic: bool = True,
    description: str = "medseg segmentation",
):
    """A highdicom ``Segmentation`` of ``labels`` ``(X, Y, Z)`` against the series in
    ``meta`` (module docstring); ``infos`` lists every label value in ``labels``."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    check_dicom_source(Volume(labels.array, labels.affine, meta=meta), "dicom-seg")
    headers = source_headers(labels, meta)
    segment_of = np.zeros(int(max([i.value for i in infos], default=0)) + 1, dtype=np.uint16)
    for number, info in enumerate(infos, start=1):
        segment_of[info.value] = number
    if labels.array.max(initial=0) >= len(segment_of) or (
        np.any(segment_of[np.unique(labels.array)][1:] == 0)
    ):
        raise ValueError("infos must describe every label value present")
    dtype = np.uint8 if len(infos) <= 255 else np.uint16
    # (Z, rows, columns), contiguous: highdicom works plane by plane, and planes of a transposed
    # view are strided (about 3x slower on a 512 x 512 x 300 map)
    frames = np.ascontiguousarray(segment_of.astype(dtype)[labels.array].transpose(2, 1, 0))
    identification = hd.AlgorithmIdentificationSequence(
        name=_lo(algorithm), version=_lo(version), family=codes.cid7162.ArtificialIntelligence
    )
    kind = "AUTOMATIC" if automatic else "SEMIAUTOMATIC"
    segments = []
    for number, info in enumerate(infos, start=1):
        category, type_ = anatomy_code(info.name)
        segment = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=_lo(info.name),
            segmented_property_category=category,
            segmented_property_type=type_,
            algorithm_type=kind,
            algorithm_identification=identification,
            display_color=hd.color.CIELabColor.from_rgb(*info.color),
        )
        segment.SegmentDescription = f"label value {info.value}"
        segments.append(segment)
    return hd.seg.Segmentation(
        source_images=headers,
        pixel_array=frames,
        segmentation_type="LABELMAP" if labelmap else "BINARY",
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=900,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medseg",
        manufacturer_model_name=_lo(algorithm),
        software_versions=_lo(version),
        device_serial_number="none",
        content_description=_lo(description),
        content_label="MEDSEG",
        series_description=_lo(description),
    )


def read_seg(path: str | Path, grid: Volume | None = None, warnings: list[str] | None = None):
    """A DICOM SEG file as a label ``Volume`` ``(X, Y, Z)`` (module docstring); ``meta`` gets
    ``label_names``, ``label_colors``, ``referenced_series_uid`` and ``series_uid``."""
    import pydicom

    where = str(path)
    ds = pydicom.dcmread(where)
    if str(ds.get("SOPClassUID", "")) not in SEG_SOP_CLASSES:
        raise InputError(
            "unknown_format",
            "a single DICOM file that is no DICOM SEG: pass the folder holding the whole series",
            path=where,
        )
    kind = str(ds.get("SegmentationType", "BINARY")).upper()
    values, names, colors = _segment_values(ds)
    shared = ds.SharedFunctionalGroupsSequence[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", [])
    n = int(ds.get("NumberOfFrames", 1))
    if len(per_frame) != n or n == 0:
        raise InputError("corrupt", "DICOM SEG without per-frame positions", path=where)
    iop = _frame_attr(shared, per_frame[0], "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = _frame_attr(shared, per_frame[0], "PixelMeasuresSequence", "PixelSpacing")
    row, col = np.asarray(iop[:3], float), np.asarray(iop[3:], float)
    normal = np.cross(row, col)
    positions = np.array(
        [[float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient] for f in per_frame]
    )
    along = positions @ normal
    levels = np.unique(np.round(along, 3))
    measures = shared.PixelMeasuresSequence[0]
    gap = float(measures.get("SpacingBetweenSlices", 0) or 0)
    if not gap:
        steps = np.diff(levels)
        gap = float(steps.min()) if steps.size else float(measures.get("SliceThickness", 1) or 1)
    first = positions[int(np.argmin(along))]
    k_of = np.round((along - along.min()) / gap)
    if np.max(np.abs((along - along.min()) / gap - k_of)) > 0.05:
        raise InputError("corrupt", "DICOM SEG frames are not on whole-slice steps", path=where)
    lps = np.eye(4)
    lps[:3, :3] = np.column_stack([row * float(spacing[1]), col * float(spacing[0]), normal * gap])
    lps[:3, 3] = first
    affine = _LPS @ lps
    shape = (int(ds.Columns), int(ds.Rows), int(k_of.max()) + 1)
    dtype = np.uint8 if max(values.values(), default=0) <= 255 else np.uint16
    out = np.zeros(shape, dtype=dtype)
    pixels = ds.pixel_array.reshape(n, int(ds.Rows), int(ds.Columns))
    threshold = 0.5 * float(ds.get("MaximumFractionalValue", 1)) if kind == "FRACTIONAL" else 0
    overlap = False
    lut = np.zeros(max(values, default=0) + 1, dtype=dtype)
    for number, value in values.items():
        lut[number] = value
    for f, item in enumerate(per_frame):
        k = int(k_of[f])
        if kind == "LABELMAP":
            frame = lut[np.minimum(pixels[f], len(lut) - 1)].T
            out[:, :, k] = np.where(frame > 0, frame, out[:, :, k])
            continue
        number = int(
            _frame_attr(shared, item, "SegmentIdentificationSequence", "ReferencedSegmentNumber")
        )
        mask = np.greater(pixels[f].T, threshold)
        overlap = overlap or bool(np.any(out[:, :, k][mask]))
        out[:, :, k][mask] = values.get(number, number)
    if overlap and warnings is not None:
        warnings.append("DICOM SEG segments overlap; the higher-numbered segment wins")
    if grid is not None:
        out = place_on_grid(out, affine, grid.spatial_shape, grid.affine, where)
        affine = grid.affine
    referenced = ds.get("ReferencedSeriesSequence", [])
    return Volume(
        out,
        affine,
        meta={
            "series_uid": str(ds.get("SeriesInstanceUID", "")),
            "referenced_series_uid": str(referenced[0].SeriesInstanceUID) if referenced else None,
            "label_names": names,
            "label_colors": colors,
            "segmentation_type": kind,
        },
    )


def _segment_values(ds) -> tuple[dict[int, int], dict[int, str], dict[int, tuple]]:
    """segment number -> label value, and label value -> name / RGB colour."""
    from highdicom.color import CIELabColor

    numbers, tagged = {}, {}
    names, colors = {}, {}
    items = [i for i in ds.get("SegmentSequence", []) if int(i.SegmentNumber) > 0]  # 0: background
    for item in items:
        number = int(item.SegmentNumber)
        numbers[number] = number
        match = _VALUE_TAG.match(str(item.get("SegmentDescription", "")))
        if match:
            tagged[number] = int(match.group(1))
    if tagged and len(tagged) == len(numbers) and len(set(tagged.values())) == len(tagged):
        numbers = tagged
    for item in items:
        value = numbers[int(item.SegmentNumber)]
        names[value] = str(item.get("SegmentLabel", f"label {value}"))
        lab = item.get("RecommendedDisplayCIELabValue")
        if lab is not None:
            colors[value] = tuple(int(c) for c in CIELabColor.from_dicom_value(lab).to_rgb())
    return numbers, names, colors


def _frame_attr(shared, frame, sequence: str, attribute: str):
    """An attribute of a functional group, per frame where present, else shared."""
    for group in (frame, shared):
        items = group.get(sequence)
        if items:
            return items[0].get(attribute)
    return None


def _lo(text: str) -> str:
    """A DICOM LO value: no backslash or control characters, at most 64 characters."""
    clean = "".join(" " if ord(c) < 32 or c == "\\" else c for c in str(text)).strip()
    return clean[:64] or "unnamed"
