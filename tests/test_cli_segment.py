"""``medseg segment`` end to end with the shipped LiteMedSAM on synthetic volumes.

Asserts what users rely on: the label map lies on exactly the input grid (shape, affine, both
NIfTI forms), it finds a bright object (Dice), statistics agree with the label map, pixel and
millimetre prompts agree, and signals / disk-full leave no partial output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from testkit import ellipsoid_volume

from medseg.cli.main import main
from medseg.metrics import dice
from medseg.transforms.planes import PlaneView, voxel_to_world

# LPS-stored, anisotropic, slightly oblique grid with qform != sform (both must survive)
ROT = np.array([[np.cos(0.2), -np.sin(0.2), 0], [np.sin(0.2), np.cos(0.2), 0], [0, 0, 1]])
AFFINE = np.eye(4)
AFFINE[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ ROT @ np.diag([0.8, 0.8, 3.0])
AFFINE[:3, 3] = [20.0, 15.0, -30.0]


def _scan(tmp_path: Path, shape=(64, 56, 14), radii=(18, 12, 5)) -> tuple[Path, np.ndarray]:
    image, mask = ellipsoid_volume(shape, radii=radii)
    img = nib.Nifti1Image(image, AFFINE)
    img.set_sform(AFFINE, code=2)
    qform = AFFINE.copy()
    qform[:3, 3] += [0.5, 0.0, 0.0]  # disagrees by 0.5 mm
    img.set_qform(qform, code=1)
    path = tmp_path / "scan one é.nii.gz"
    nib.save(img, str(path))
    return path, mask


def _prompt(mask: np.ndarray, axis: str = "axial") -> list[str]:
    view = PlaneView.from_affine(AFFINE, mask.shape, axis)
    stack = view.stack(mask)
    key = int(np.argmax(stack.sum(axis=(1, 2))))
    rows, cols = np.nonzero(stack[key])
    box = [cols.min() - 2, rows.min() - 2, cols.max() + 2, rows.max() + 2]
    return ["--axis", axis, "--slice", str(key), "--box", ",".join(str(int(v)) for v in box)]


def test_segment_writes_label_map_on_the_input_grid(tmp_path):
    scan, mask = _scan(tmp_path)
    out = tmp_path / "out"
    assert main(["segment", str(scan), "-o", str(out), "--quiet", *_prompt(mask)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["scan one é_preview.png", "scan one é_seg.nii.gz", "scan one é_stats.json"]

    src, seg = nib.load(str(scan)), nib.load(str(out / "scan one é_seg.nii.gz"))
    assert seg.shape == src.shape
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-5)
    for form in ("get_qform", "get_sform"):
        a, code_a = getattr(src.header, form)(coded=True)
        b, code_b = getattr(seg.header, form)(coded=True)
        assert code_a == code_b
        np.testing.assert_allclose(a, b, atol=1e-5)
    labels = np.asarray(seg.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1}
    assert dice(labels > 0, mask) >= 0.85

    stats = json.loads((out / "scan one é_stats.json").read_text(encoding="utf-8"))
    (entry,) = stats["labels"]
    assert entry["voxels"] == int(labels.sum())
    voxel_ml = abs(np.linalg.det(AFFINE[:3, :3])) / 1000
    assert entry["volume_ml"] == pytest.approx(labels.sum() * voxel_ml, rel=1e-3)
    assert stats["grid"]["orientation"] == "".join(nib.aff2axcodes(AFFINE))
    assert any("sform" in w for w in stats["warnings"])

    from PIL import Image

    preview = Image.open(out / "scan one é_preview.png")
    assert preview.mode == "RGB" and min(preview.size) > 16


def test_millimetre_prompt_matches_pixel_prompt(tmp_path):
    scan, mask = _scan(tmp_path)
    pixel_args = _prompt(mask, "coronal")
    view = PlaneView.from_affine(AFFINE, mask.shape, "coronal")
    key = int(pixel_args[3])
    x0, y0, x1, y1 = (int(v) for v in pixel_args[5].split(","))
    corners = [voxel_to_world(AFFINE, view.to_voxel(key, y, x)) for x, y in ((x0, y0), (x1, y1))]
    mm = ",".join(f"{v:.4f}" for v in np.concatenate(corners))
    assert main(["segment", str(scan), "-o", str(tmp_path / "a"), "-q", *pixel_args]) == 0
    rc = main(["segment", str(scan), "-o", str(tmp_path / "b"), "-q", "--axis", "coronal",
               "--box-mm", mm])  # fmt: skip
    assert rc == 0
    a = np.asarray(nib.load(str(tmp_path / "a" / "scan one é_seg.nii.gz")).dataobj)
    b = np.asarray(nib.load(str(tmp_path / "b" / "scan one é_seg.nii.gz")).dataobj)
    assert dice(a > 0, b > 0) >= 0.99


def test_points_and_no_propagate(tmp_path):
    scan, mask = _scan(tmp_path)
    args = _prompt(mask)
    key = int(args[3])
    view = PlaneView.from_affine(AFFINE, mask.shape, "axial")
    rows, cols = np.nonzero(view.stack(mask)[key])
    point = f"{int(cols.mean())},{int(rows.mean())},1"
    out = tmp_path / "o"
    assert main(["segment", str(scan), "-o", str(out), "-q", *args, "--point", point,
                 "--no-propagate", "--label", "7"]) == 0  # fmt: skip
    labels = np.asarray(nib.load(str(out / "scan one é_seg.nii.gz")).dataobj)
    stack = view.stack(labels)
    assert set(np.unique(labels)) == {0, 7}
    assert stack[key].any() and not np.delete(stack, key, axis=0).any()


def test_slices_bound_propagation_and_are_checked(tmp_path, capsys):
    scan, mask = _scan(tmp_path)
    args = _prompt(mask)
    key = int(args[3])
    out = tmp_path / "o"
    rc = main(
        ["segment", str(scan), "-o", str(out), "-q", *args, "--slices", f"{key - 1},{key + 1}"]
    )
    assert rc == 0
    labels = np.asarray(nib.load(str(out / "scan one é_seg.nii.gz")).dataobj)
    z = np.nonzero(labels.any(axis=(0, 1)))[0]  # axial slices are voxel z here
    assert z.min() >= key - 1 and z.max() <= key + 1 and key in z
    rc = main(["segment", str(scan), "-o", str(tmp_path / "p"), "-q", *args,
               "--slices", f"{key + 1},{key + 3}"])  # fmt: skip
    assert rc == 2
    assert "--slices" in capsys.readouterr().err
    assert not (tmp_path / "p" / "scan one é_seg.nii.gz").exists()


def _medseg(*args: str, **kwargs) -> subprocess.Popen:
    """The CLI in the harshest locale a server may have: ASCII, UTF-8 mode off.

    File names here hold non-ASCII characters, so this catches any message that cannot be
    encoded (a crash instead of exit code and message).
    """
    cmd = [sys.executable, "-m", "medseg.cli.main", *args]
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    return subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        **kwargs,
    )


def test_subprocess_run_and_exit_code(tmp_path):
    scan, mask = _scan(tmp_path, shape=(40, 36, 6), radii=(10, 8, 2))
    proc = _medseg("segment", str(scan), "-o", str(tmp_path / "o"), *_prompt(mask))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "wrote" in out and "mL" in out


def _default_sigint() -> None:
    """Child starts with SIGINT at its default (a background shell ignores it, and Python then
    installs no KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_text(stream, text: str, timeout: float) -> str:
    """Read ``stream`` in a thread until ``text`` appears (or EOF / timeout); return what came."""
    seen: list[str] = []
    found = threading.Event()

    def read() -> None:
        while chunk := stream.read(1):
            seen.append(chunk)
            if chunk == text[-1] and text in "".join(seen[-len(text) :]):
                found.set()
                return
        found.set()

    threading.Thread(target=read, daemon=True).start()
    found.wait(timeout)
    return "".join(seen)


@pytest.mark.parametrize(
    ("signum", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["sigint", "sigterm"],
)
def test_signal_during_inference_exits_without_output(tmp_path, signum, code, word):
    """C.2 row 27: Ctrl-C / SIGTERM while the model runs -> 130 / 143, nothing written."""
    scan, mask = _scan(tmp_path, shape=(64, 56, 120), radii=(18, 12, 55))
    out = tmp_path / "o"
    proc = _medseg("segment", str(scan), "-o", str(out), "--precision", "fp32", *_prompt(mask),
                   preexec_fn=_default_sigint)  # fmt: skip
    before = _wait_for_text(proc.stderr, "segmenting", timeout=120)
    assert "segmenting" in before, before
    time.sleep(1.0)  # inside the propagation (120 slices take far longer)
    assert proc.poll() is None, "finished before the signal; make the volume bigger"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert f"error: {word}" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())  # no output, no temp file


def test_disk_full_during_write_exits_3_and_keeps_previous_output(tmp_path):
    """C.2 row 25 and the all-or-nothing rule: a file-size limit that the new label map and
    statistics fit under but the preview does not -> exit 3 and all three previous outputs
    byte-identical (the new label map, already written to its temp file, is not renamed in)."""
    scan, mask = _scan(tmp_path, shape=(40, 36, 6), radii=(10, 8, 2))
    out = tmp_path / "o"
    args = [*_prompt(mask), "--no-propagate"]
    assert main(["segment", str(scan), "-o", str(out), "-q", *args]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    sizes = {name.rsplit("_", 1)[1]: len(data) for name, data in before.items()}
    small = max(sizes["seg.nii.gz"], sizes["stats.json"])
    assert sizes["preview.png"] > small + 1024, sizes
    limit = small + 512

    def limit_file_size():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = _medseg("segment", str(scan), "-o", str(out), "--overwrite", *args, "--label", "2",
                   preexec_fn=limit_file_size)  # fmt: skip
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err
    assert "could not write output: File too large" in err
    assert "_preview.png" in err  # the file that did not fit is named
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp file either


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read mode-000 files")
def test_unreadable_input_exit_2(tmp_path):
    scan, mask = _scan(tmp_path)
    scan.chmod(0)
    assert main(["segment", str(scan), "-o", str(tmp_path / "o"), *_prompt(mask)]) == 2


# --- input kinds and reruns (one prompted slice: cheap) ---------------------------------------
def _small_scan(path: Path, klass=nib.Nifti1Image) -> tuple[Path, np.ndarray]:
    image, mask = ellipsoid_volume((40, 36, 6), radii=(10, 8, 2))
    nib.save(klass(image, AFFINE), str(path))
    return path, mask


@pytest.mark.parametrize("kind", ["nifti2", "uppercase", "symlink"])
def test_output_grid_equals_the_input_grid(tmp_path, kind):
    """C.2 row 18 at the CLI: NIfTI-2, `.NII.GZ`, symlinked input; output affine = input's."""
    name = "SCAN.NII.GZ" if kind == "uppercase" else "scan.nii.gz"
    scan, mask = _small_scan(tmp_path / name, nib.Nifti2Image if kind == "nifti2" else
                             nib.Nifti1Image)  # fmt: skip
    if kind == "symlink":
        (tmp_path / "link.nii.gz").symlink_to(scan)
        scan = tmp_path / "link.nii.gz"
    out = tmp_path / "out"
    args = _prompt(mask)
    assert main(["segment", str(scan), "-o", str(out), "-q", "--no-propagate", *args]) == 0
    stem = {"uppercase": "SCAN", "symlink": "link"}.get(kind, "scan")
    seg = nib.load(str(out / f"{stem}_seg.nii.gz"))
    src = nib.load(str(scan))
    assert seg.shape == src.shape == mask.shape
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-5)
    np.testing.assert_allclose(seg.affine, AFFINE, atol=1e-5)
    labels = np.asarray(seg.dataobj)
    assert labels[:, :, int(args[3])].any()  # axial slice k of this grid is voxel z = k
    if kind == "symlink":
        assert scan.is_symlink()


def test_nan_policy_zero_warns_and_segments(tmp_path, capsys):
    """C.2 row 13: NaN/Inf refused by default (exit 2); --nan-policy zero -> exit 0 + warning."""
    image, mask = ellipsoid_volume((40, 36, 6), radii=(10, 8, 2))
    image[0, 0, 0], image[1, 0, 0], image[2, 0, 0] = np.nan, np.inf, -np.inf
    scan = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(image, AFFINE), str(scan))
    out = tmp_path / "out"
    args = ["segment", str(scan), "-o", str(out), "-q", "--no-propagate", *_prompt(mask)]
    assert main(args) == 2
    assert "non-finite voxels (3); use --nan-policy zero" in capsys.readouterr().err
    assert not out.exists()
    assert main([*args, "--nan-policy", "zero"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {scan}: replaced 3 non-finite voxels (NaN/Inf) with 0" in err
    stats = json.loads((out / "nan_stats.json").read_text(encoding="utf-8"))
    assert any("3 non-finite" in w for w in stats["warnings"])
    labels = np.asarray(nib.load(str(out / "nan_seg.nii.gz")).dataobj)
    assert labels.dtype == np.uint8 and labels.any()


def test_dicom_ct5n_series_segments_on_its_grid(tmp_path):
    """C.2 row 20: the CT5N series folder -> exit 0, a 5-slice 2.5 mm label map on its grid."""
    from bad_inputs import CT5N, copy_series

    from medseg.io import load_volume

    folder = copy_series(tmp_path, "ct5n", CT5N)
    out = tmp_path / "out"
    rc = main(["segment", str(folder), "-o", str(out), "-q", "--box", "3,3,12,12", "--slice", "2",
               "--window", "40,400"])  # fmt: skip
    assert rc == 0
    seg = nib.load(str(out / "ct5n_seg.nii.gz"))
    source = load_volume(folder)
    assert seg.shape == (16, 16, 5)
    np.testing.assert_allclose(seg.affine, source.affine, atol=1e-5)
    np.testing.assert_allclose(seg.header.get_zooms(), [0.488281, 0.488281, 2.5], atol=1e-5)
    stats = json.loads((out / "ct5n_stats.json").read_text(encoding="utf-8"))
    assert stats["grid"]["shape"] == [16, 16, 5]


def test_rerun_needs_overwrite_and_cleans_old_orphan_temps(tmp_path, capsys):
    """C.2 rows 2 and 26: a rerun without --overwrite exits 2 and changes nothing; with it the
    outputs are replaced; ``.tmp_*`` orphans older than an hour go, user files stay."""
    scan, mask = _small_scan(tmp_path / "scan.nii.gz")
    out = tmp_path / "out"
    out.mkdir()
    old = time.time() - 7200
    orphans = [out / ".tmp_k3j4h5l6.nii.gz", out / ".tmp_a1b2c3"]
    orphans[0].write_bytes(b"partial label map of a killed run")
    orphans[1].mkdir()
    (orphans[1] / "scan.zraw").write_bytes(b"partial")
    keep = [out / ".tmp_fresh.png", out / "notes.txt", out / "tmp_scan.nii.gz"]
    for p in keep:
        p.write_bytes(b"user data")
    for p in [*orphans, *keep[1:]]:
        os.utime(p, (old, old))
    args = ["segment", str(scan), "-o", str(out), "-q", "--no-propagate", *_prompt(mask)]
    assert main(args) == 0
    assert not any(p.exists() for p in orphans)
    assert all(p.read_bytes() == b"user data" for p in keep)
    outputs = {p.name: p.read_bytes() for p in out.glob("scan_*")}
    assert sorted(outputs) == ["scan_preview.png", "scan_seg.nii.gz", "scan_stats.json"]

    capsys.readouterr()
    assert main([*args, "--label", "3"]) == 2
    assert "scan_seg.nii.gz: already exists; pass --overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.glob("scan_*")} == outputs

    assert main([*args, "--label", "3", "--overwrite"]) == 0
    labels = np.asarray(nib.load(str(out / "scan_seg.nii.gz")).dataobj)
    assert set(np.unique(labels)) == {0, 3}
    stats = json.loads((out / "scan_stats.json").read_text(encoding="utf-8"))
    assert [e["label"] for e in stats["labels"]] == [3]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*outputs, ".tmp_fresh.png", "notes.txt", "tmp_scan.nii.gz"]
    )
