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
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from testkit import ellipsoid_volume

from medseg.cli.main import main
from medseg.inference.stats import dice
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


def test_sigterm_during_inference_exits_143_without_output(tmp_path):
    scan, mask = _scan(tmp_path, shape=(64, 56, 120), radii=(18, 12, 55))
    out = tmp_path / "o"
    proc = _medseg("segment", str(scan), "-o", str(out), "--precision", "fp32", *_prompt(mask))
    time.sleep(8)
    assert proc.poll() is None, "finished before the signal; make the volume bigger"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated" in err
    assert not out.exists() or not any(out.iterdir())


def test_disk_full_during_write_exits_3_and_keeps_previous_output(tmp_path):
    scan, mask = _scan(tmp_path, shape=(40, 36, 6), radii=(10, 8, 2))
    out = tmp_path / "o"
    assert main(["segment", str(scan), "-o", str(out), "-q", *_prompt(mask)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def limit():  # 64 bytes: every output write fails with EFBIG
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))

    proc = _medseg("segment", str(scan), "-o", str(out), "--overwrite", *_prompt(mask),
                   preexec_fn=limit)  # fmt: skip
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err
    assert "could not write output" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read mode-000 files")
def test_unreadable_input_exit_2(tmp_path):
    scan, mask = _scan(tmp_path)
    scan.chmod(0)
    assert main(["segment", str(scan), "-o", str(tmp_path / "o"), *_prompt(mask)]) == 2
