"""Whole-volume restoration with a ``medseg fit`` restoration checkpoint (RAT, DISGAN, ...).

:meth:`Restorer.restore` for one volume:

1. the checkpoint's channel, reoriented to RAS (a permutation/flip of axes, exact);
2. the checkpoint's invertible intensity map (:mod:`medseg.transforms.intensity`) fitted on the
   whole input volume;
3. Gaussian-weighted sliding windows (MONAI ``sliding_window_inference``, ``mode="gaussian"``:
   overlapping windows are blended, never pasted over each other as DISGAN's released script
   does). A 2-D net runs on axial slices (across the RAS z axis), a batch of slices per call,
   with windows of at most ``roi`` pixels (default: the whole slice up to 512 x 512); a 3-D net
   on patches of the trained input size. RAT's region maps (``partitioner``) are computed per
   whole slice on the degraded slice upsampled to the output grid, and travel with the image
   through the windows as an extra channel;
4. intensities mapped back to the input's units, axes back to the input's orientation.

**Geometry.** Denoising/synthesis (scale 1): exactly the input grid. Super-resolution by ``s``:
every upsampled voxel axis gets ``s`` times the voxels and ``1/s`` the spacing, the same
direction, and an origin moved by ``(1/s - 1)/2`` of an old voxel along that axis, so the
field of view (voxel edges) covers exactly the same physical box. A 2-D net upsamples the two
in-plane RAS axes only; the slice axis keeps its voxels.

**Checkpoints** are read by :func:`medseg.inference.checkpoints.load_restoration_checkpoint`
(regular files only, zip CRCs and finite weights checked). **Trust.** As for segmentation
checkpoints: load only checkpoints you trust; a checkpoint holding arbitrary pickled objects
needs ``trusted=True``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from torch import nn

from medseg.errors import InputError
from medseg.inference.checkpoints import load_restoration_checkpoint
from medseg.inference.memory import allocation_errors, check_memory, header_guard, restoration_need
from medseg.inference.windows import check_windows, count_windows
from medseg.io import Volume, VolumeHeader
from medseg.models.device import resolve_device
from medseg.transforms.intensity import denormalise, fit_intensity, normalise

__all__ = [
    "RestorationOutput",
    "choose_partitioner",
    "Restorer",
    "super_resolved_affine",
]

MAX_SLICE_ROI = 512
MEMORY_FIX = "crop or downsample the image first"
ALLOCATION_FIX = "lower --batch-size or --roi, or crop the image"


@dataclass
class RestorationOutput:
    """``volume``: float32 restored image (input units) on the output grid; ``info``: details."""

    volume: Volume
    info: dict[str, Any] = field(default_factory=dict)


class Restorer:
    """Predictor for a trained restoration net (see the module docstring).

    Args:
        net: the restoration net (DISGAN: its generator), eval mode.
        restoration: the checkpoint's ``restoration`` dict (``spatial_dims``, ``scale``,
            ``intensity``, ``channel``, ``patch_size``, ``regions``).
        device: ``"auto"`` | ``"cpu"`` | ``"cuda[:N]"``.
        overlap: window overlap in ``[0, 1)``.
        roi: window size on the *input* grid (``len == spatial_dims``); default as above.
        sw_batch_size: windows (2-D: slices) per forward pass.
        partitioner: region partitioner with ``partition(image) -> ids`` for nets that take
            ``regions`` (RAT); None there means one region per slice (global attention).
    """

    def __init__(
        self,
        net: nn.Module,
        restoration: dict[str, Any],
        *,
        device: str | torch.device = "auto",
        overlap: float = 0.5,
        roi: Sequence[int] | None = None,
        sw_batch_size: int | None = None,
        partitioner: Any = None,
    ) -> None:
        if not 0.0 <= overlap < 1.0:
            raise InputError("bad_argument", f"overlap must be in [0, 1), got {overlap}")
        self.restoration = dict(restoration)
        self.dims = int(self.restoration["spatial_dims"])
        self.scale = int(self.restoration.get("scale", 1))
        if roi is not None and len(roi) != self.dims:
            raise InputError("bad_argument", f"roi needs {self.dims} sizes, got {list(roi)}")
        self.device = resolve_device(device)
        self.net = net.eval().to(self.device)
        self.overlap = overlap
        self.roi = None if roi is None else [int(r) for r in roi]
        self.sw_batch_size = sw_batch_size or (4 if self.dims == 2 else 1)
        self.partitioner = partitioner
        self.takes_regions = "regions" in _parameters(net.forward)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], *, device: str = "auto", trusted: bool = False, **kw
    ) -> Restorer:
        dev = resolve_device(device)
        net, restoration = load_restoration_checkpoint(path, device=dev, trusted=trusted)
        return cls(net, restoration, device=dev, **kw)

    def restore(self, volume: Volume) -> RestorationOutput:
        """Restore ``volume`` (``(X, Y, Z)`` or ``(C, X, Y, Z)``); see the module docstring."""
        start = time.perf_counter()
        channel = int(self.restoration.get("channel", 0))
        if volume.array.ndim == 4 and not 0 <= channel < volume.array.shape[0]:
            raise InputError(
                "bad_channels",
                f"the model restores channel {channel}, the input has "
                f"{volume.array.shape[0]} channel(s)",
            )
        where = volume.meta.get("path")
        need = self.memory_need(VolumeHeader.of(volume), loaded=True)
        check_memory(need, what="restoration", fix=MEMORY_FIX, path=where)
        array = volume.array if volume.array.ndim == 3 else volume.array[channel]
        ornt = nib.orientations.io_orientation(volume.affine)
        ras = nib.orientations.apply_orientation(np.asarray(array, np.float32), ornt)
        x = torch.from_numpy(np.ascontiguousarray(ras))[None, None]  # (1, 1, X, Y, Z) RAS
        params = fit_intensity(x, self.restoration["intensity"])
        with torch.inference_mode(), allocation_errors(ALLOCATION_FIX, path=where):
            y = self._run(normalise(x, params).to(self.device)).cpu()
        out_ras = denormalise(y, params)[0, 0].numpy()
        back = nib.orientations.ornt_transform(np.array([[0, 1], [1, 1], [2, 1]]), ornt)
        restored = np.ascontiguousarray(nib.orientations.apply_orientation(out_ras, back))
        result = _on_grid(volume, restored.astype(np.float32), self._axis_factors(ornt))
        info = {
            "device": str(self.device),
            "scale": self.scale,
            "spatial_dims": self.dims,
            "intensity": self.restoration["intensity"].get("scheme"),
            "regions": None if not self.takes_regions else _describe(self.partitioner),
            "seconds": round(time.perf_counter() - start, 3),
        }
        return RestorationOutput(result, info)

    def memory_need(self, header: VolumeHeader, *, loaded: bool = False) -> int:
        """Bytes :meth:`restore` needs for a volume with this header apart from its windows
        (:func:`medseg.inference.memory.restoration_need`); ``loaded``: already in memory."""
        return restoration_need(header, upscale=self.upscale, loaded=loaded)

    def memory_guard(self) -> Callable[[VolumeHeader], None]:
        """``load_volume(..., on_header=...)`` callback refusing (``not_enough_memory``) a volume
        whose :meth:`memory_need` exceeds the limit, before it is decompressed."""
        return header_guard(self.memory_need, fix=MEMORY_FIX, what="restoration")

    @property
    def upscale(self) -> int:
        """Output voxels per input voxel (``scale**2`` for a 2-D net, ``scale**3`` in 3-D)."""
        return self.scale**self.dims

    # internals ---------------------------------------------------------------------------------
    def _check_windows(self, extent: Sequence[int], roi: Sequence[int], images: int) -> None:
        """Refuse an explicit ``roi`` larger than the image and a batch that cannot fit."""
        check_windows(
            extent,
            roi,
            self.sw_batch_size,
            windows=images * count_windows(extent, roi, self.overlap),
            explicit=self.roi is not None,
            upscale=self.upscale,
            grid="the image" if self.dims == 3 else "a slice",
        )

    def _axis_factors(self, ornt: np.ndarray) -> list[int]:
        """Upsampling factor of each *input* voxel axis (RAS x, y in 2-D; all in 3-D)."""
        factors = [1, 1, 1]
        for axis, (ras_axis, _) in enumerate(ornt.astype(int)):
            if self.dims == 3 or ras_axis < 2:
                factors[axis] = self.scale
        return factors

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """``(1, 1, X, Y, Z)`` normalised RAS -> restored ``(1, 1, sX, sY, sZ or Z)``."""
        if self.dims == 3:
            patch = [p // self.scale for p in self.restoration["patch_size"]]
            roi = self.roi or [min(r, n) for r, n in zip(patch, x.shape[2:], strict=True)]
            self._check_windows(x.shape[2:], roi, 1)  # an explicit roi is never clipped
            return sliding_window_inference(
                x, roi, self.sw_batch_size, self.net, overlap=self.overlap, mode="gaussian"
            )
        slices = x[0].permute(3, 0, 1, 2)  # (Z, 1, X, Y)
        roi = self.roi or [min(n, MAX_SLICE_ROI) for n in slices.shape[2:]]
        self._check_windows(slices.shape[2:], roi, len(slices))
        if self.takes_regions:
            regions = torch.stack([self._regions(s) for s in slices.cpu()]).to(x.device)
            slices = torch.cat([slices, regions.float()], dim=1)  # (Z, 2, X, Y)
        out = torch.cat(
            [
                sliding_window_inference(
                    slices[i : i + self.sw_batch_size],
                    roi,
                    self.sw_batch_size,
                    self._slice_net,
                    overlap=self.overlap,
                    mode="gaussian",
                )
                for i in range(0, len(slices), self.sw_batch_size)
            ]
        )  # (Z, 1, sX, sY)
        return out.permute(1, 2, 3, 0)[None]

    def _slice_net(self, window: torch.Tensor) -> torch.Tensor:
        if not self.takes_regions:
            return self.net(window)
        image, ids = window[:, :1], window[:, 1].round().long()
        if self.scale > 1:  # ids were sampled on the input grid: back to the output grid
            ids = ids.repeat_interleave(self.scale, 1).repeat_interleave(self.scale, 2)
        return self.net(image, ids)

    def _regions(self, lr_slice: torch.Tensor) -> torch.Tensor:
        """Region ids ``(1, X, Y)`` for one ``(1, X, Y)`` slice, on the input grid."""
        if self.partitioner is None:
            return torch.ones_like(lr_slice)
        up = lr_slice[None]
        if self.scale > 1:
            up = F.interpolate(up, scale_factor=self.scale, mode="bilinear")
        ids = np.asarray(self.partitioner.partition(up[0, 0].numpy().astype(np.float32)))
        ids = torch.as_tensor(ids, dtype=torch.float32)[:: self.scale, :: self.scale]
        return ids[None]


def choose_partitioner(choice: str, restoration: dict[str, Any], device: str = "auto") -> Any:
    """RAT's region partitioner for ``choice`` (``"auto"``, ``"sam"``, ``"kmeans"``, ``"none"``;
    ``"auto"`` = what the checkpoint was trained with: ``sam`` when its partitioner's name says
    so, else ``kmeans``); None for ``"none"`` (one region per slice)."""
    from medseg.inference.regions import make_partitioner

    if choice == "auto":
        trained = (restoration.get("regions") or {}).get("name", "")
        choice = "sam" if "sam" in str(trained).lower() else "kmeans"
    if choice == "none":
        return None
    return make_partitioner(choice, device=device) if choice == "sam" else make_partitioner(choice)


def super_resolved_affine(affine: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Affine of a grid with ``factors[i]`` times the voxels along voxel axis ``i`` covering the
    same physical box (voxel edges) with the same direction (module docstring)."""
    a = np.asarray(affine, dtype=np.float64)
    f = np.asarray(factors, dtype=np.float64)
    out = a.copy()
    out[:3, :3] = a[:3, :3] / f
    out[:3, 3] = a[:3, 3] + a[:3, :3] @ ((1.0 / f - 1.0) / 2.0)
    return out


def _on_grid(volume: Volume, array: np.ndarray, factors: Sequence[int]) -> Volume:
    if all(f == 1 for f in factors):
        return volume.with_array(array, restored=True)
    affine = super_resolved_affine(volume.affine, factors)
    codes = {"qform_code": volume.qform_code, "sform_code": volume.sform_code}
    return Volume(
        array=array,
        affine=affine,
        qform=None if volume.qform is None else affine.copy(),
        sform=None if volume.sform is None else affine.copy(),
        meta={**volume.meta, "restored": True, "super_resolution": list(factors)},
        **codes,
    )


def _parameters(fn: Any) -> Sequence[str]:
    import inspect

    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


def _describe(partitioner: Any) -> dict[str, Any] | None:
    if partitioner is None:
        return {"name": "single-region", "faithful": False}
    return {
        "name": str(getattr(partitioner, "name", type(partitioner).__name__)),
        "faithful": bool(getattr(partitioner, "faithful", False)),
    }
