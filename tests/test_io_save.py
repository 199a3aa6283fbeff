"""save_volume: refusals, atomicity under disk-full and SIGKILL, orphan clean-up, label dtypes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import InputError, OutputError
from medseg.io import Volume, cleanup_orphan_temps, load_volume, save_volume

ROOT = Path(__file__).resolve().parents[1]
AFFINE = np.array([[0.0, -1.5, 0, 20], [1.5, 0, 0, -10], [0, 0, 2.0, 5], [0, 0, 0, 1]])


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _vol(value: float = 1.0, shape=(6, 5, 4)) -> Volume:
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape) * value
    return Volume(array=data, affine=AFFINE)


def _temps(folder: Path) -> list[Path]:
    return list(folder.glob(".tmp_*"))


# --- refusals ---------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mhd"])
def test_existing_output_needs_overwrite(tmp_path, ext):
    out = save_volume(_vol(1), tmp_path / f"out{ext}")
    before = _sha(out)
    with pytest.raises(InputError, match="already exists; pass --overwrite") as info:
        save_volume(_vol(2), out)
    assert info.value.code == "exists" and info.value.exit_code == 2
    assert _sha(out) == before
    save_volume(_vol(2), out, overwrite=True)
    assert _sha(out) != before
    np.testing.assert_array_equal(load_volume(out).array, _vol(2).array)
    assert not _temps(tmp_path)


def test_refuses_to_overwrite_the_input_even_with_overwrite(tmp_path):
    src = save_volume(_vol(1), tmp_path / "in.nii.gz")
    (tmp_path / "alias.nii.gz").symlink_to(src)
    os.link(src, tmp_path / "hard.nii.gz")
    before = _sha(src)
    for target in (
        src,
        tmp_path / "alias.nii.gz",
        tmp_path / "hard.nii.gz",
        tmp_path / "sub" / ".." / "in.nii.gz",
    ):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(InputError, match="would overwrite the input") as info:
            save_volume(_vol(2), target, overwrite=True, protect=[src])
        assert info.value.code == "would_overwrite_input"
    with pytest.raises(InputError):  # protect given as the symlink, target is the real file
        save_volume(_vol(2), src, overwrite=True, protect=[tmp_path / "alias.nii.gz"])
    assert _sha(src) == before


def test_missing_folder_and_file_as_folder_are_output_errors(tmp_path):
    with pytest.raises(OutputError) as info:
        save_volume(_vol(), tmp_path / "nope" / "out.nii.gz")
    assert info.value.code == "no_folder" and info.value.exit_code == 3
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError):
        save_volume(_vol(), tmp_path / "file" / "out.nii.gz")


def test_unwritable_folder_is_an_output_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into mode-500 folders")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="could not write output") as info:
            save_volume(_vol(), folder / "out.nii.gz")
        assert info.value.code == "permission"
    finally:
        folder.chmod(0o700)
    assert not list(folder.iterdir())


def test_permission_error_creating_the_temp_file(tmp_path, monkeypatch):
    """Runs as root too: EACCES from the temp-file creation becomes OutputError permission."""
    import tempfile

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", deny)
    with pytest.raises(OutputError, match="could not write output: Permission denied") as info:
        save_volume(_vol(), tmp_path / "out.nii.gz")
    assert info.value.code == "permission" and info.value.exit_code == 3


def test_output_path_that_is_a_folder_or_unknown_extension(tmp_path):
    (tmp_path / "d.nii.gz").mkdir()
    with pytest.raises(InputError) as info:
        save_volume(_vol(), tmp_path / "d.nii.gz", overwrite=True)
    assert info.value.code == "not_regular_file"
    with pytest.raises(InputError) as info:
        save_volume(_vol(), tmp_path / "out.png")
    assert info.value.code == "unknown_format"


@pytest.mark.parametrize(
    ("values", "words"),
    [([-1, 2], "-1"), ([1.5, 2], "1.5"), ([70000], "65535"), ([np.nan], "non-finite")],
)
def test_bad_label_arrays_are_refused_and_nothing_written(tmp_path, values, words):
    arr = np.zeros((6, 5, 4), np.float64)
    arr.flat[: len(values)] = values
    with pytest.raises(InputError, match=words) as info:
        save_volume(_vol().with_array(arr), tmp_path / "seg.nii.gz", role="label")
    assert info.value.code == "bad_labels"
    assert not list(tmp_path.iterdir())


def test_nibabel_refuses_int64_without_dtype():
    """C.2 row 24 pin: the nibabel behaviour save_volume works around (explicit header dtype).

    If this starts passing, nibabel changed; the cast in ``save._prepare`` stays right anyway.
    """
    labels = np.zeros((6, 5, 4), np.int64)
    with pytest.raises(ValueError, match="int64.*explicit header or dtype"):
        nib.Nifti1Image(labels, AFFINE)
    assert nib.Nifti1Image(labels, AFFINE, dtype=np.uint8).get_data_dtype() == np.uint8


def test_int64_arrays_save_with_explicit_dtypes(tmp_path):
    labels = np.zeros((6, 5, 4), np.int64)
    labels[1, 2, 3] = 3
    out = save_volume(_vol().with_array(labels), tmp_path / "seg.nii.gz", role="label")
    assert nib.load(out).get_data_dtype() == np.uint8
    big = labels.copy()
    big[0, 0, 0] = 300
    out16 = save_volume(_vol().with_array(big), tmp_path / "seg16.nii.gz", role="label")
    assert nib.load(out16).get_data_dtype() == np.uint16
    img = save_volume(_vol().with_array(labels * 1000), tmp_path / "img.nii.gz")
    assert nib.load(img).get_data_dtype() == np.int32
    np.testing.assert_array_equal(load_volume(out16, role="label").array, big)
    np.testing.assert_array_equal(np.asarray(nib.load(img).dataobj), labels * 1000)


# --- several files all-or-nothing (StagedWrites) ----------------------------------------------
def _previous_outputs(folder: Path) -> dict[str, bytes]:
    save_volume(_vol(1), folder / "seg.nii.gz", role="label")
    (folder / "stats.json").write_bytes(b'{"old": true}\n')
    (folder / "preview.png").write_bytes(b"old picture")
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_staged_writes_commit_all_together(tmp_path):
    from medseg.io import StagedWrites, stage_volume

    _previous_outputs(tmp_path)
    with StagedWrites() as staged:
        stage_volume(staged, _vol(2), tmp_path / "seg.nii.gz", overwrite=True, role="label")
        staged.stage_bytes(tmp_path / "stats.json", b"new stats")
        staged.stage_bytes(tmp_path / "preview.png", b"new picture")
        assert (tmp_path / "stats.json").read_bytes() == b'{"old": true}\n'  # not yet
        assert len(_temps(tmp_path)) == 3
    assert (tmp_path / "stats.json").read_bytes() == b"new stats"
    assert (tmp_path / "preview.png").read_bytes() == b"new picture"
    np.testing.assert_array_equal(load_volume(tmp_path / "seg.nii.gz", role="label").array,
                                  _vol(2).array)  # fmt: skip
    assert not _temps(tmp_path)


@pytest.mark.parametrize("failure", ["oserror", "interrupt"])
def test_staged_writes_failure_keeps_every_previous_output(tmp_path, failure):
    """A failure after two files are staged (disk full, Ctrl-C) changes none of the three."""
    from medseg.io import StagedWrites, stage_volume

    before = _previous_outputs(tmp_path)

    def fail(tmp: str) -> None:
        Path(tmp).write_bytes(b"partial")
        if failure == "oserror":
            raise OSError(28, "No space left on device")
        raise KeyboardInterrupt

    expected = OutputError if failure == "oserror" else KeyboardInterrupt
    with pytest.raises(expected) as info, StagedWrites() as staged:
        stage_volume(staged, _vol(2), tmp_path / "seg.nii.gz", overwrite=True, role="label")
        staged.stage_bytes(tmp_path / "stats.json", b"new stats")
        staged.stage(tmp_path / "preview.png", fail)
    if failure == "oserror":
        assert info.value.code == "disk_full" and info.value.path == str(tmp_path / "preview.png")
        assert "could not write output: No space left on device" in str(info.value)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert not _temps(tmp_path)


def test_staged_mhd_failure_removes_the_staging_folder(tmp_path):
    from medseg.io import StagedWrites, stage_volume

    def too_large(tmp: str) -> None:
        raise OSError(27, "File too large")

    with pytest.raises(OutputError, match="File too large"), StagedWrites() as staged:
        stage_volume(staged, _vol(2), tmp_path / "img.mhd")
        assert len(_temps(tmp_path)) == 1 and _temps(tmp_path)[0].is_dir()  # header + .zraw
        staged.stage(tmp_path / "x.json", too_large)
    assert not list(tmp_path.iterdir())


def test_output_mode_follows_umask_not_mkstemp(tmp_path):
    out = save_volume(_vol(), tmp_path / "out.nii.gz")
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_mhd_writes_header_and_data_and_no_temp_folder(tmp_path):
    save_volume(_vol(), tmp_path / "vol.mhd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol.mhd", "vol.zraw"]
    assert "ElementDataFile = vol.zraw" in (tmp_path / "vol.mhd").read_text(encoding="utf-8")


def test_sheared_volume_is_refused(tmp_path):
    aff = np.eye(4)
    aff[0, 1] = 0.5
    with pytest.raises(InputError) as info:
        save_volume(Volume(array=np.zeros((3, 3, 3), np.float32), affine=aff), tmp_path / "x.nii")
    assert info.value.code == "invalid_geometry"


# --- disk full and SIGKILL (child processes) --------------------------------------------------
_DISK_FULL = """
import resource, sys
import numpy as np
from medseg.errors import OutputError
from medseg.io import Volume, save_volume
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
data = np.random.default_rng(1).normal(size=(64, 64, 64)).astype(np.float32)  # ~1 MB, noisy
try:
    save_volume(Volume(array=data, affine=np.eye(4)), sys.argv[1], overwrite=True)
except OutputError as e:
    print(e.code, "|", e)
    sys.exit(e.exit_code)
print("WROTE")
"""


@pytest.mark.parametrize("ext", [".nii.gz", ".nrrd", ".mha", ".mhd"])
def test_disk_full_keeps_the_previous_output(tmp_path, ext):
    out = save_volume(_vol(1), tmp_path / f"out{ext}")
    before = {p.name: _sha(p) for p in tmp_path.iterdir()}
    run = subprocess.run(
        [sys.executable, "-c", _DISK_FULL, str(out)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=60,
        cwd=ROOT,
    )
    assert run.returncode == 3, run.stdout + run.stderr
    assert "could not write output" in run.stdout
    assert {p.name: _sha(p) for p in tmp_path.iterdir()} == before
    assert not _temps(tmp_path)


_KILLED = """
import sys
import numpy as np
from medseg.io import Volume, save_volume
labels = np.random.default_rng(2).integers(0, 200, size=(256, 256, 160), dtype=np.uint8)
vol = Volume(array=labels, affine=np.eye(4))
print("WRITING", flush=True)
save_volume(vol, sys.argv[1], overwrite=True, role="label")
print("DONE", flush=True)
"""


def test_sigkill_during_write_keeps_the_previous_output(tmp_path):
    out = save_volume(_vol(1), tmp_path / "seg.nii.gz", role="label")
    before = _sha(out)
    outcomes = []
    for delay in (0.0, 0.05, 0.15, 0.3):  # after the temp file appears (the write is under way)
        child = subprocess.Popen(
            [sys.executable, "-c", _KILLED, str(out)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        assert child.stdout.readline().strip() == "WRITING"
        known = set(_temps(tmp_path))
        deadline = time.monotonic() + 30
        while not set(_temps(tmp_path)) - known and child.poll() is None:
            assert time.monotonic() < deadline, "no temp file appeared"
            time.sleep(0.005)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        if _sha(out) == before:
            outcomes.append("old")
        else:  # the write finished before the kill: then it must be complete
            assert load_volume(out, role="label").array.shape == (256, 256, 160)
            outcomes.append("new")
            before = _sha(out)
    assert "old" in outcomes, outcomes
    assert load_volume(out, role="label").array.size > 0
    assert cleanup_orphan_temps(tmp_path, older_than_s=0) >= 1
    assert not _temps(tmp_path) and out.exists()


# --- orphan clean-up --------------------------------------------------------------------------
def test_cleanup_orphan_temps_removes_only_old_orphans(tmp_path):
    old = time.time() - 7200
    orphans = [tmp_path / ".tmp_abc123.nii.gz", tmp_path / ".tmp_dir42"]
    orphans[0].write_bytes(b"partial")
    orphans[1].mkdir()
    (orphans[1] / "x.zraw").write_bytes(b"partial")
    fresh = tmp_path / ".tmp_fresh.nii.gz"
    fresh.write_bytes(b"in progress")
    users = [tmp_path / "tmp_scan.nii.gz", tmp_path / "scan.nii.gz", tmp_path / ".hidden"]
    for p in users:
        p.write_bytes(b"user data")
    for p in [*orphans, *users]:
        os.utime(p, (old, old))
    assert cleanup_orphan_temps(tmp_path) == 2
    assert not any(p.exists() for p in orphans)
    assert fresh.exists() and all(p.exists() for p in users)
    assert cleanup_orphan_temps(tmp_path / "missing") == 0


def test_failed_write_leaves_no_temp(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib.Nifti1Image, "to_filename", boom)
    with pytest.raises(OutputError, match="No space left on device") as info:
        save_volume(_vol(), tmp_path / "x.nii.gz")
    assert info.value.code == "disk_full"
    assert not list(tmp_path.iterdir())
