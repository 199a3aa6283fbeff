"""Label descriptions for the segmentation outputs: value, name, colour, and coded anatomy.

Every segmentation format medseg writes names its labels the same way
(:func:`describe_labels`): the labels named by the model or the user plus every other value
present in the label map (named ``label <value>``), in increasing value order. Colours are
chosen by the caller (the API passes the viewer's palette, so a file opened in 3D Slicer or OHIF
shows the colours the viewer showed).

:func:`anatomy_code` gives the coded category and type a DICOM SEG segment needs (SNOMED CT,
from pydicom's code dictionary): the first organ or finding word of the name that the table
below knows (``"liver"``, ``"left kidney"``, ``"tumour"``, ACDC's ``RV``/``LV``), else the generic
``Tissue``/``Tissue``. The names are kept as they are; the code is a hint for other systems.

The NIfTI label table (:func:`label_table_xml`, :func:`parse_label_table`): the layout
TotalSegmentator writes into its multilabel NIfTI files (and reads back with its
``load_multilabel_nifti``): a Caret-style XML ``CaretExtension/VolumeInformation/LabelTable``
with one ``<Label Key= Red= Green= Blue= Alpha=>name</Label>`` per label (colours 0..1), in the
first NIfTI header extension, code 0. Readers that do not know it ignore it; voxels and affine
are unchanged.
"""

from __future__ import annotations

import re
import unicodedata
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "NIFTI_LABEL_ECODE",
    "LabelInfo",
    "anatomy_code",
    "describe_labels",
    "label_table_xml",
    "nifti_label_table",
    "parse_label_table",
]

#: NIfTI header extension code of the label table (0, as TotalSegmentator writes it)
NIFTI_LABEL_ECODE = 0
_RGB = ("Red", "Green", "Blue")

# name word(s) -> pydicom ``codes.SCT`` keyword; findings (category "morphologically abnormal
# structure") are listed apart from anatomy (category "anatomical structure")
_FINDINGS = {
    "tumour": "Neoplasm", "tumor": "Neoplasm", "cancer": "Neoplasm", "neoplasm": "Neoplasm",
    "metastasis": "Neoplasm", "lesion": "Lesion", "mass": "Mass", "edema": "Edema",
    "oedema": "Edema", "necrosis": "Necrosis",
}  # fmt: skip
_ANATOMY = {
    "liver": "Liver", "spleen": "Spleen", "kidney": "Kidney", "pancreas": "Pancreas",
    "aorta": "Aorta", "heart": "Heart", "lung": "Lung", "brain": "Brain",
    "prostate": "Prostate", "hippocampus": "Hippocampus", "left ventricle": "LeftVentricle",
    "lv": "LeftVentricle", "right ventricle": "RightVentricle", "rv": "RightVentricle",
    "left atrium": "LeftAtrium", "right atrium": "RightAtrium",
    "pulmonary artery": "PulmonaryArtery", "bladder": "Bladder", "stomach": "Stomach",
    "gallbladder": "Gallbladder", "esophagus": "Esophagus", "oesophagus": "Esophagus",
    "colon": "Colon", "duodenum": "Duodenum", "small intestine": "SmallIntestine",
    "trachea": "Trachea", "t12": "T12Vertebra", "t12 vertebra": "T12Vertebra",
    "vertebrae t12": "T12Vertebra", "vertebra": "Vertebra", "spine": "Spine",
    "adrenal gland": "AdrenalGland", "inferior vena cava": "InferiorVenaCava",
    "portal vein": "PortalVein", "rib": "Rib", "femur": "Femur", "skull": "Skull",
    "cerebellum": "Cerebellum", "thyroid": "Thyroid", "bone": "Bone", "muscle": "Muscle",
    "fat": "Fat", "artery": "Artery", "vein": "Vein", "vessel": "BloodVessel",
}  # fmt: skip


@dataclass(frozen=True)
class LabelInfo:
    """One label of a label map: its voxel ``value`` (1..65535), ``name`` and ``color``
    (RGB, 0..255 each)."""

    value: int
    name: str
    color: tuple[int, int, int]


def describe_labels(
    array: np.ndarray,
    names: Mapping[int, str],
    color: Callable[[int], tuple[int, int, int]],
) -> list[LabelInfo]:
    """The labels of ``array`` ``(X, Y, Z)`` (whole numbers >= 0): every named label and every
    value present, by increasing value; unnamed ones are ``label <value>``."""
    present = {int(v) for v in np.unique(array) if v > 0}
    values = sorted(present | {int(v) for v in names if int(v) > 0})
    return [
        LabelInfo(v, str(names.get(v) or f"label {v}"), tuple(int(c) for c in color(v)))
        for v in values
    ]


def anatomy_code(name: str):
    """``(category, type)`` pydicom ``Code`` s for a label name (module docstring)."""
    from pydicom.sr.codedict import codes

    folded = "".join(
        c for c in unicodedata.normalize("NFKD", name.lower()) if not unicodedata.combining(c)
    )  # "Tumör" -> "tumor"
    words = " ".join(re.findall(r"[^\W_]+", folded))
    padded = f" {words} "
    for table, category in (
        (_FINDINGS, codes.cid7150.MorphologicallyAbnormalStructure),
        (_ANATOMY, codes.cid7150.AnatomicalStructure),
    ):
        # longest phrases first, so "left ventricle" wins over "ventricle"-less matches
        for phrase in sorted(table, key=len, reverse=True):
            if f" {phrase} " in padded or f" {phrase}s " in padded:
                return category, getattr(codes.SCT, table[phrase])
    return codes.cid7150.Tissue, codes.SCT.Tissue


def label_table_xml(labels: list[LabelInfo]) -> bytes:
    """The label table XML (UTF-8) of the NIfTI header extension (module docstring)."""
    root = ET.Element("CaretExtension")
    info = ET.SubElement(root, "VolumeInformation", Index="0")
    table = ET.SubElement(info, "LabelTable")
    for lab in labels:
        rgb = {c: f"{v / 255:.6g}" for c, v in zip(_RGB, lab.color, strict=True)}
        item = ET.SubElement(table, "Label", Key=str(lab.value), Alpha="1", **rgb)
        item.text = lab.name
    ET.SubElement(info, "VolumeType").text = "Label"
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def parse_label_table(data: bytes) -> list[LabelInfo]:
    """The labels of a ``label_table_xml`` extension (background left out); [] when the
    content is no such table."""
    try:
        root = ET.fromstring(data.rstrip(b"\0"))
    except ET.ParseError:
        return []
    out = []
    for item in root.iter("Label"):
        try:
            key = int(item.get("Key", ""))
            rgb = tuple(round(float(item.get(c, "0")) * 255) for c in _RGB)
        except ValueError:
            continue
        if key > 0:
            out.append(LabelInfo(key, item.text or f"label {key}", rgb))  # type: ignore[arg-type]
    return out


def nifti_label_table(path) -> list[LabelInfo]:
    """The label table in a NIfTI file's header extensions (header only, no voxels); []
    when it has none."""
    import nibabel as nib

    try:
        extensions = nib.load(str(path)).header.extensions
    except (OSError, ValueError, nib.filebasedimages.ImageFileError):
        return []  # the voxels were read already; only the optional table is lost
    for ext in extensions:
        if ext.get_code() == NIFTI_LABEL_ECODE:
            found = parse_label_table(ext.get_content())
            if found:
                return found
    return []
