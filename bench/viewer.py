"""Viewer server-side latency: slice rendering and prompt-to-mask (targets from issue 4).

Rows (medians of repeats, milliseconds, on the CPU of this machine):

- ``render``: one 512 x 512 axial picture with a 4-label overlay, crosshair, prompt marks and
  orientation letters (``apps.viewer.render.render_plane``; target <= 50 ms). Baseline: the
  pre-viewer path of ``medseg.viz`` (``apply_window`` + ``overlay_labels`` per-label masks +
  ``resample_aspect``) drawing the same slice without marks.
- ``png file``: writing that picture as the PNG file the page fetches (zlib level 1);
  baseline: Pillow's default PNG encoding, which Gradio uses for numpy outputs.
- ``prompt cold``: box prompt on a slice never seen by the session (stack conversion of the
  volume + encoder + decoder; target <= 1 s). ``prompt refine``: a point added on the same
  slice (decoder only, the embedding is cached). Both with torch's default thread count and
  with 1 thread (``medseg view --threads 1``): on a shared, busy 2-core machine one thread was
  about 5x faster, as the second thread waits for a core.

    .venv/bin/python -m bench.viewer            # 512 x 512 x 64, 30 render / 5 prompt repeats
    .venv/bin/python -m bench.viewer --quick    # 512 x 512 x 8, 10 render / 2 prompt repeats
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

import gradio  # noqa: F401 - loaded in the app already: keep its import out of the timings
import numpy as np
import torch

from apps.viewer import callbacks as cb
from apps.viewer.models import ModelHub
from apps.viewer.render import picture_file, render_plane
from apps.viewer.state import new_session
from medseg.io.volume import Volume
from medseg.viz import apply_window, overlay_labels, png_bytes, resample_aspect

TARGET_RENDER_MS = 50.0
TARGET_PROMPT_MS = 1000.0


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small volume, few repeats")
    parser.add_argument("--device", default="cpu")
    opts = parser.parse_args(args)
    depth, render_reps, prompt_reps = (8, 10, 2) if opts.quick else (64, 30, 5)
    volume, labels = synthetic_ct(depth)
    session = new_session(
        volume, "bench", labels=labels, window=(40.0, 400.0), preset="soft_tissue"
    )
    session.size = 512
    session.names = {i: f"organ {i}" for i in range(1, 5)}

    rows: list[tuple[str, float, float | None, float | None]] = []
    ours = median_ms(lambda: render_plane(session, "axial"), render_reps)
    base = median_ms(lambda: baseline_render(session), render_reps)
    rows.append(("render 512x512 + 4 labels", ours, base, TARGET_RENDER_MS))
    picture = render_plane(session, "axial")
    with tempfile.TemporaryDirectory() as folder:
        fast = median_ms(lambda: picture_file(session, "axial", picture, folder), render_reps)
        default = median_ms(lambda: png_bytes(picture), render_reps)
    rows.append(("png file 512x512 (zlib level 1)", fast, default, None))

    hub = ModelHub(device=opts.device)
    hub.session_predictor()  # load weights outside the timing
    s = session.slice_of("axial")
    default_threads = torch.get_num_threads()
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        cold, refine = [], []
        for _ in range(prompt_reps):
            fresh = new_session(volume, "bench", window=(40.0, 400.0), preset="soft_tissue")
            started = time.perf_counter()
            cb.prompt_text(fresh, f"axial {s} box 180 190 330 320", hub)
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            cb.prompt_text(fresh, f"axial {s} point 256 256", hub)
            refine.append(time.perf_counter() - started)
        tag = f"{threads} thread{'s' if threads > 1 else ''}"
        rows.append((f"prompt cold, {tag}", 1000 * statistics.median(cold), None,
                     TARGET_PROMPT_MS))  # fmt: skip
        rows.append((f"prompt refine, {tag}", 1000 * statistics.median(refine), None,
                     TARGET_PROMPT_MS))  # fmt: skip
    torch.set_num_threads(default_threads)
    report(rows, volume, opts)


def synthetic_ct(depth: int) -> tuple[Volume, np.ndarray]:
    """A 512 x 512 x ``depth`` CT-like volume (HU) with 4 labelled blobs, 0.7 x 0.7 x 2.5 mm."""
    rng = np.random.default_rng(0)
    shape = (512, 512, depth)
    image = rng.normal(-50.0, 30.0, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint16)
    grid = np.mgrid[: shape[0], : shape[1]]
    for label, (cx, cy, r, hu) in enumerate(
        [(180, 250, 70, 60), (330, 250, 60, 30), (256, 120, 40, 200), (256, 400, 35, 700)], 1
    ):
        disc = ((grid[0] - cx) ** 2 + (grid[1] - cy) ** 2) <= r * r
        image[disc] += hu
        labels[disc] = label
    affine = np.diag([0.7, 0.7, 2.5, 1.0])
    return Volume(image, affine), labels


def baseline_render(session) -> np.ndarray:
    view = session.views["axial"]
    s = session.slice_of("axial")
    grey = apply_window(view.stack(session.image.array)[s], *session.window)
    rgb = overlay_labels(grey, np.asarray(view.stack(session.labels)[s]), opacity=0.5)
    return resample_aspect(rgb, view.pixel_spacing)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def report(rows, volume: Volume, opts) -> None:
    print(f"# bench/viewer.py{' --quick' if opts.quick else ''}: {platform.processor() or '?'}, "
          f"{torch.get_num_threads()} torch threads, volume {volume.spatial_shape}")  # fmt: skip
    print(f"{'row':32} {'ms':>9} {'baseline ms':>12} {'speed-up':>9} {'target ms':>10} ok")
    for name, ms, base, target in rows:
        ratio = f"{base / ms:8.2f}x" if base else f"{'':>9}"
        verdict = "yes" if target is None or ms <= target else "NO"
        print(
            f"{name:32} {ms:9.1f} {base or float('nan'):12.1f} {ratio} "
            f"{target or float('nan'):10.0f} {verdict}"
        )


if __name__ == "__main__":
    main()
