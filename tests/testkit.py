"""Helpers shared by tests (importable as ``testkit``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def load_test_module(name: str):
    """Import ``tests/<name>.py`` by path (tests are not a package under importmode=importlib)."""
    spec = importlib.util.spec_from_file_location(
        f"_medseg_tests_{name}", ROOT / "tests" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    import nibabel as nib

    img = nib.Nifti1Image(array, np.eye(4) if affine is None else affine)
    img.header.set_data_dtype(array.dtype)
    nib.save(img, str(path))
    return path


def ellipsoid_volume(
    shape=(48, 40, 12), center=None, radii=(12, 9, 4), *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A bright ellipsoid on a noisy dark background: ``(image float32, mask bool)`` (X, Y, Z)."""
    rng = np.random.default_rng(seed)
    center = np.array(center if center is not None else [s / 2 for s in shape])
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1)
    mask = (((grid - center) / np.array(radii)) ** 2).sum(-1) <= 1.0
    image = rng.normal(100.0, 10.0, size=shape).astype(np.float32)
    image[mask] += 400.0
    return image, mask
