"""Automatic (prompt-free) segmentation with a ``medseg fit`` checkpoint, nnU-Net style.

:meth:`AutomaticSegmenter.segment` for one volume:

1. the input ``(C, X, Y, Z)`` goes through the *training* preprocessing
   (:func:`medseg.transforms.preprocess.inference_transforms` without its file loader): RAS,
   target spacing, intensity normalisation -> ``(C, X', Y', Z')`` on the model grid;
2. logits ``(K, X', Y', Z')`` by Gaussian-weighted sliding windows (MONAI
   ``sliding_window_inference``) under bf16 autocast on CUDA (fp32 on CPU by default), with
   optional mirror test-time augmentation per window (all flips of the spatial axes: 8 passes
   in 3-D, 4 in 2-D). A 2-D net runs slice by slice across ``preprocessing["slice_axis"]``;
3. argmax on the model grid, then that single label channel goes back onto the input grid with
   ``Invertd`` (nearest): no per-class float copy at the input resolution;
4. optionally the largest connected component per label, and the softmax probabilities mapped
   back with linear interpolation.

**Window size.** ``roi="auto"`` starts from the trained patch and grows it (in steps of the
net's ``size_divisor``, keeping the patch's proportions) towards the whole image while it holds
at most ``max_roi_voxels`` (default 8x the patch). Fewer, larger windows compute no overlap twice,
which is the main CPU win (PERF.md §4); memory grows linearly with the window. Growing is only
output-preserving for nets whose layers do not normalise over the window: a net with instance or
group norm (nnU-Net, MONAI's UNet and the WAU configs) computes its statistics per window, so a
larger window changes its output (measured: per-class Dice 0.33 against the patch-sized run for
a random-init instance-norm UNet), and ``"auto"`` keeps such nets at the patch. ``roi="patch"``
is nnU-Net's choice; a list of ints sets it explicitly (also for instance-norm nets, at your
risk).
A net whose size divisor is unknown (no ``size_divisor`` attribute; for MONAI's ``UNet`` it is
the product of its strides) also stays at the patch. On CPU, 3-D nets run on channels-last
tensors (oneDNN's fast layout; the same arithmetic), falling back to contiguous ones for a net
whose code needs them.

**Memory** (float32, ``V'`` voxels on the model grid, ``V`` on the input grid, ``K`` classes):
stitched logits ``4 K V'`` bytes plus the network's activations for ``sw_batch_size`` windows;
the label output ``V`` bytes (uint8). ``probabilities=True`` adds ``4 K V'`` for the softmax and
``4 K V`` (plus one resampling temporary of the same size) for the copy on the input grid.

Before any of this, :meth:`AutomaticSegmenter.memory_need` (from the header, before the file is
decompressed) and the window size and batch (:func:`medseg.inference.windows.check_windows`)
are checked against the memory limit (:mod:`medseg.inference.memory`); running out of memory
during inference anyway is one ``not_enough_memory`` error, not a traceback.

**Trust.** Checkpoints are Lightning pickles whose hyper-parameters name the network class that
is imported and called to rebuild it: load only checkpoints you trust. They are unpickled with
``weights_only=True``; one holding arbitrary pickled objects is refused unless ``trusted=True``.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.errors import InputError
from medseg.inference.checkpoints import checkpoint_kind, load_segmentation_checkpoint
from medseg.inference.device import resolve_device, resolve_precision
from medseg.inference.memory import allocation_errors, automatic_need, check_memory, header_guard
from medseg.inference.postprocess import keep_largest_component
from medseg.inference.windows import (
    check_windows,
    choose_roi,
    count_windows,
    has_window_statistics,
    size_divisor,
)
from medseg.io import Volume, VolumeHeader, load_volume

__all__ = [
    "AutomaticSegmenter",
    "SegmentationOutput",
    "checkpoint_kind",
    "choose_roi",
    "load_segmentation_checkpoint",
]

ROI_GROWTH = 8
MEMORY_FIX = "crop or downsample the image first"
ALLOCATION_FIX = "lower --batch-size or --roi, or crop the image"


@dataclass
class SegmentationOutput:
    """What :meth:`AutomaticSegmenter.segment` returns.

    Attributes:
        labels: uint8/uint16 ``(X, Y, Z)`` label map on exactly the input's grid (affine, forms).
        probabilities: float32 ``(K, X, Y, Z)`` softmax on the input grid, or None.
        info: JSON-ready run details (device, precision, roi, windows, tta, seconds, ...).
    """

    labels: Volume
    probabilities: Volume | None = None
    info: dict[str, Any] = field(default_factory=dict)


class AutomaticSegmenter:
    """Predictor for a trained segmentation net (see the module docstring for the pipeline).

    Args:
        net: ``(B, C, *spatial)`` -> logits ``(B, K, *spatial)`` (a deep-supervision list is
            reduced to its first entry); put in eval mode and moved to ``device``.
        preprocessing: the dict of :mod:`medseg.transforms.preprocess` the net was trained with.
        device: ``"auto"`` | ``"cpu"`` | ``"cuda[:N]"``.
        precision: ``"auto"`` (bf16 autocast on CUDA, as nnU-Net does; **fp32 on CPU**, so the
            labels equal the fp32 reference) | ``"bf16"`` (on AMX/AVX512-BF16 CPUs up to 2-3x
            faster, but it flips voxels whose top two logits nearly tie; see the README's
            sliding-window table) | ``"fp32"``.
        overlap: window overlap fraction in ``[0, 1)`` (0.5 = nnU-Net).
        sw_batch_size: windows per forward pass; default 2 in 3-D (PERF.md §4), 8 for 2-D slices.
        roi: ``"auto"`` | ``"patch"`` | explicit window size (``len == spatial_dims``).
        max_roi_voxels: budget of ``roi="auto"`` (default ``ROI_GROWTH`` x the patch voxels).
        tta: mirror test-time augmentation.
        largest_component: False, True (every foreground label) or the labels to clean.
        progress: a tqdm bar over the windows (MONAI's).
    """

    def __init__(
        self,
        net: nn.Module,
        preprocessing: Mapping[str, Any],
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        overlap: float = 0.5,
        sw_batch_size: int | None = None,
        roi: str | Sequence[int] = "auto",
        max_roi_voxels: int | None = None,
        tta: bool = False,
        largest_component: bool | Sequence[int] = False,
        progress: bool = False,
    ) -> None:
        from medseg.transforms.io import LoadVolumed
        from medseg.transforms.preprocess import inference_transforms

        if not 0.0 <= overlap < 1.0:
            raise InputError("bad_argument", f"overlap must be in [0, 1), got {overlap}")
        if sw_batch_size is not None and sw_batch_size < 1:
            raise InputError("bad_argument", f"batch size must be >= 1, got {sw_batch_size}")
        self.preprocessing = dict(preprocessing)
        self.spatial_dims = int(self.preprocessing["spatial_dims"])
        self.patch = [int(p) for p in self.preprocessing["patch_size"]]
        if isinstance(roi, str) and roi not in ("auto", "patch"):
            raise InputError("bad_argument", f"roi must be 'auto', 'patch' or sizes, got {roi!r}")
        if not isinstance(roi, str) and len(roi) != self.spatial_dims:
            raise InputError(
                "bad_argument", f"roi needs {self.spatial_dims} sizes for this model, got {roi}"
            )
        self.device = resolve_device(device)
        # CPU "auto" stays fp32: bf16 changed labels of near-tied voxels in bench/sliding_window
        cpu_auto = precision == "auto" and self.device.type == "cpu"
        self.precision = "fp32" if cpu_auto else resolve_precision(precision, self.device)
        self.net = net.eval().to(self.device)
        # a net whose size divisor is unknown runs at the trained patch, unchanged
        divisor = size_divisor(net)
        self.divisor = divisor or 1
        self.fixed_roi = divisor is None
        # oneDNN's 3-D convolutions are 1.2-1.6x faster on channels-last tensors (same maths);
        # a net whose code needs contiguous tensors falls back at its first window
        self.channels_last = self.spatial_dims == 3 and self.device.type == "cpu"
        self._converted = False
        self.window_dependent = has_window_statistics(net)
        self.overlap = float(overlap)
        self.sw_batch_size = sw_batch_size or (2 if self.spatial_dims == 3 else 8)
        self.roi = roi
        self.max_roi_voxels = max_roi_voxels or ROI_GROWTH * math.prod(self.patch)
        self.tta = tta
        self.largest_component = largest_component
        self.progress = progress
        full = inference_transforms(self.preprocessing)
        steps = [t for t in full.transforms if not isinstance(t, LoadVolumed)]
        self._transform = type(full)(steps)

    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike[str], *, trusted: bool = False, **kwargs: Any
    ) -> AutomaticSegmenter:
        """Build from a ``medseg fit`` checkpoint (``kwargs`` as in the constructor)."""
        device = resolve_device(kwargs.pop("device", "auto"))
        net, preprocessing = load_segmentation_checkpoint(path, device=device, trusted=trusted)
        return cls(net, preprocessing, device=device, **kwargs)

    @property
    def label_names(self) -> dict[int, str]:
        """Foreground label value -> name, from the checkpoint's preprocessing."""
        labels = self.preprocessing["labels"]
        return {int(k): str(v) for k, v in labels.items() if int(k) != 0}

    @property
    def num_channels(self) -> int:
        return len(self.preprocessing["channel_names"])

    # public API --------------------------------------------------------------------------------
    def segment(
        self, volume: str | os.PathLike[str] | Volume, *, probabilities: bool = False
    ) -> SegmentationOutput:
        """Segment one volume; ``volume`` is a path (read with ``volume_index="all"``) or a
        :class:`Volume` ``(X, Y, Z)`` / ``(C, X, Y, Z)`` with ``C`` = the model's channels.

        Raises:
            InputError: unreadable input or the wrong number of channels.
        """
        from medseg.transforms.io import volume_to_metatensor

        started = time.perf_counter()
        if isinstance(volume, Volume):
            vol = volume
            need = self.memory_need(VolumeHeader.of(vol), probabilities=probabilities, loaded=True)
            check_memory(need, what="automatic segmentation", fix=self._fix(probabilities),
                         path=vol.meta.get("path"))  # fmt: skip
        else:
            guard = self.memory_guard(probabilities=probabilities)
            vol = load_volume(volume, volume_index="all", on_header=guard)
        path = str(vol.meta.get("path", "" if isinstance(volume, Volume) else volume))
        if vol.num_channels != self.num_channels:
            names = ", ".join(self.preprocessing["channel_names"])
            raise InputError(
                "channels_mismatch",
                f"the model expects {self.num_channels} channel(s) ({names}); the input has "
                f"{vol.num_channels} (choose one volume of a 4-D file with --volume N)",
                path=path or None,
            )
        data = self._transform({"image": volume_to_metatensor(vol.array, vol.affine, path)})
        image = data["image"]  # (C, X', Y', Z') on the model grid
        with torch.inference_mode(), allocation_errors(ALLOCATION_FIX, path=path):
            logits, info = self.predict_logits(image.as_tensor()[None].to(self.device))
            label_map = logits.argmax(1).to(torch.float32).cpu()  # (1, X', Y', Z')
            probs = torch.softmax(logits, 1)[0].cpu() if probabilities else None
        del logits
        with allocation_errors(MEMORY_FIX, path=path):
            labels = self._invert(data, label_map, vol, nearest=True)[0].round().numpy()
        labels = labels.astype(np.uint8 if len(self.preprocessing["labels"]) <= 256 else np.uint16)
        if self.largest_component:
            which = None if self.largest_component is True else list(self.largest_component)
            labels = keep_largest_component(labels, which)
        prob_vol = None
        if probs is not None:
            with allocation_errors(self._fix(True), path=path):
                back = self._invert(data, probs, vol, nearest=False).numpy().astype(np.float32)
            prob_vol = vol.with_array(np.clip(back, 0.0, 1.0))
        info.update(
            model_grid=list(image.shape[1:]),
            largest_component=self.largest_component,
            seconds=round(time.perf_counter() - started, 3),
        )
        return SegmentationOutput(vol.with_array(labels), prob_vol, info)

    def predict_logits(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """``image`` ``(1, C, X', Y', Z')`` on the model grid -> float32 logits
        ``(1, K, X', Y', Z')`` and a dict describing the run. Call under ``inference_mode``."""
        if image.ndim != 5:
            raise ValueError(f"expected (1, C, X, Y, Z), got {tuple(image.shape)}")
        if self.spatial_dims == 3:
            roi = self._roi(image.shape[2:])
            self._check_windows(image.shape[2:], roi, image.shape[0])
            return self._sliding(image, roi), self._info(image.shape[2:], roi, image.shape[0])
        axis = int(self.preprocessing.get("slice_axis", 2)) + 2
        moved = image.movedim(axis, 2)  # (1, C, S, P, Q)
        s, p, q = moved.shape[2:]
        slices = moved[0].transpose(0, 1)  # (S, C, P, Q)
        roi = self._roi((p, q))
        self._check_windows((p, q), roi, s)
        logits = self._sliding(slices, roi)  # (S, K, P, Q)
        logits = logits.transpose(0, 1)[None].movedim(2, axis)  # (1, K, X', Y', Z')
        return logits, self._info((p, q), roi, s)

    def memory_need(
        self, header: VolumeHeader, *, probabilities: bool = False, loaded: bool = False
    ) -> int:
        """Bytes :meth:`segment` needs for a volume with this header apart from its windows
        (:func:`medseg.inference.memory.automatic_need` on this checkpoint's spacing and
        classes); ``loaded``: the volume is already in memory."""
        return automatic_need(
            header,
            target_spacing=self.preprocessing["target_spacing"],
            classes=len(self.preprocessing["labels"]),
            probabilities=probabilities,
            loaded=loaded,
        )

    def memory_guard(self, *, probabilities: bool = False) -> Callable[[VolumeHeader], None]:
        """``load_volume(..., on_header=...)`` callback refusing (``not_enough_memory``) a volume
        whose :meth:`memory_need` exceeds the limit, before it is decompressed."""
        return header_guard(
            lambda h: self.memory_need(h, probabilities=probabilities),
            fix=self._fix(probabilities),
            what="automatic segmentation",
        )

    # helpers -----------------------------------------------------------------------------------
    @staticmethod
    def _fix(probabilities: bool) -> str:
        return MEMORY_FIX + (" or drop --save-probabilities" if probabilities else "")

    def _check_windows(self, extent: Sequence[int], roi: Sequence[int], images: int) -> None:
        """Refuse an explicit ``roi`` larger than the image (rounded up to the size divisor, or
        the patch) and a window batch that cannot fit, before MONAI allocates anything."""
        d = self.divisor
        cap = [max(d * math.ceil(int(e) / d), d * math.ceil(int(p) / d))
               for e, p in zip(extent, self.patch, strict=True)]  # fmt: skip
        check_windows(
            extent,
            roi,
            self.sw_batch_size,
            windows=images * count_windows(extent, roi, self.overlap),
            explicit=not isinstance(self.roi, str),
            cap=cap,
            grid="the image on the model grid",
        )

    def _roi(self, extent: Sequence[int]) -> list[int]:
        if not isinstance(self.roi, str):
            return [int(r) for r in self.roi]
        grow = self.roi == "auto" and not (self.window_dependent or self.fixed_roi)
        budget = self.max_roi_voxels if grow else math.prod(self.patch)
        return choose_roi(extent, self.patch, self.divisor, budget)

    def _sliding(self, x: torch.Tensor, roi: Sequence[int]) -> torch.Tensor:
        from monai.inferers import sliding_window_inference

        out = sliding_window_inference(
            x,
            list(roi),
            self.sw_batch_size,
            self._window,
            overlap=self.overlap,
            mode="gaussian",
            sw_device=self.device,
            device=self.device,
            progress=self.progress,
        )
        return out.as_tensor() if hasattr(out, "as_tensor") else out  # type: ignore[union-attr]

    def _window(self, x: torch.Tensor) -> torch.Tensor:
        """Window batch ``(B, C, *roi)`` -> float32 logits ``(B, K, *roi)`` (mirror-averaged)."""
        out = self._forward(x)
        if self.tta:
            axes = range(2, x.ndim)
            flips = [c for r in range(1, x.ndim - 1) for c in itertools.combinations(axes, r)]
            for dims in flips:
                out += torch.flip(self._forward(torch.flip(x, dims)), dims)
            out /= len(flips) + 1
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        bf16 = self.precision == "bf16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            out = self._net_call(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        return out.float().contiguous()

    def _net_call(self, x: torch.Tensor) -> Any:
        if self.channels_last:
            try:
                if not self._converted:
                    self.net.to(memory_format=torch.channels_last_3d)
                    self._converted = True
                return self.net(x.contiguous(memory_format=torch.channels_last_3d))
            except RuntimeError:  # e.g. a .view() on a channels-last tensor: stay contiguous
                self.channels_last = False
                self.net.to(memory_format=torch.contiguous_format)
        return self.net(x)

    def _invert(self, data: dict, pred: torch.Tensor, vol: Volume, *, nearest: bool):
        """``pred`` ``(K, X', Y', Z')`` on the model grid -> ``(K, X, Y, Z)`` on ``vol``'s grid."""
        from monai.data import MetaTensor
        from monai.transforms import Invertd

        image = data["image"]  # its recorded operations drive the inverse
        item = {"image": image, "pred": MetaTensor(pred, meta=dict(image.meta))}
        out = Invertd("pred", self._transform, orig_keys="image", nearest_interp=nearest)(item)
        back = out["pred"]
        if tuple(back.shape[1:]) != vol.spatial_shape or not np.allclose(
            back.affine.numpy(), vol.affine, atol=1e-4
        ):
            raise RuntimeError(  # a broken inverse must never write a shifted label map
                f"inverse preprocessing gave grid {tuple(back.shape[1:])}, expected "
                f"{vol.spatial_shape} with the input affine"
            )
        return back.as_tensor()

    def _info(self, extent: Sequence[int], roi: Sequence[int], batch: int) -> dict[str, Any]:
        return {
            "device": str(self.device),
            "precision": self.precision,
            "roi": [int(r) for r in roi],
            "roi_rule": self.roi if isinstance(self.roi, str) else "explicit",
            "window_dependent_norm": self.window_dependent,
            "windows": batch * count_windows(extent, roi, self.overlap),
            "overlap": self.overlap,
            "sw_batch_size": self.sw_batch_size,
            "tta": self.tta,
        }
