"""Helpers for tests that serve the viewer on 127.0.0.1 (API, security, load, browser)."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import numpy as np
from testkit import ellipsoid_volume, write_nifti

SHAPE = (48, 40, 12)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_scan(folder: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """Two bright ellipsoids on noise: ``(path, mask1, mask2)`` on an identity grid."""
    image, mask = ellipsoid_volume(SHAPE, center=(16, 20, 6), radii=(9, 8, 4))
    second, mask2 = ellipsoid_volume(SHAPE, center=(37, 20, 6), radii=(6, 6, 3), seed=1)
    image[mask2] = second[mask2]
    return write_nifti(folder / "scan.nii.gz", image), mask, mask2


def axial_box(mask: np.ndarray, margin: int = 3) -> tuple[int, int, int, int]:
    """Display-pixel box of ``mask`` on the axial mid slice of an identity (RAS) grid.

    Axial display of RAS: rows run anterior -> posterior (j reversed), columns patient right
    -> left (i reversed)."""
    s = SHAPE[2] // 2
    plane = mask[::-1, ::-1, s].T  # (rows = j reversed, cols = i reversed)
    rows, cols = np.nonzero(plane)
    return (cols.min() - margin, rows.min() - margin, cols.max() + margin, rows.max() + margin)


@contextlib.contextmanager
def serve(build, *, temp_dir: Path, **launch_kwargs):
    """Build (``build() -> gr.Blocks``, with ``GRADIO_TEMP_DIR`` = ``temp_dir`` already set, as
    components fix their cache folder when created) and launch on 127.0.0.1; yield the URL."""
    from apps.viewer.launch import launch

    previous = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(temp_dir)
    port = free_port()
    demo = build()
    try:
        launch(demo, host="127.0.0.1", port=port, block=False, **launch_kwargs)
        yield f"http://127.0.0.1:{port}"
    finally:
        demo.close()
        if previous is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = previous
