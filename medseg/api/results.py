"""What the API returns: :class:`Segmentation` and :class:`Restoration`, each with ``.save``.

Both hold their output on a known grid (a segmentation on exactly the input's grid; a
restoration on the input grid or, after super-resolution, a finer grid over the same physical
box) plus the facts a report needs, and write their files all-or-nothing through
:func:`medseg.api.outputs.write_outputs`: either every file is written, or none is and every
previous file is left as it was. Nothing is written over an input.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.io.volume import Volume

from . import exports
from .exports import FORMATS
from .outputs import VOLUME_SUFFIXES, case_name, plan_outputs, write_outputs

__all__ = ["FORMATS", "Restoration", "Segmentation"]
PathLike = str | os.PathLike[str]


@dataclass
class Segmentation:
    """A label map on exactly the input's grid, with its statistics and provenance.

    Attributes:
        labels: label ``Volume`` ``(X, Y, Z)`` uint8 (uint16 above 255) with the input's affine
            and NIfTI forms.
        image: the input ``Volume`` (``(X, Y, Z)``, or ``(C, X, Y, Z)`` in automatic mode).
        label_names: label value -> name.
        statistics: per label ``{label, name, voxels, volume_ml, bbox_voxel, bbox_mm}`` under
            ``"labels"`` and ``voxel_volume_ml`` (:func:`medseg.inference.stats.label_statistics`).
        model: what segmented (``litemedsam``, ``litemedsam:<weights>``,
            ``segmentation:<ckpt>``, ``db_sam:<ckpt>``, ``sam2_sgp:<ckpt>``).
        prompt: the prompt in display pixels (``inference.prompted.Prompt``), None otherwise.
        axis, window: plane and ``(level, width)`` of the preview (window None: percentiles).
        probabilities: float32 softmax ``(X, Y, Z, K)`` Volume on the input grid, if asked.
        details: further report fields (``inference``, ``channel_names``, ``support``).
        timings: seconds per stage (``seconds`` is the whole call).
        source: the input path, when the input was a file or folder.
        paths: the files written by the last :meth:`save`.
    """

    labels: Volume
    image: Volume
    label_names: dict[int, str]
    statistics: dict[str, Any]
    model: str
    prompt: Any = None
    axis: str = "axial"
    window: tuple[float, float] | None = None
    probabilities: Volume | None = None
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    source: str | None = None
    paths: list[Path] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """Warnings about the input (qform/sform disagreement, NaN replaced, ...)."""
        return list(self.image.meta.get("warnings", []))

    @property
    def volumes_ml(self) -> dict[int, float]:
        """Volume in mL per label present."""
        return {e["label"]: e["volume_ml"] for e in self.statistics["labels"]}

    def file_names(self, name: str | None = None, formats: Sequence[str] = ("nifti",)) -> list[str]:
        """The files :meth:`save` writes, for output stem ``name`` (default: the input's)."""
        stem = name or default_stem(self.source)
        return segmentation_files(stem, self.probabilities is not None, formats)

    def report(self, segmentation_file: str | None = None) -> dict[str, Any]:
        """The statistics JSON (``<name>_stats.json``) as a dict."""
        from medseg import __version__

        return {
            "medseg_version": __version__,
            "input": self.source,
            "segmentation": segmentation_file or self.file_names()[0],
            "model": self.model,
            **({"prompt": self.prompt.as_dict()} if self.prompt is not None else {}),
            "grid": {
                "shape": list(self.image.spatial_shape),
                "spacing_mm": [round(float(s), 6) for s in self.image.spacing],
                "orientation": "".join(self.image.axcodes),
            },
            "warnings": self.warnings,
            **self.statistics,
            **self.details,
            "seconds": self.timings.get("seconds"),
        }

    def save(
        self,
        folder: PathLike,
        *,
        name: str | None = None,
        formats: Sequence[str] = ("nifti",),
        overwrite: bool = False,
        protect: Iterable[PathLike] = (),
    ) -> list[Path]:
        """Write the segmentation in each of ``formats`` (:mod:`medseg.api.exports`: default
        ``<name>_seg.nii.gz``), ``<name>_stats.json``, ``<name>_preview.png`` (and
        ``<name>_probabilities.nii.gz``) into ``folder``, all-or-nothing; return the paths.

        Existing files are replaced only with ``overwrite``; the input and every path in
        ``protect`` never are (``InputError``). ``formats``: see :data:`FORMATS`; the DICOM ones
        need an input read from a DICOM series (``needs_dicom_source``).
        """
        from medseg.viz.preview import render_preview

        formats = check_formats(formats)
        exports.check_sources(formats, self.image)
        protect = [*([self.source] if self.source else []), *protect]
        names = self.file_names(name, formats)
        paths = plan_outputs(folder, names, overwrite=overwrite, protect=protect)
        n = len(formats)
        report = self.report(paths[0].name)
        report["files"] = dict(zip(formats, names, strict=False))
        png = render_preview(
            self.image.array, self.image.affine, self.labels.array, self.axis, window=self.window
        )
        infos = exports.labels_of(self.labels, self.label_names)
        files: dict[Path, Volume | bytes] = {
            path: exports.encode(fmt, self.labels, self.image, infos, model=self.model,
                                 automatic=self.prompt is None)
            for fmt, path in zip(formats, paths, strict=False)
        }  # fmt: skip
        files[paths[n]] = (json.dumps(report, indent=2) + "\n").encode("utf-8")
        files[paths[n + 1]] = png
        if self.probabilities is not None:
            files[paths[n + 2]] = self.probabilities
        labels = [p for f, p in zip(formats, paths, strict=False) if f == "nifti"]
        self.paths = write_outputs(files, overwrite=overwrite, protect=protect, labels=labels)
        return self.paths


@dataclass
class Restoration:
    """A restored volume in the input's units, and its report.

    Attributes:
        volume: the restored ``Volume``: the input grid (denoising) or a finer grid over the
            same physical box with the same direction (super-resolution).
        image: the input ``Volume``.
        details: report fields (``checkpoint``, ``inference``, ``downstream`` when asked).
        timings: seconds (``seconds`` is the whole call).
        source: the input path, when the input was a file or folder.
        paths: the files written by the last :meth:`save`.
    """

    volume: Volume
    image: Volume
    details: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    source: str | None = None
    paths: list[Path] = field(default_factory=list)

    def output_paths(self, output: PathLike, name: str | None = None) -> tuple[Path, Path]:
        """``(image, report)`` paths: ``output`` is a folder (``<name>_restored.nii.gz`` and
        ``<name>_restore.json`` in it) or a volume file name (the JSON goes next to it)."""
        return restore_paths(output, name or default_stem(self.source, "image"))

    def report(self, output_file: PathLike | None = None) -> dict[str, Any]:
        """The restoration JSON (``<name>_restore.json``) as a dict."""
        return {
            "input": self.source,
            "output": None if output_file is None else str(output_file),
            "checkpoint": self.details.get("checkpoint"),
            "input_shape": list(self.image.spatial_shape),
            "output_shape": list(self.volume.spatial_shape),
            "input_spacing": [float(s) for s in self.image.spacing],
            "output_spacing": [float(s) for s in self.volume.spacing],
            **{k: v for k, v in self.details.items() if k != "checkpoint"},
            "seconds": self.timings.get("seconds"),
        }

    def save(
        self,
        output: PathLike,
        *,
        name: str | None = None,
        formats: Sequence[str] = ("nifti",),
        overwrite: bool = False,
        protect: Iterable[PathLike] = (),
    ) -> list[Path]:
        """Write the restored volume and its JSON report all-or-nothing; return the paths.

        ``output``: a folder, or a volume file name (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``,
        ``.mhd``) whose ``<stem>_restore.json`` goes next to it. Never over an input.
        ``formats``: :data:`medseg.api.exports.IMAGE_FORMATS` only (a restored image is no
        segmentation; the others are refused with ``bad_argument``).
        """
        check_formats(formats, exports.IMAGE_FORMATS)
        protect = [*([self.source] if self.source else []), *protect]
        image_path, report_path = self.output_paths(output, name)
        plan_outputs(
            image_path.parent, [image_path.name, report_path.name],
            overwrite=overwrite, protect=protect,
        )  # fmt: skip
        report = (json.dumps(self.report(image_path), indent=2) + "\n").encode("utf-8")
        files: dict[Path, Volume | bytes] = {image_path: self.volume, report_path: report}
        self.paths = write_outputs(files, overwrite=overwrite, protect=protect)
        return self.paths


def segmentation_files(
    stem: str, probabilities: bool = False, formats: Sequence[str] = ("nifti",)
) -> list[str]:
    """File names of a saved :class:`Segmentation` with output stem ``stem``: one per format
    (in ``formats`` order), then the statistics, the preview (and the probabilities)."""
    files = [*exports.format_files(stem, formats), f"{stem}_stats.json", f"{stem}_preview.png"]
    return files + [f"{stem}_probabilities.nii.gz"] if probabilities else files


def default_stem(source: PathLike | None, fallback: str = "segmentation") -> str:
    """Output stem for an input: its name without the volume suffix, else ``fallback``."""
    return case_name(source) if source else fallback


def restore_paths(output: PathLike, name: str) -> tuple[Path, Path]:
    """See :meth:`Restoration.output_paths`."""
    out = Path(output)
    suffix = volume_suffix(out)
    if suffix is None:
        return out / f"{name}_restored.nii.gz", out / f"{name}_restore.json"
    stem = out.name[: -len(suffix)]
    folder = out.parent if str(out.parent) else Path(".")
    return folder / out.name, folder / f"{stem}_restore.json"


def volume_suffix(path: PathLike) -> str | None:
    """The volume suffix when ``path`` names a volume file, else None (a folder)."""
    lower = Path(path).name.lower()
    return next((s for s in VOLUME_SUFFIXES if lower.endswith(s)), None)


def check_formats(formats: str | Sequence[str], allowed: Sequence[str] = FORMATS) -> list[str]:
    """The formats as a list (``"nifti,x"`` or ``["nifti", "x"]``), refusing (``bad_argument``)
    one medseg does not write, or one not in ``allowed``
    (:func:`medseg.api.exports.parse_formats`)."""
    return exports.parse_formats(formats, allowed)
