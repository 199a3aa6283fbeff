"""The Python API (``medseg.segment``, ``Segmenter``, prompts) and the CLI as a shell over it.

The API must write exactly what ``medseg segment`` writes (the statistics' ``seconds`` aside),
load the weights once for many volumes, refuse every bad option before the model loads and
leave no output folder behind when it refuses; the CLI must read negative millimetres and print
one line per error whatever the file name holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from testkit import ellipsoid_volume

import medseg
from medseg.cli.main import main
from medseg.errors import InputError
from medseg.transforms.planes import PlaneView, voxel_to_world

AFFINE = np.diag([-0.8, -0.8, 3.0, 1.0])
AFFINE[:3, 3] = [-20.0, -15.0, -90.0]  # every voxel at negative RAS x, y and z


def _scan(path: Path, shape=(40, 36, 6)) -> tuple[Path, np.ndarray]:
    image, mask = ellipsoid_volume(shape, radii=(10, 8, 2))
    nib.save(nib.Nifti1Image(image, AFFINE), str(path))
    return path, mask


def _box(mask: np.ndarray) -> tuple[int, tuple[int, int, int, int]]:
    """``(key slice, box)`` around the object on its largest axial slice (display pixels)."""
    stack = PlaneView.from_affine(AFFINE, mask.shape, "axial").stack(mask)
    key = int(np.argmax(stack.sum(axis=(1, 2))))
    rows, cols = np.nonzero(stack[key])
    return key, (cols.min() - 2, rows.min() - 2, cols.max() + 2, rows.max() + 2)


def _no_model(monkeypatch) -> None:
    """Fail the test if anything loads LiteMedSAM."""
    import medseg.models.litemedsam as lite

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad option was refused")

    monkeypatch.setattr(lite, "load_litemedsam", refuse)


def test_api_writes_what_the_cli_writes(tmp_path):
    scan, mask = _scan(tmp_path / "scan.nii.gz")
    key, box = _box(mask)
    argv = ["segment", str(scan), "-o", str(tmp_path / "cli"), "-q", "--slice", str(key),
            "--box", ",".join(map(str, box))]  # fmt: skip
    assert main(argv) == 0

    result = medseg.segment(scan, prompts=medseg.Box(box, slice=key), output=tmp_path / "api")
    cli = {p.name: p for p in (tmp_path / "cli").iterdir()}
    assert sorted(p.name for p in result.paths) == sorted(cli)
    for path in result.paths:
        if path.suffix == ".json":
            a, b = json.loads(path.read_text()), json.loads(cli[path.name].read_text())
            assert a.pop("seconds") > 0 and b.pop("seconds") > 0
            assert a == b
        elif path.name.endswith(".nii.gz"):
            a, b = nib.load(str(path)), nib.load(str(cli[path.name]))
            np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
            np.testing.assert_array_equal(a.affine, b.affine)
        else:
            assert path.read_bytes() == cli[path.name].read_bytes()
    labels = result.labels.array
    assert labels.shape == mask.shape and (labels > 0).sum() > 0.8 * mask.sum()
    voxel_ml = abs(np.linalg.det(AFFINE[:3, :3])) / 1000
    assert result.volumes_ml[1] == pytest.approx((labels > 0).sum() * voxel_ml, rel=1e-3)


def test_one_segmenter_loads_the_weights_once_for_many_volumes(tmp_path, monkeypatch):
    import medseg.models.litemedsam as lite

    loads = []
    real = lite.load_litemedsam
    monkeypatch.setattr(lite, "load_litemedsam", lambda *a, **k: loads.append(1) or real(*a, **k))
    segmenter = medseg.Segmenter()
    for n, shape in enumerate([(40, 36, 6), (44, 40, 5)]):
        scan, mask = _scan(tmp_path / f"case{n}.nii.gz", shape)
        volume = medseg.load_volume(scan)
        key, box = _box(mask)
        result = segmenter.segment(volume, prompts=medseg.Box(box, slice=key), propagate=False)
        assert result.labels.spatial_shape == shape and result.paths == []  # nothing written
        np.testing.assert_array_equal(result.labels.affine, volume.affine)
        assert set(np.unique(result.labels.array)) == {0, 1}
        written = result.save(tmp_path / "out")
        assert [p.name for p in written] == [f"case{n}_seg.nii.gz", f"case{n}_stats.json",
                                             f"case{n}_preview.png"]  # fmt: skip
    assert loads == [1]


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"label": 0}, "--label (label=) must be an integer from 1 to 65535"),
        ({"label": -1}, "--label (label=) must be an integer from 1 to 65535"),
        ({"label": 70000}, "--label (label=) must be an integer from 1 to 65535"),
        ({"window": (40, 0)}, "window"),
        ({"slices": (5, 2)}, "slices"),
        ({"slice_shift": 100}, "slice"),
        ({"formats": ["dicom"]}, "unknown output format 'dicom'"),
        # a SEG/RTSTRUCT references its source DICOM images: refused for a NIfTI input
        ({"formats": ["nifti", "dicom-seg"]}, "--format dicom-seg references the source DICOM"),
        ({"formats": "rtstruct"}, "this input is not a DICOM series"),
    ],
)
def test_bad_options_are_refused_before_the_model_loads(tmp_path, monkeypatch, keywords, message):
    scan, mask = _scan(tmp_path / "scan.nii.gz")
    key, box = _box(mask)
    key += keywords.pop("slice_shift", 0)
    _no_model(monkeypatch)
    out = tmp_path / "new" / "out"
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        medseg.segment(scan, prompts=medseg.Box(box, slice=key), output=out, **keywords)
    assert not (tmp_path / "new").exists()  # a refused run leaves no folder behind


def test_existing_outputs_and_inputs_are_never_replaced(tmp_path, monkeypatch):
    scan, mask = _scan(tmp_path / "scan.nii.gz")
    key, box = _box(mask)
    (tmp_path / "scan_stats.json").write_text("mine")
    _no_model(monkeypatch)
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        medseg.segment(scan, prompts=medseg.Box(box, slice=key), output=tmp_path)
    other = tmp_path / "other_seg.nii.gz"  # e.g. another input of the same batch
    other.write_bytes(b"an input")
    with pytest.raises(InputError, match="would overwrite the input"):
        medseg.segment(scan, prompts=medseg.Box(box, slice=key), output=tmp_path,
                       output_name="other", protect=[other], overwrite=True)  # fmt: skip
    assert other.read_bytes() == b"an input"
    assert (tmp_path / "scan_stats.json").read_text() == "mine"


def test_prompts_file_gives_the_prompts_of_the_flags(tmp_path):
    scan, mask = _scan(tmp_path / "scan.nii.gz")
    key, box = _box(mask)
    cx, cy = (box[0] + box[2]) // 2, (box[1] + box[3]) // 2
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": [
        {"box": [int(v) for v in box], "axis": "axial", "slice": key},
        {"point": [int(cx), int(cy)], "label": 1, "slice": key},
    ]}))  # fmt: skip
    assert medseg.read_prompts(prompts) == [
        medseg.Box(box, slice=key), medseg.Point((cx, cy), label=1, slice=key)
    ]  # fmt: skip
    common = ["-q", "--no-propagate"]
    assert main(["segment", str(scan), "-o", str(tmp_path / "a"), *common, "--prompts",
                 str(prompts)]) == 0  # fmt: skip
    assert main(["segment", str(scan), "-o", str(tmp_path / "b"), *common, "--slice", str(key),
                 "--box", ",".join(map(str, box)), "--point", f"{cx},{cy}"]) == 0  # fmt: skip
    a = np.asarray(nib.load(str(tmp_path / "a" / "scan_seg.nii.gz")).dataobj)
    b = np.asarray(nib.load(str(tmp_path / "b" / "scan_seg.nii.gz")).dataobj)
    np.testing.assert_array_equal(a, b)
    assert a.any()

    prompts.write_text('[{"box": [1, 2, 3], "slice": 0}]')
    with pytest.raises(InputError, match="prompt 0: .*4"):
        medseg.read_prompts(prompts)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--label", "-1"], "--label (label=) must be an integer from 1 to 65535"),
        (["--label", "0"], "--label (label=) must be an integer from 1 to 65535"),
        (["--label", "70000"], "--label (label=) must be an integer from 1 to 65535"),
        (["--window", "40,0"], "window"),
        (["--slices", "9,12"], "--slices 9,12 must satisfy"),
    ],
)
def test_cli_refuses_bad_options_before_work_and_creates_nothing(
    tmp_path, capsys, monkeypatch, extra, message
):
    scan, mask = _scan(tmp_path / "scan.nii.gz")
    key, box = _box(mask)
    _no_model(monkeypatch)
    out = tmp_path / "out"
    argv = ["segment", str(scan), "-o", str(out), "-q", "--slice", str(key), "--box",
            ",".join(map(str, box)), *extra]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not out.exists()


def test_cli_reads_negative_millimetres(tmp_path):
    scan, mask = _scan(tmp_path / "scan.nii.gz")
    key, (x0, y0, x1, y1) = _box(mask)
    view = PlaneView.from_affine(AFFINE, mask.shape, "axial")
    corners = [voxel_to_world(AFFINE, view.to_voxel(key, y, x)) for x, y in ((x0, y0), (x1, y1))]
    mm = ",".join(f"{v:.3f}" for v in np.concatenate(corners))
    assert mm.startswith("-")  # what argparse used to take for an option
    out = tmp_path / "out"
    argv = ["segment", str(scan), "-o", str(out), "-q", "--no-propagate", "--box-mm", mm]
    assert main(argv) == 0
    labels = np.asarray(nib.load(str(out / "scan_seg.nii.gz")).dataobj)
    assert view.stack(labels)[key].any()


def test_a_file_name_cannot_forge_error_lines(tmp_path, capsys):
    bad = tmp_path / "scan\nerror: all good\x1b[2J.nii.gz"
    bad.write_bytes(b"not a volume")
    assert main(["segment", str(bad), "-o", str(tmp_path / "out"), "--slice", "0",
                 "--box", "1,1,5,5"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "scan\\nerror: all good\\x1b[2J.nii.gz" in lines[0] and "\x1b" not in err
