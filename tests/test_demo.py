"""``medseg demo`` (the README's main job) on the real MNI152 template with the shipped weights.

``--quick`` propagates through the 21 axial slices around the prompted one (the full demo takes
minutes on a 2-core CPU); everything else is the real path: nilearn's template, the box from
nilearn's brain mask, LiteMedSAM, the three outputs and the printed Dice.
"""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medseg.cli.demo import QUICK_HALF
from medseg.cli.main import main


@pytest.mark.slow
def test_demo_quick_writes_three_outputs_and_prints_dice(tmp_path, capsys, mni_path):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--overwrite", "--quick", "--quiet"]) == 0
    printed = capsys.readouterr().out

    src = nib.load(str(mni_path))
    seg = nib.load(str(out / "mni152_t1_seg.nii.gz"))
    assert seg.shape == src.shape
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-5)
    labels = np.asarray(seg.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1}

    # only the quick slab (axial = voxel z on this RAS grid) is segmented
    z = np.nonzero(labels.any(axis=(0, 1)))[0]
    key = src.shape[2] // 2
    assert z.min() >= key - QUICK_HALF and z.max() <= key + QUICK_HALF

    stats = json.loads((out / "mni152_t1_stats.json").read_text(encoding="utf-8"))
    (entry,) = stats["labels"]
    assert entry["name"] == "brain" and entry["voxels"] == int(labels.sum())
    assert stats["input"] == str(mni_path) and stats["grid"]["shape"] == list(src.shape)
    preview = Image.open(out / "mni152_t1_preview.png")
    assert preview.mode == "RGB" and min(preview.size) > 64

    match = re.search(r"Dice vs nilearn's MNI152 brain mask \(axial slices (\d+)-(\d+)\): "
                      r"([0-9.]+) \((\d+) mL segmented", printed)  # fmt: skip
    assert match, printed
    assert (int(match[1]), int(match[2])) == (key - QUICK_HALF, key + QUICK_HALF)
    # measured 0.996 on these slices (0.956 over the whole volume); 0.95 leaves room for
    # bf16/CPU differences, not for a wrong grid, prompt or preprocessing
    assert float(match[3]) >= 0.95, printed
    assert int(match[4]) == round(entry["volume_ml"])

    # a second run without --overwrite refuses and keeps the outputs
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["demo", "-o", str(out), "--quick", "--quiet"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
