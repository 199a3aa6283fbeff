"""The README's "Python API" example runs as written (on a generated ``scan.nii.gz``)."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
from testkit import ROOT, ellipsoid_volume


def _example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "no python example under '## Python API'"
    return blocks[0]


def test_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    image, mask = ellipsoid_volume((40, 40, 16), center=(20, 20, 9), radii=(9, 7, 5))
    nib.save(nib.Nifti1Image(image, np.diag([1.0, 1.0, 2.0, 1.0])), str(tmp_path / "scan.nii.gz"))
    monkeypatch.chdir(tmp_path)
    exec(compile(_example(), "README.md", "exec"), {})  # noqa: S102 - our own README

    printed = capsys.readouterr().out
    names = ["scan_seg.nii.gz", "scan_stats.json", "scan_preview.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(names)
    assert sorted(p.name for p in (tmp_path / "out_many").iterdir()) == sorted(names)
    assert str(names) in printed and "(40, 40, 16) (4, 4) lesion" in printed
    stats = json.loads((tmp_path / "out" / "scan_stats.json").read_text())
    (entry,) = stats["labels"]
    assert entry["volume_ml"] > 0.5 * mask.sum() * 2 / 1000  # the object, not a speck
    labels = np.asarray(nib.load(str(tmp_path / "out_many" / "scan_seg.nii.gz")).dataobj)
    assert set(np.unique(labels)) == {0, 2}


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split(title, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


def test_readme_prompts_file_example_is_valid():
    from medseg.api.prompts import objects_from_json

    section = _readme_section("### Prompts files")
    (block,) = re.findall(r"```json\n(.*?)```", section, flags=re.S)
    objects = objects_from_json(json.loads(block))
    assert [(o.label, o.name, len(o.prompts), len(o.corrections)) for o in objects] == [
        (1, "aorta", 2, 2), (2, "T12", 1, 0)
    ]  # fmt: skip


def test_readme_millimetre_example_runs_on_the_mni_template(tmp_path, mni_path):
    """The README's `--box-mm -60,-80,10,60,40,10` (leading minus) on the MNI T1 (RAS mm)."""
    from medseg.cli.main import main

    line = next(
        x
        for x in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
        if "--box-mm -" in x
    )
    argv = line.split("#")[0].split()[1:]  # drop "medseg"
    assert argv[:4] == ["segment", "scan.nii.gz", "-o", "out/"], line
    argv[1], argv[3] = str(mni_path), str(tmp_path / "out")
    assert main([*argv, "--no-propagate", "-q"]) == 0
    (seg,) = (tmp_path / "out").glob("*_seg.nii.gz")
    labels = np.asarray(nib.load(str(seg)).dataobj)
    assert labels.any(axis=(0, 1)).sum() == 1 and labels.sum() > 1000
