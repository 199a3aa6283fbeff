"""The public Python API: the one service layer under the CLI, the viewer and the demo.

``import medseg`` exposes these names lazily (no torch until a model is used)::

    import medseg

    result = medseg.segment("scan.nii.gz", prompts=[medseg.Box((23, 20, 173, 210), slice=94)])
    result.save("out/")                      # scan_seg.nii.gz, scan_stats.json, scan_preview.png
    print(result.volumes_ml)                 # {1: 1749.2}

    segmenter = medseg.Segmenter("runs/unet/best.ckpt")     # automatic; loaded once
    for path in sorted(Path("cases").glob("*.nii.gz")):
        segmenter.segment(path, output="out/")

- :func:`segment` / :class:`Segmenter` -> :class:`Segmentation` (label map on exactly the input
  grid, statistics, warnings, timings, ``.save(folder)``);
- :func:`restore` / :class:`Restorer` -> :class:`Restoration`;
- :class:`Box`, :class:`Point` prompts (display pixels or RAS mm), :class:`Object` (several
  key slices, corrections, a label), :func:`read_prompts` / :func:`read_objects` (JSON);
- :func:`plan_outputs`, :func:`write_outputs`: the pre-flight check and the all-or-nothing writer
  every saved file goes through.

Errors are :class:`~medseg.errors.InputError` (exit 2 in the CLI), :class:`OutputError` (3) and
:class:`ModelError` (4), each with a ``code`` and a one-line ``message``.
"""

from medseg.api.outputs import case_name, plan_outputs, write_outputs
from medseg.api.prompts import Box, Object, Point, read_objects, read_prompts
from medseg.api.restorer import Restorer, restore
from medseg.api.results import Restoration, Segmentation
from medseg.api.segmenter import Segmenter, segment

__all__ = [
    "Box",
    "Object",
    "Point",
    "Restoration",
    "Restorer",
    "Segmentation",
    "Segmenter",
    "case_name",
    "plan_outputs",
    "read_objects",
    "read_prompts",
    "restore",
    "segment",
    "write_outputs",
]
