"""Writing a segmentation in each output format, side by side with the NIfTI write (issue 14).

A synthetic CT series (default 512 x 512 x 300, 0.7 x 0.7 x 1 mm, written once with pydicom
into a temp folder) and a label map with 10 ellipsoid labels on its grid; each format is
written ``--repeats`` times, each time in a fresh process (so peak memory is that format's
alone), through the same path ``Segmentation.save`` uses (:func:`medseg.api.exports.encode`,
then the bytes or the NIfTI to disk). The child holds only the label map and the series'
meta (the image voxels are no part of a write) and imports the libraries before the clock
starts. Reported: median seconds, the child's peak RSS (``VmHWM``: interpreter, libraries,
label map and the write) and that peak above its RSS just before the write. The issue's
target: a 10-label SEG in <= 10 s and <= 2 GB.

    python bench/dicom_outputs.py [--shape 512,512,300] [--labels 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FORMATS = ("nifti", "dicom-seg", "dicom-seg-labelmap", "seg-nrrd", "rtstruct")
BASELINE = "nifti"


def write_series(folder: Path, shape: tuple[int, int, int]) -> None:
    """One CT file per slice (int16 HU, ExplicitVRLittleEndian), patient/study/series tags."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    for k in range(shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.Modality = "Bench^Mark", "B1", "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.SeriesNumber = "20240101", "1200", "1", 1
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-180.0, -180.0, float(k)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.0
        ds.Rows, ds.Columns = shape[1], shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = rng.integers(-100, 100, (shape[1], shape[0]), dtype=np.int16).tobytes()
        ds.save_as(folder / f"{k:04d}.dcm", enforce_file_format=True)


def label_map(shape: tuple[int, int, int], labels: int) -> np.ndarray:
    """``labels`` ellipsoids (about 1-3 % of the volume each), uint8, (X, Y, Z); built slice by
    slice so that building it never peaks above the write being measured."""
    rng = np.random.default_rng(1)
    out = np.zeros(shape, dtype=np.uint8)
    x = np.arange(shape[0], dtype=np.float32)[:, None]
    y = np.arange(shape[1], dtype=np.float32)[None, :]
    for value in range(1, labels + 1):
        c = [rng.uniform(0.2, 0.8) * s for s in shape]
        r = [rng.uniform(0.08, 0.15) * s for s in shape]
        for k in range(shape[2]):
            dz = ((k - c[2]) / r[2]) ** 2
            if dz <= 1:
                inside = ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 <= 1 - dz
                out[:, :, k][inside] = value
    return out


def _one(args: tuple[str, str, str, int], queue) -> None:
    """Child process: :func:`_write`, its result or its error put on ``queue``."""
    try:
        queue.put(_write(*args))
    except BaseException as exc:  # the parent must not wait forever on a failed child
        queue.put({"error": f"{type(exc).__name__}: {exc}"})
        raise


def _write(fmt: str, affine: np.ndarray, meta: dict, out_dir: str, labels_n: int) -> dict:
    """Build the label map, warm the libraries up, then time one write (peak RSS after)."""
    from medseg.api import exports
    from medseg.io import save_volume
    from medseg.io.volume import Volume

    shape = (meta["columns"], meta["rows"], meta["n_slices"])
    labels = Volume(label_map(shape, labels_n), affine, meta=meta)
    image = Volume(np.zeros((1, 1, 1), np.uint8), affine, meta=meta)  # the SEG needs its meta
    infos = exports.labels_of(labels, {v: f"organ {v}" for v in range(1, labels_n + 1)})
    _warm_up()
    before = _rss_mb()
    started = time.perf_counter()
    content = exports.encode(fmt, labels, image, infos, model="bench", automatic=True)
    target = Path(out_dir) / f"{fmt}.out"
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        save_volume(content, target.with_suffix(".nii.gz"), role="label", overwrite=True)
    seconds = time.perf_counter() - started
    peak = _status_mb("VmHWM")
    size = sum(f.stat().st_size for f in Path(out_dir).glob(f"{fmt}.*"))
    return {"seconds": seconds, "peak_rss_mb": peak, "above_start_mb": peak - before,
            "file_mb": size / 2**20}  # fmt: skip


def _warm_up() -> None:
    """Import the format libraries and pydicom's code tables outside the timed write."""
    import highdicom  # noqa: F401
    import rt_utils.rtstruct  # noqa: F401
    import slicerio  # noqa: F401

    from medseg.io.label_names import anatomy_code

    anatomy_code("liver")


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _status_mb(key: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak of this process image) in MiB, from /proc. Not
    ``getrusage``: its ``ru_maxrss`` survives fork and exec, so a spawned child would report
    its parent's peak (the parent reads the whole series once)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"{key} not in /proc/self/status")


def measure(fmt: str, source, out_dir: Path, labels: int) -> dict:
    """One write of ``fmt`` in a fresh process (``source``: the series' affine and meta)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_one, args=((fmt, *source, str(out_dir), labels), queue))
    proc.start()
    result = queue.get()
    proc.join()
    if "error" in result:
        raise RuntimeError(f"{fmt}: {result['error']}")
    return result


def _source(series_dir: Path) -> tuple[np.ndarray, dict]:
    """The series' affine and the meta a SEG/RTSTRUCT needs (read once, voxels dropped)."""
    from medseg.io import load_volume

    image = load_volume(series_dir)
    x, y, z = image.spatial_shape
    return image.affine, {**image.meta, "columns": x, "rows": y, "n_slices": z}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="512,512,300")
    p.add_argument("--labels", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--formats", default=",".join(FORMATS))
    p.add_argument("--json", default=None, help="also write the table as JSON")
    args = p.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(","))
    with tempfile.TemporaryDirectory(prefix="medseg-bench-") as tmp:
        series_dir, out_dir = Path(tmp) / "ct", Path(tmp) / "out"
        out_dir.mkdir()
        write_series(series_dir, shape)  # type: ignore[arg-type]
        source = _source(series_dir)
        rows = {}
        for fmt in args.formats.split(","):
            runs = [measure(fmt, source, out_dir, args.labels) for _ in range(args.repeats)]
            rows[fmt] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"{fmt}: {rows[fmt]}", file=sys.stderr)
    base = rows.get(BASELINE, {}).get("seconds")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"shape {shape}, {args.labels} labels, median of {args.repeats} fresh processes; "
          f"{os.cpu_count()} CPUs, load average at the end {load}\n")  # fmt: skip
    print(
        "| format | seconds | x NIfTI | process peak RSS (MB) | peak above start (MB) | file MB |"
    )
    print("|---|---|---|---|---|---|")
    for fmt, r in rows.items():
        ratio = f"{r['seconds'] / base:.1f}" if base else "-"
        print(f"| {fmt} | {r['seconds']:.2f} | {ratio} | {r['peak_rss_mb']:.0f} | "
              f"{r['above_start_mb']:.0f} | {r['file_mb']:.1f} |")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
