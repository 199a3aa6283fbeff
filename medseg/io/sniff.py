"""Content sniffing: what a file *is*, judged by its first bytes, never by its name.

:func:`sniff` reads at most a few kilobytes (and decompresses at most :data:`NIFTI_PROBE` bytes
of a gzip stream, so a gzip bomb costs nothing here) and returns a :class:`Sniffed` record.
Magic numbers:

==========================  =============================================================
gzip                        ``1f 8b`` at 0, then the NIfTI magic inside the decompressed bytes
NIfTI-1 single file         ``n+1\\0`` at byte 344 (``ni1\\0`` = .hdr of a .hdr/.img pair)
NIfTI-2 single file         ``n+2\\0`` at byte 4 (``ni2\\0`` = pair header)
Analyze / broken NIfTI      ``sizeof_hdr`` 348 (or 540) at byte 0 but no valid magic
NRRD                        ``NRRD000`` at 0
MetaImage (.mha / .mhd)     a text header whose first key is ``ObjectType``/``NDims``/...
DICOM                       ``DICM`` at 128
==========================  =============================================================

:func:`extension_kind` maps a file name to the content kind it promises (case-insensitive).
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

#: how many decompressed bytes of a gzip stream are inspected (a NIfTI-2 header is 540 bytes)
NIFTI_PROBE = 544
#: how many raw bytes are read from the start of the file
HEAD_BYTES = 4096

#: extension (lower case) -> content kind it promises; longest suffix wins
EXTENSIONS: dict[str, str] = {
    ".nii.gz": "nifti-gz",
    ".nii": "nifti",
    ".nrrd": "nrrd",
    ".mha": "metaimage",
    ".mhd": "metaimage",
}
#: readable content kind -> the extension to suggest for it
SUGGESTED_EXTENSION = {
    "nifti-gz": ".nii.gz",
    "nifti": ".nii",
    "nrrd": ".nrrd",
    "metaimage": ".mha",
}
#: content kinds :func:`medseg.io.load_volume` can read from a single file
READABLE = frozenset(SUGGESTED_EXTENSION)

_OTHER_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    (b"\x93NUMPY", "a NumPy .npy file"),
    (b"BZh", "bzip2-compressed data"),
    (b"\xfd7zXZ\x00", "xz-compressed data"),
    (b"(\xb5/\xfd", "zstd-compressed data"),
    (b"%PDF", "a PDF document"),
)
_METAIMAGE_FIRST_KEY = re.compile(
    rb"\s*(ObjectType|NDims|ObjectSubType|Comment|TransformType|Name)\s*=", re.ASCII
)


@dataclass(frozen=True)
class Sniffed:
    """What the first bytes say.

    Attributes:
        kind: ``nifti`` / ``nifti-gz`` / ``nrrd`` / ``metaimage`` (readable), or ``dicom``,
            ``broken-nifti``, ``short-nifti``, ``nifti-pair``, ``gzip``, ``other``.
        description: human words for the content, e.g. ``"gzip-compressed NIfTI-1"``.
        nifti_version: 1 or 2 for NIfTI kinds, else 0.
        head: the first bytes of the (decompressed, for gzip) content; holds a whole NIfTI
            header for NIfTI kinds.
    """

    kind: str
    description: str
    nifti_version: int = 0
    head: bytes = b""


def extension_kind(path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """``(extension as written, kind it promises or None)`` for a file name, case-insensitive.

    ``"SCAN.NII.GZ"`` -> ``(".NII.GZ", "nifti-gz")``; ``"x.gz"`` -> ``(".gz", None)``;
    no extension -> ``("", None)``.
    """
    name = Path(path).name
    lower = name.lower()
    for ext in sorted(EXTENSIONS, key=len, reverse=True):
        if lower.endswith(ext) and len(lower) > len(ext):
            return name[-len(ext) :], EXTENSIONS[ext]
    suffix = Path(name).suffix
    return suffix, None


def sniff(fd: int) -> Sniffed:
    """Classify the content of an open, regular file (``fd`` is read from offset 0).

    Reads at most :data:`HEAD_BYTES` raw bytes plus, for gzip, just enough compressed bytes to
    decompress :data:`NIFTI_PROBE` bytes. Never raises for odd content; a damaged gzip stream
    is reported as kind ``gzip`` with a description saying so.
    """
    head = os.pread(fd, HEAD_BYTES, 0)
    if head[:2] == b"\x1f\x8b":
        inner, damaged = _gunzip_head(fd)
        if damaged and not inner:
            return Sniffed("gzip", "a damaged gzip stream", head=inner)
        found = _classify_nifti(inner, compressed=True)
        if found is not None:
            return found
        what = "text" if _looks_like_text(inner) else "data"
        return Sniffed("gzip", f"gzip-compressed {what}, not a NIfTI image", head=inner)
    found = _classify_nifti(head, compressed=False)
    if found is not None:
        return found
    if head.startswith(b"NRRD000"):
        return Sniffed("nrrd", "an NRRD file", head=head)
    if _METAIMAGE_FIRST_KEY.match(head) and (b"NDims" in head or b"ObjectType" in head):
        return Sniffed("metaimage", "a MetaImage file", head=head)
    if head[128:132] == b"DICM":
        return Sniffed("dicom", "a single DICOM file", head=head)
    for magic, words in _OTHER_MAGIC:
        if head.startswith(magic):
            return Sniffed("other", words, head=head)
    words = "text" if _looks_like_text(head) else "unrecognised binary data"
    return Sniffed("other", words, head=head)


def _gunzip_head(fd: int) -> tuple[bytes, bool]:
    """First :data:`NIFTI_PROBE` decompressed bytes and whether the stream broke before that."""
    dec = zlib.decompressobj(wbits=31)
    out = b""
    offset = 0
    while len(out) < NIFTI_PROBE and not dec.eof:
        chunk = os.pread(fd, 4096, offset)
        if not chunk:
            return out, True  # the stream ends before its end-of-stream marker
        offset += len(chunk)
        try:
            out += dec.decompress(chunk, NIFTI_PROBE - len(out))
        except zlib.error:
            return out, True
    return out, False


def _classify_nifti(head: bytes, *, compressed: bool) -> Sniffed | None:
    """NIfTI kinds from an (uncompressed) header prefix, or None if it is no NIfTI/Analyze."""
    gz = "gzip-compressed " if compressed else "uncompressed "
    kind = "nifti-gz" if compressed else "nifti"
    if len(head) >= 8 and head[4:8] in (b"n+2\x00", b"ni2\x00"):
        if head[4:8] == b"ni2\x00":
            return Sniffed("nifti-pair", "a NIfTI-2 .hdr header (pair format)", 2, head)
        if len(head) < 540:
            return Sniffed("short-nifti", f"{gz}NIfTI-2 with a cut-off header", 2, head)
        return Sniffed(kind, f"{gz}NIfTI-2", 2, head)
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        if head[344:348] == b"ni1\x00":
            return Sniffed("nifti-pair", "a NIfTI-1 .hdr header (pair format)", 1, head)
        return Sniffed(kind, f"{gz}NIfTI-1", 1, head)
    if len(head) >= 4:
        sizeof_hdr = {struct.unpack("<i", head[:4])[0], struct.unpack(">i", head[:4])[0]}
        if sizeof_hdr & {348, 540}:
            version = 2 if 540 in sizeof_hdr else 1
            if len(head) < (540 if version == 2 else 348):
                return Sniffed("short-nifti", f"{gz}NIfTI/Analyze header cut off", version, head)
            return Sniffed(
                "broken-nifti", f"{gz}NIfTI/Analyze header without a NIfTI magic", version, head
            )
    return None


def _looks_like_text(data: bytes) -> bool:
    if not data:
        return False
    sample = data[:1024]
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in sample)
    return printable / len(sample) > 0.95
