"""Property test: mutated bytes of a small valid .nii.gz never escape as anything but InputError.

Either a Volume with a finite affine and a non-empty (X, Y, Z) shape comes back, or an InputError
with a catalogued code; never another exception type, never a hang, never shape ``(0,)``.
"""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medseg.errors import InputError
from medseg.io import load_volume

CODES = {
    "not_found",
    "not_regular_file",
    "permission",
    "empty_file",
    "unknown_format",
    "extension_mismatch",
    "truncated",
    "corrupt",
    "invalid_header",
    "unsupported_dtype",
    "too_large",
    "invalid_geometry",
    "non_finite",
    "constant_image",
    "multi_volume",
    "bad_labels",
}


def _valid_nii() -> bytes:
    data = (np.arange(6 * 5 * 4) % 13).reshape(6, 5, 4).astype(np.int16)
    aff = np.array([[-2.0, 0, 0, 30], [0, 2.0, 0, -20], [0, 0, 3.0, 10], [0, 0, 0, 1]])
    with tempfile.TemporaryDirectory() as d:
        nib.save(nib.Nifti1Image(data, aff, dtype=np.int16), Path(d) / "x.nii")
        return (Path(d) / "x.nii").read_bytes()


RAW = _valid_nii()
GZ = gzip.compress(RAW, compresslevel=6)

mutations = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8)


def _mutate(blob: bytes, edits, cut: int | None) -> bytes:
    out = bytearray(blob)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out[:cut]) if cut else bytes(out)


def _check(blob: bytes, role: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fuzz.nii.gz"
        path.write_bytes(blob)
        try:
            vol = load_volume(path, role=role)
        except InputError as e:
            assert e.code in CODES, e.code
            assert "\n" not in str(e)
            return
        assert vol.array.ndim == 3 and min(vol.array.shape) >= 1
        assert np.isfinite(vol.affine).all()


FUZZ = settings(
    max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ
@given(edits=mutations, cut=st.one_of(st.none(), st.integers(1, len(GZ))))
def test_mutated_compressed_bytes(edits, cut):
    _check(_mutate(GZ, edits, cut), "image")


@FUZZ
@given(
    edits=st.lists(st.tuples(st.integers(0, 351), st.integers(0, 255)), min_size=1, max_size=6),
    role=st.sampled_from(["image", "label"]),
)
def test_mutated_header_bytes(edits, role):
    """Header mutations inside a valid gzip stream reach the NIfTI header checks."""
    _check(gzip.compress(_mutate(RAW, edits, None), compresslevel=1), role)
