"""Several objects, key slices, 3D boxes and corrections through the API and ``--prompts``,
with the shipped LiteMedSAM on a synthetic volume holding two bright ellipsoids."""

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
from medseg.metrics import dice
from medseg.transforms.planes import PlaneView, voxel_to_world

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])
SHAPE = (64, 48, 10)


def _two_objects(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    image, left = ellipsoid_volume(SHAPE, center=(18, 24, 5), radii=(9, 9, 3))
    _, right = ellipsoid_volume(SHAPE, center=(46, 24, 5), radii=(8, 10, 3))
    image[right] += 400.0
    nib.save(nib.Nifti1Image(image, AFFINE), str(tmp_path / "two.nii.gz"))
    return tmp_path / "two.nii.gz", left, right


def _box(mask: np.ndarray, index: int) -> tuple[int, int, int, int]:
    stack = PlaneView.from_affine(AFFINE, SHAPE, "axial").stack(mask)
    rows, cols = np.nonzero(stack[index])
    return (cols.min() - 2, rows.min() - 2, cols.max() + 2, rows.max() + 2)


def test_two_objects_in_one_run_get_their_labels_names_and_statistics(tmp_path):
    scan, left, right = _two_objects(tmp_path)
    objects = [
        medseg.Object(medseg.Box(_box(left, 5), slice=5), label=1, name="left"),
        medseg.Object(
            medseg.Box(_box(right, 5), slice=5), label=7, name="right", color=(255, 0, 0)
        ),  # fmt: skip
    ]
    result = medseg.segment(scan, prompts=objects, output=tmp_path / "out")
    labels = result.labels.array
    assert set(np.unique(labels)) == {0, 1, 7}
    assert dice(labels == 1, left) > 0.8 and dice(labels == 7, right) > 0.8
    stats = json.loads((tmp_path / "out" / "two_stats.json").read_text())
    assert {e["name"]: e["label"] for e in stats["labels"]} == {"left": 1, "right": 7}
    assert [o["name"] for o in stats["objects"]] == ["left", "right"]
    assert stats["objects"][1]["color"] == [255, 0, 0]


def test_prompts_file_with_objects_through_the_cli(tmp_path, capsys):
    scan, left, right = _two_objects(tmp_path)
    prompts = tmp_path / "objects.json"
    b = _box(right, 5)
    centre = [int(b[0] + b[2]) // 2, int(b[1] + b[3]) // 2]  # display pixels of the right one
    prompts.write_text(json.dumps({"objects": [
        {"label": 2, "name": "left", "prompts": [{"box": list(map(int, _box(left, 5))),
                                                  "slice": 5}]},
        {"label": 3, "name": "right", "prompts": [{"box": list(map(int, _box(right, 4))),
                                                   "slice": 4},
                                                  {"box": list(map(int, _box(right, 6))),
                                                   "slice": 6}],
         "corrections": [{"point": centre, "label": 1, "slice": 5}]},
    ]}))  # fmt: skip
    assert main(["segment", str(scan), "-o", str(tmp_path / "o"), "-q", "--prompts",
                 str(prompts)]) == 0  # fmt: skip
    labels = np.asarray(nib.load(str(tmp_path / "o" / "two_seg.nii.gz")).dataobj)
    assert set(np.unique(labels)) == {0, 2, 3}
    assert dice(labels == 3, right) > 0.7 and not ((labels == 3) & left).any()
    stats = json.loads((tmp_path / "o" / "two_stats.json").read_text())
    assert [len(o["keys"]) for o in stats["objects"]] == [1, 2]
    assert len(stats["objects"][1]["corrections"]) == 1

    prompts.write_text(json.dumps({"objects": [{"label": 2, "prompts": [{"box": [1, 1, 5, 5],
                                   "slice": 1}]}, {"label": 2, "prompts": []}]}))  # fmt: skip
    assert main(["segment", str(scan), "-o", str(tmp_path / "p"), "-q", "--prompts",
                 str(prompts)]) == 2  # fmt: skip
    assert "label 2 is used twice" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_a_3d_box_keeps_the_object_between_its_ends(tmp_path):
    scan, left, _ = _two_objects(tmp_path)
    view = PlaneView.from_affine(AFFINE, SHAPE, "axial")
    x0, y0, x1, y1 = _box(left, 5)
    corners = [voxel_to_world(AFFINE, view.to_voxel(s, y, x)) for s, x, y in
               ((4, x0, y0), (6, x1, y1))]  # fmt: skip
    box = medseg.Box(tuple(np.concatenate(corners)), space="mm")
    result = medseg.segment(scan, prompts=box)
    z = np.nonzero(result.labels.array.any(axis=(0, 1)))[0]
    assert z.min() >= 4 and z.max() <= 6 and 5 in z
    assert result.report()["objects"][0]["slice_range"] == [4, 6]


def test_an_empty_result_warns_with_what_to_try(tmp_path):
    from medseg.api.backends import PromptedBackend
    from medseg.api.planning import plan_objects

    class Nothing:  # a predictor that finds nothing
        def set_stack(self, stack):
            self.stack = stack

        def predict(self, index, box=None, points=None, point_labels=None):
            return np.zeros(self.stack.shape[1:], bool), 0.1

    scan, left, _ = _two_objects(tmp_path)
    volume = medseg.load_volume(scan)
    axis, plans = plan_objects([medseg.Object(medseg.Point((5, 5), slice=3), name="x")], volume,
                               None)  # fmt: skip
    backend = PromptedBackend("litemedsam", None, device="cpu", precision="fp32", trusted=False)
    backend.predictor = Nothing()
    labels, notes = backend.run(volume, axis, plans, window=None, propagate=True, progress=None)
    assert not labels.any()
    assert notes == ["x (label 1): the prompt on axial slice 3 gave an empty mask; draw a box "
                     "around the object (LiteMedSAM was trained with boxes) or add a positive "
                     "click inside it"]  # fmt: skip


def test_objects_are_checked_before_the_model_loads(tmp_path, monkeypatch):
    import medseg.models.litemedsam as lite

    monkeypatch.setattr(lite, "load_litemedsam", lambda *a, **k: pytest.fail("model loaded"))
    scan, left, _ = _two_objects(tmp_path)
    good = medseg.Box(_box(left, 5), slice=5)
    cases = [
        ([medseg.Object(good, label=1), medseg.Object(good, label=1)], "its own label"),
        ([medseg.Object(good, label=1), good], "not both"),
        ([good, medseg.Box((1, 1, 4, 4), slice=5)], "one box per slice"),
        ([medseg.Object(good, corrections=medseg.Point((3, 3), slice=99))], "outside 0..9"),
        ([medseg.Object(good, label=0)], "from 1 to 65535"),
        # millimetres of another scan: named as millimetres, not as a --slice the user never gave
        ([medseg.Box((-20, 10, -80, 25, 50, -40), space="mm")], "millimetre prompt lies outside"),
    ]
    for prompts, message in cases:
        with pytest.raises(InputError, match=message):
            medseg.segment(scan, prompts=prompts, output=tmp_path / "out")
    assert not (tmp_path / "out").exists()
