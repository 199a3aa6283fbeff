"""DB-SAM and SAM2-SGP on slice stacks: loading, a box-prompt predictor, a support predictor.

Stacks are ``(S, H, W)`` uint8 display slices (see :mod:`medseg.inference.prompted`). Each
slice goes through the training frame of :mod:`medseg.transforms.prompts` (per-slice min-max to
[0, 1], longest side resized to the net's ``image_size``, padded bottom/right) and the logits
come back through the same geometry. Fine-tuned ``medseg fit`` checkpoints are read by
:func:`medseg.inference.checkpoints.load_promptable_checkpoint` (the only Lightning import).

- :class:`BoxPromptPredictor` (DB-SAM) has LiteMedSAM's ``set_stack / predict / propagate``
  protocol, so :func:`medseg.inference.prompted.segment_with_prompt` drives it unchanged:
  propagation prompts each next slice with the box of the previous mask (3 px margin at 256
  scale, as MedSAM) and stops when the mask vanishes.
- :class:`SupportPredictor` (SAM2-SGP) is prompt-free: :meth:`~SupportPredictor.set_support`
  encodes image/mask pairs; :meth:`~SupportPredictor.segment_stack` runs the slices in order
  with a bounded memory bank (3-D) or independently (``bank_size=0``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medseg.errors import InputError, ModelError
from medseg.models.device import resolve_device
from medseg.transforms.prompts import from_frame, to_frame

__all__ = [
    "BoxPromptPredictor",
    "SupportPredictor",
    "check_single_channel",
    "load_promptable_net",
]

MODELS = {"db_sam": "medseg.models.db_sam:DBSAM", "sam2_sgp": "medseg.models.sam2_sgp:SAM2SGP"}
PRESETS = {"db_sam": "db_sam_vit_b", "sam2_sgp": "sam2_sgp_hiera_s"}
MARGIN_256 = 3


def load_promptable_net(
    model: str,
    checkpoint: str | os.PathLike[str] | None,
    *,
    device: str | torch.device = "auto",
    trusted: bool = False,
) -> nn.Module:
    """A fine-tuned DB-SAM / SAM2-SGP in eval mode on ``device``.

    ``checkpoint``: a ``medseg fit`` ``.ckpt`` (``PromptableSegmentationTask``; its
    hyper-parameters rebuild the net, without reading the original SAM/SAM2 weights file) or a
    full state dict of the published preset (``.pth``, strict keys). Raises
    :class:`ModelError` (exit 4) with a one-line reason.
    """
    import importlib

    from medseg.models.weights import load_net_weights

    from .checkpoints import check_checkpoint_file, checkpoint_kind, load_promptable_checkpoint

    if model not in MODELS:
        raise InputError("bad_argument", f"--model must be one of {sorted(MODELS)}")
    if checkpoint is None:
        raise ModelError("checkpoint_missing", f"{model} needs --checkpoint (no shipped weights)")
    where = str(checkpoint)
    check_checkpoint_file(checkpoint)  # a FIFO or a device is refused before any open
    module, _, cls_name = MODELS[model].partition(":")
    package = importlib.import_module(module)
    dev = resolve_device(device)
    if checkpoint_kind(checkpoint) == "lightning":
        net = load_promptable_checkpoint(checkpoint, device=dev, trusted=trusted)
    else:
        net = getattr(package, PRESETS[model])()
        load_net_weights(net, checkpoint, what=model)
    if not isinstance(net, getattr(package, cls_name)):
        raise ModelError(
            "wrong_model", f"holds a {type(net).__name__}, not a {cls_name} (--model)", path=where
        )
    return net.to(dev).eval()


def check_single_channel(net: nn.Module) -> None:
    """:class:`ModelError` (exit 4) unless ``net`` takes one input channel: the predictors
    segment single-channel stacks (multi-channel fine-tunes are scored by ``medseg test``)."""
    n = int(getattr(net, "in_channels", 1))
    if n != 1:
        raise ModelError(
            "channels",
            f"this checkpoint's net takes {n} input channels, but `medseg segment` feeds "
            "SAM-family nets one channel: use a checkpoint fine-tuned on single-channel data "
            "(multi-channel runs such as db_sam_task01 are scored with `medseg test`)",
        )


class BoxPromptPredictor:
    """Box-prompted slices and box propagation with a box-promptable net (DB-SAM).

    Args:
        net: eval-mode net with ``image_size``, ``in_channels == 1`` and
            ``net(images, boxes) -> (logits, iou)``.
        device: where it runs.
    """

    def __init__(self, net: nn.Module, *, device: str | torch.device = "auto") -> None:
        if net.training:
            raise ValueError("net is in training mode: call .eval() after loading the weights")
        check_single_channel(net)
        self.device = resolve_device(device)
        self.net = net.to(self.device)
        self.size = int(net.image_size)
        self._stack: np.ndarray | None = None

    def set_stack(self, stack_u8: np.ndarray) -> None:
        """Use a new ``(S, H, W)`` uint8 stack."""
        stack = np.asarray(stack_u8)
        if stack.ndim != 3 or stack.dtype != np.uint8 or min(stack.shape) < 1:
            raise InputError("stack", f"expected (S, H, W) uint8, got {stack.shape} {stack.dtype}")
        self._stack = stack

    @property
    def stack(self) -> np.ndarray:
        if self._stack is None:
            raise RuntimeError("call set_stack() first")
        return self._stack

    def predict(self, slice_index: int, box=None, points=None, point_labels=None):
        """``(mask (H, W) bool, predicted IoU)`` for a box ``(x0, y0, x1, y1)`` in slice px."""
        if points is not None or box is None:
            raise InputError("bad_prompt", "DB-SAM takes a box prompt (--box), not points")
        if not 0 <= int(slice_index) < len(self.stack):
            raise InputError("slice", f"slice {slice_index} out of range")
        image = torch.from_numpy(self.stack[int(slice_index)]).float()[None, None]
        frame, resized = to_frame(image, self.size)
        scale = self.size / max(image.shape[-2:])
        b = torch.tensor([[float(c) * scale for c in box]], dtype=torch.float32)
        with torch.inference_mode():
            logits, iou = self.net(frame.to(self.device), b.to(self.device))
            mask = from_frame(logits, self.size, resized, image.shape[-2:])[0, 0] > 0
        return mask.cpu().numpy(), float(iou[0, 0])

    def propagate(
        self,
        key: int,
        box=None,
        points=None,
        point_labels=None,
        *,
        stop_at: tuple[int, int] | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> np.ndarray:
        """Key slice from the box, then each neighbour from the previous mask's box (with a
        3 px margin at 256 scale), up and down until the mask vanishes or ``stop_at``."""
        count = len(self.stack)
        lo, hi = (0, count - 1) if stop_at is None else (int(stop_at[0]), int(stop_at[1]))
        if not 0 <= lo <= key <= hi < count:
            raise InputError("stop_at", f"need 0 <= lo <= key <= hi < {count}")
        masks = np.zeros(self.stack.shape, dtype=bool)
        masks[key] = self.predict(key, box, points, point_labels)[0]
        done = 1
        if progress is not None:
            progress(done)
        margin = MARGIN_256 * max(self.stack.shape[1:]) / 256.0
        for step, limit in ((1, hi), (-1, lo)):
            previous, index = masks[key], key + step
            while (index - limit) * step <= 0 and previous.any():
                rows, cols = np.nonzero(previous)
                h, w = previous.shape
                nxt = (
                    max(0.0, cols.min() - margin),
                    max(0.0, rows.min() - margin),
                    min(w - 1.0, cols.max() + margin),
                    min(h - 1.0, rows.max() + margin),
                )
                masks[index] = self.predict(index, nxt)[0]
                previous, index, done = masks[index], index + step, done + 1
                if progress is not None:
                    progress(done)
        return masks


class SupportPredictor:
    """Prompt-free segmentation of slice stacks guided by support image/mask slices (SGP).

    Args:
        net: eval-mode ``SAM2SGP`` (``in_channels == 1``).
        device: where it runs.
        support_size: supports per slice (``k``); default the net's.
        bank_size: 3-D memory bank (0 = slices independently, the 2-D model).
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        device: str | torch.device = "auto",
        support_size: int | None = None,
        bank_size: int = 16,
    ) -> None:
        if net.training:
            raise ValueError("net is in training mode: call .eval() after loading the weights")
        check_single_channel(net)
        self.device = resolve_device(device)
        self.net = net.to(self.device)
        self.size = int(net.image_size)
        self.k, self.bank_size = support_size, bank_size
        self._support: Any = None

    def set_support(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> int:
        """Encode support slices ``(H_i, W_i)`` uint8 with masks ``(H_i, W_i)`` bool; returns
        how many were used (slices with an empty mask are skipped)."""
        frames, targets = [], []
        for image, mask in zip(images, masks, strict=True):
            if not np.any(mask):
                continue
            img = torch.from_numpy(np.asarray(image, np.float32))[None, None]
            frames.append(to_frame(img, self.size)[0])
            m = torch.from_numpy(np.asarray(mask, np.float32))[None, None]
            targets.append(to_frame(m, self.size, mode="nearest")[0])
        if not frames:
            raise InputError("support", "the support set holds no slice with the object")
        with torch.inference_mode():
            feats = self.net.encode_images(torch.cat(frames).to(self.device))
            self._support = self.net.support_memory(feats, torch.cat(targets).to(self.device))
        return len(frames)

    def segment_stack(
        self, stack_u8: np.ndarray, progress: Callable[[int], object] | None = None
    ) -> np.ndarray:
        """``(S, H, W)`` uint8 -> ``(S, H, W)`` bool masks, slices in order."""
        if self._support is None:
            raise RuntimeError("call set_support() first")
        stack = torch.from_numpy(np.asarray(stack_u8, np.float32))[:, None]
        frames, resized = to_frame(stack, self.size)
        with torch.inference_mode():
            out = self.net.segment_stack(
                frames.to(self.device),
                self._support,
                bank_size=self.bank_size,
                k=self.k,
                progress=progress,
            )
            masks = from_frame(out["logits"], self.size, resized, stack.shape[-2:]) > 0
        return masks[:, 0].cpu().numpy()


_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_LABEL_TAGS = ("_label", "_seg", "_mask")


def support_pairs(folder: str | os.PathLike[str]) -> list[tuple[Path, Path]]:
    """Image/label file pairs of a support folder: ``images/`` + ``labels/`` (or MSD's
    ``imagesTr/`` + ``labelsTr/``) with equal file names, or a flat folder of ``NAME.nii.gz`` +
    ``NAME_label.nii.gz`` (``_seg``/``_mask`` too). Raises :class:`InputError` when none."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError("support", "support folder not found", path=str(root))
    pairs = []
    for img_dir, lab_dir in (("images", "labels"), ("imagesTr", "labelsTr")):
        if (root / img_dir).is_dir() and (root / lab_dir).is_dir():
            for image in sorted((root / img_dir).iterdir()):
                label = root / lab_dir / image.name
                if _is_volume(image) and label.is_file():
                    pairs.append((image, label))
    if not pairs:
        files = {p.name: p for p in root.iterdir() if _is_volume(p)}
        for name, image in sorted(files.items()):
            stem, ext = _split(name)
            if stem.endswith(_LABEL_TAGS):
                continue
            for tag in _LABEL_TAGS:
                if f"{stem}{tag}{ext}" in files:
                    pairs.append((image, files[f"{stem}{tag}{ext}"]))
                    break
    if not pairs:
        raise InputError(
            "support",
            "no image/label pairs (images/ + labels/, or NAME.nii.gz + NAME_label.nii.gz)",
            path=str(root),
        )
    return pairs


def load_support_slices(
    folder: str | os.PathLike[str],
    axis: str,
    *,
    label: int = 1,
    window: tuple[float, float] | None = None,
    per_volume: int = 8,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Display slices (uint8, like the query) and masks ``label`` of every support pair:
    up to ``per_volume`` evenly spaced slices holding the object, per volume."""
    from medseg.io import load_volume
    from medseg.transforms.planes import PlaneView

    from .litemedsam import to_uint8

    images, masks = [], []
    for image_path, label_path in support_pairs(folder):
        vol = load_volume(image_path)
        lab = load_volume(label_path, role="label")
        if vol.num_channels != 1 or vol.spatial_shape != lab.spatial_shape:
            raise InputError(
                "support",
                "support pairs must be single-channel with equal grids",
                path=str(image_path),
            )
        view = PlaneView.from_affine(vol.affine, vol.spatial_shape, axis)
        stack = to_uint8(view.stack(vol.array), window=window)
        obj = view.stack(np.asarray(lab.array) == label)
        having = np.flatnonzero(obj.reshape(len(obj), -1).any(1))
        if having.size > per_volume:
            having = having[np.linspace(0, having.size - 1, per_volume).round().astype(int)]
        images += [stack[i] for i in having]
        masks += [obj[i] for i in having]
    if not images:
        raise InputError("support", f"no support slice holds label {label}", path=str(folder))
    return images, masks


def _is_volume(path: Path) -> bool:
    """A volume file by suffix; hidden files (macOS ``._*`` junk in MSD tarballs) are not."""
    name = path.name
    return not name.startswith(".") and path.is_file() and name.lower().endswith(_VOLUME_SUFFIXES)


def _split(name: str) -> tuple[str, str]:
    for suffix in _VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return name, ""
