"""RAT's SAM region map of one 256 x 256 slice: one decoder call per box vs batched boxes.

The slice is a real one (nilearn's MNI152 T1, axial slice 90, resized to 256 x 256). The
partitioner is :class:`medseg.inference.regions.SamGridPartitioner` with its defaults
(16 x 16 grid, 2 box sizes, 2 re-prompts: 1,536 box decodes plus one encoder call).

Rows (seconds per slice, the weights already loaded, CPU):

- ``one box per call``: ``prompts_per_call=1``. By default *estimated*: the median time of one
  ``predict`` call (``--sample`` calls on the cached embedding) x 1,536 + the encoder call;
  ``--full`` runs the whole slice instead (minutes).
- ``batched (N per call)``: the default ``prompts_per_call`` (64), the whole slice, median of
  ``--repeats`` runs; the region maps of both paths are compared when ``--full`` is given.

    .venv/bin/python -m bench.sam_regions              # estimate + 1 batched run (~1-3 min)
    .venv/bin/python -m bench.sam_regions --full       # both paths in full, maps compared
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch


def mni_slice(size: int = 256) -> np.ndarray:
    import cv2
    import nibabel as nib
    from nilearn.datasets import MNI152_FILE_PATH

    volume = np.asarray(nib.load(MNI152_FILE_PATH).dataobj, dtype=np.float32)
    return cv2.resize(volume[:, :, 90], (size, size), interpolation=cv2.INTER_LINEAR)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=24, help="timed one-box calls")
    parser.add_argument("--repeats", type=int, default=1, help="batched whole-slice runs")
    parser.add_argument("--full", action="store_true", help="run one box per call in full")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from medseg.inference.regions import SamGridPartitioner

    image = mni_slice()
    batched = SamGridPartitioner()
    one = SamGridPartitioner(prompts_per_call=1)
    start = time.perf_counter()
    predictor = one._get_predictor()  # loads the weights (not timed below)
    batched._predictor = predictor
    print(f"weights + warm-up {time.perf_counter() - start:.1f} s")
    decodes = batched.points_per_side**2 * len(batched.box_scales) * (1 + batched.refine_steps)

    from medseg.inference.regions import _to_uint8

    predictor.set_stack(_to_uint8(image)[None])
    start = time.perf_counter()
    predictor._embedding(0, 0, 0)
    encoder = time.perf_counter() - start
    rng = np.random.default_rng(0)
    calls = []
    for _ in range(args.sample):
        x0, y0 = rng.integers(0, 160, 2)
        box = [int(x0), int(y0), int(x0) + 64, int(y0) + 64]
        start = time.perf_counter()
        predictor.predict(0, box=box)
        calls.append(time.perf_counter() - start)
    per_call = statistics.median(calls)
    rows = [("one box per call (estimated)", encoder + per_call * decodes, decodes)]
    ids_one = None
    if args.full:
        start = time.perf_counter()
        ids_one = one(image)
        rows.append(("one box per call (full run)", time.perf_counter() - start, decodes))
    times, ids = [], None
    for _ in range(args.repeats):
        start = time.perf_counter()
        ids = batched(image)
        times.append(time.perf_counter() - start)
    calls_batched = 3 * -(-(decodes // 3) // batched.prompts_per_call)
    rows.append((f"batched ({batched.prompts_per_call} per call)", statistics.median(times),
                 calls_batched))  # fmt: skip

    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f} (a shared machine reads > 2)")  # fmt: skip
    print(
        f"encoder {encoder:.2f} s, one decoder call {per_call * 1000:.0f} ms (median of "
        f"{args.sample}); {decodes} box decodes per slice"
    )
    print("\n| path | s per 256 x 256 slice | decoder calls | vs one box per call |")
    print("| --- | --- | --- | --- |")
    base = rows[0][1]
    for name, seconds, n in rows:
        print(f"| {name} | {seconds:.1f} | {n} | {base / seconds:.1f}x |")
    if ids_one is not None and ids is not None:
        print(f"\nregion maps identical: {bool(np.array_equal(ids_one, ids))} "
              f"({int(ids.max())} regions)")  # fmt: skip


if __name__ == "__main__":
    main()
