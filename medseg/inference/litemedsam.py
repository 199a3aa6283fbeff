"""LiteMedSAM on a stack of 2D display slices: box/point prompts, 3D propagation.

The stack is ``(S, H, W)`` uint8: slice index first, then rows and columns as displayed (the CLI
maps a volume and the user's coordinates to that stack and back). Prompts are in pixel units of
a slice: box ``(x0, y0, x1, y1)``, points ``(x, y)``; x is the column, y the row.

Each slice follows the official ``CVPR24_LiteMedSAM_infer.py`` steps: 3 channels, resize the
longest side to 256 (``cv2.INTER_AREA``), min-max to [0, 1], pad bottom/right to 256 x 256;
boxes scale by ``int(c * 256 / max(H, W))``; the single-mask logits are cropped to the resized
size, resized bilinearly to ``(H, W)`` and thresholded at sigmoid 0.5. Propagation prompts each
next slice with the box (3 px margin, 256-space) of the previous slice's mask.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medseg.errors import InputError

from .device import resolve_device, resolve_precision
from .windowing import to_uint8

if TYPE_CHECKING:
    from medseg.models.litemedsam import LiteMedSAM

__all__ = [
    "LiteMedSAMPredictor",
    "box_from_mask_256",
    "box_to_256",
    "preprocess_slice",
    "to_uint8",
]

IMAGE_SIZE = 256
BOX_MARGIN_256 = 3

BoxLike = Sequence[float] | np.ndarray
PointsLike = Sequence[Sequence[float]] | np.ndarray


def preprocess_slice(slice_u8: np.ndarray) -> tuple[Tensor, tuple[int, int]]:
    """One slice -> encoder input, exactly as the official script prepares it.

    Args:
        slice_u8: ``(H, W)`` or ``(H, W, 3)`` uint8.

    Returns:
        ``(tensor (1, 3, 256, 256) float32 in [0, 1], (new_h, new_w))``: the resized, min-max
        normalised image padded bottom/right, and its size before padding. The tensor is a
        channels-last view, as the official ``permute(2, 0, 1)`` produces.
    """
    image = np.asarray(slice_u8)
    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)
    ):
        raise InputError(
            "slice", f"expected (H, W) or (H, W, 3) uint8, got {image.shape} {image.dtype}"
        )
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=-1)
    new_h, new_w = _resized_shape(image.shape[:2])
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    normed = (resized - resized.min()) / np.clip(resized.max() - resized.min(), 1e-8, None)
    padded = np.pad(normed, ((0, IMAGE_SIZE - new_h), (0, IMAGE_SIZE - new_w), (0, 0)))
    tensor = torch.tensor(padded).float().permute(2, 0, 1).unsqueeze(0)
    return tensor, (new_h, new_w)


def box_to_256(box: BoxLike, shape: tuple[int, int]) -> np.ndarray:
    """``(x0, y0, x1, y1)`` in slice pixels -> 256-space, truncated like the official code."""
    ratio = IMAGE_SIZE / max(shape)
    return np.array([int(c * ratio) for c in box], dtype=np.float64)


def box_from_mask_256(mask: np.ndarray) -> np.ndarray | None:
    """The official propagation box of a ``(H, W)`` mask, or None when it vanishes.

    The mask is resized like the image (``INTER_AREA`` on 0/1 uint8, so specks below half a
    256-space pixel disappear), padded, and its bounding box taken with a 3 px margin clipped
    to [0, 256].
    """
    new_h, new_w = _resized_shape(mask.shape)
    small = cv2.resize(mask.astype(np.uint8), (new_w, new_h), interpolation=cv2.INTER_AREA)
    rows, cols = np.nonzero(small)
    if rows.size == 0:
        return None
    m = BOX_MARGIN_256
    return np.array(
        [
            max(0, cols.min() - m),
            max(0, rows.min() - m),
            min(IMAGE_SIZE, cols.max() + m),
            min(IMAGE_SIZE, rows.max() + m),
        ],
        dtype=np.float64,
    )


class LiteMedSAMPredictor:
    """Prompted segmentation of a slice stack with a loaded, eval-mode LiteMedSAM.

    Args:
        net: a ``LiteMedSAM`` with weights loaded and ``.eval()`` called (it is moved to
            ``device``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        precision: ``"auto"`` (bf16 encoder on CUDA and on CPUs with AMX/AVX512-BF16, else
            fp32), ``"fp32"`` (the reference path) or ``"bf16"``. The decoder is always fp32.
        batch_size: slices encoded per encoder call while propagating (look-ahead in the
            direction of travel). None: 8 on CUDA, 1 on CPU, where batching is slower per slice
            (measured: bf16 encoder 0.42 s/slice at 1, 0.51 at 4; see FIDELITY.md) and a
            look-ahead would encode slices past the point where the mask vanishes.
        cache_slices: embeddings kept (least recently used dropped first); each is 4 MB in fp32
            and 2 MB in bf16.
        runtime: where the encoder runs: ``"auto"``, ``"torch"`` (eager, the reference) or
            ``"openvino"`` (:mod:`medseg.inference.runtimes`); ``self.runtime`` says which ran.

    Each slice is encoded once per :meth:`set_stack` (while cached); prompting it again only
    reruns the decoder. With bf16 the encoder is a BatchNorm-folded bf16 copy made here
    (``LiteMedSAM.inference_encoder``): later weight changes to ``net`` do not reach it.
    """

    def __init__(
        self,
        net: LiteMedSAM,
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        batch_size: int | None = None,
        cache_slices: int = 256,
        runtime: str = "auto",
    ) -> None:
        from .runtimes import encoder_runtime, resolve_runtime

        if net.training:
            raise ValueError("net is in training mode: call .eval() after loading the weights")
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        if batch_size is None:
            batch_size = 8 if self.device.type == "cuda" else 1
        if batch_size < 1 or cache_slices < batch_size:
            raise ValueError("need batch_size >= 1 and cache_slices >= batch_size")
        self.net = net.to(self.device)
        self.batch_size = batch_size
        self.cache_slices = cache_slices
        self.runtime = resolve_runtime(runtime, self.device)
        compiled = encoder_runtime(net, self.runtime, self.precision)
        self._channels_last = compiled is None and self.precision == "bf16"
        if compiled is not None:
            self.encoder: nn.Module | Callable[[Tensor], Tensor] = compiled
            self._input_dtype = torch.float32
        elif self.precision == "bf16":
            self.runtime, self.encoder = "torch", net.inference_encoder(torch.bfloat16)
            self._input_dtype = torch.bfloat16
        else:
            self.runtime, self.encoder = "torch", net.image_encoder
            self._input_dtype = torch.float32
        self._stack: np.ndarray | None = None
        self._cache: OrderedDict[int, Tensor] = OrderedDict()

    def fork(self) -> LiteMedSAMPredictor:
        """A predictor sharing this one's net and encoder, with no stack and an empty cache.

        Cheap (no weight copy, no bf16 folding): the viewer gives each user session its own
        fork, so sessions never see each other's stacks or embeddings."""
        twin = copy.copy(self)
        twin._stack = None
        twin._cache = OrderedDict()
        return twin

    def set_stack(self, stack_u8: np.ndarray) -> None:
        """Use a new ``(S, H, W)`` uint8 stack (see :func:`to_uint8`); drops cached embeddings.

        The array is kept by reference: do not modify it while this predictor uses it."""
        stack = np.asarray(stack_u8)
        if stack.ndim != 3 or stack.dtype != np.uint8 or min(stack.shape) < 1:
            raise InputError(
                "stack",
                f"expected a non-empty (S, H, W) uint8 stack, got {stack.shape} "
                f"{stack.dtype}; convert intensities with to_uint8()",
            )
        _resized_shape(stack.shape[1:])  # fail now on degenerate slices
        self._stack = stack
        self._cache.clear()

    @property
    def stack(self) -> np.ndarray:
        """The current ``(S, H, W)`` uint8 stack."""
        if self._stack is None:
            raise RuntimeError("call set_stack() first")
        return self._stack

    def predict(
        self,
        slice_index: int,
        box: BoxLike | None = None,
        points: PointsLike | None = None,
        point_labels: Sequence[int] | np.ndarray | None = None,
    ) -> tuple[np.ndarray, float]:
        """Segment one slice from a box, points or both.

        Args:
            slice_index: index into the stack.
            box: ``(x0, y0, x1, y1)`` in slice pixels.
            points: ``(N, 2)`` ``(x, y)`` in slice pixels.
            point_labels: ``(N,)`` 1 foreground / 0 background; default all 1.

        Returns:
            ``(mask (H, W) bool, predicted IoU)``.
        """
        index = self._check_index(slice_index)
        shape = self.stack.shape[1:]
        box256, points256, labels = _prompts_to_256(box, points, point_labels, shape)
        return self._segment(index, box256, points256, labels, step=0, limit=index)

    def propagate(
        self,
        key: int,
        box: BoxLike | None = None,
        points: PointsLike | None = None,
        point_labels: Sequence[int] | np.ndarray | None = None,
        *,
        stop_at: tuple[int, int] | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> np.ndarray:
        """Segment the key slice from the prompt, then propagate up and down the stack.

        Every next slice is prompted by the box of the previous slice's mask (official
        ``get_bbox256``: 256-space, 3 px margin). A direction stops when the mask vanishes
        (its 256-space resize is empty; the official script falls back to the key box there)
        or at ``stop_at``. LiteMedSAM fills almost any box with something, also past the end
        of an object, so its mask seldom vanishes: pass the object's slice range as
        ``stop_at`` when it is known (the z-range of the official 3D box).

        Args:
            key: the prompted slice.
            box, points, point_labels: the prompt on the key slice (see :meth:`predict`).
            stop_at: ``(lo, hi)`` inclusive slice range to stay within; default the whole stack.
            progress: called with the number of slices done so far after each slice.

        Returns:
            ``(S, H, W)`` bool masks; slices never visited are False.
        """
        key = self._check_index(key)
        count = self.stack.shape[0]
        lo, hi = (0, count - 1) if stop_at is None else (int(stop_at[0]), int(stop_at[1]))
        if not 0 <= lo <= key <= hi < count:
            raise InputError(
                "stop_at", f"stop_at needs 0 <= lo <= key <= hi < {count}, got {lo, key, hi}"
            )
        shape = self.stack.shape[1:]
        masks = np.zeros(self.stack.shape, dtype=bool)
        box256, points256, labels = _prompts_to_256(box, points, point_labels, shape)
        masks[key] = self._segment(key, box256, points256, labels, step=1, limit=hi)[0]
        done = 1
        if progress is not None:
            progress(done)
        for step, limit in ((1, hi), (-1, lo)):
            previous, index = masks[key], key + step
            while (index - limit) * step <= 0:
                found = self.follow(index, previous, limit=limit)
                if found is None:
                    break
                masks[index] = found[0]
                previous, index, done = masks[index], index + step, done + 1
                if progress is not None:
                    progress(done)
        return masks

    def follow(
        self, index: int, previous: np.ndarray, *, limit: int
    ) -> tuple[np.ndarray, float] | None:
        """One propagation step: segment slice ``index`` from the box (official
        ``get_bbox256``) of its neighbour's ``(H, W)`` mask ``previous``, encoding ahead towards
        slice ``limit``. ``(mask (H, W) bool, predicted IoU)``, or None when ``previous`` has
        vanished at 256 scale."""
        index = self._check_index(index)
        prompt = box_from_mask_256(previous)
        if prompt is None:
            return None
        step = 1 if limit >= index else -1
        return self._segment(index, prompt, None, None, step=step, limit=limit)

    def _segment(
        self,
        index: int,
        box256: np.ndarray | None,
        points256: np.ndarray | None,
        labels: np.ndarray | None,
        *,
        step: int,
        limit: int,
    ) -> tuple[np.ndarray, float]:
        embedding = self._embedding(index, step, limit)
        device = self.device
        with torch.inference_mode():
            logits, iou = self.net.decode(
                embedding.float(),
                boxes=None if box256 is None else _tensor(box256[None], device),
                points=None if points256 is None else _tensor(points256[None], device),
                point_labels=None if labels is None else _tensor(labels[None], device),
            )
            height, width = self.stack.shape[1:]
            new_h, new_w = _resized_shape((height, width))
            logits = F.interpolate(
                logits[..., :new_h, :new_w], (height, width), mode="bilinear", align_corners=False
            )
            mask = (torch.sigmoid(logits) > 0.5)[0, 0].cpu().numpy()
        return mask, float(iou[0, 0])

    def _embedding(self, index: int, step: int, limit: int) -> Tensor:
        """``(1, 256, 64, 64)`` embedding of a slice; on a miss, also encodes up to
        ``batch_size - 1`` uncached slices after it in direction ``step`` (not past ``limit``)."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        batch = [index]
        nxt = index + step
        while step and len(batch) < self.batch_size and (nxt - limit) * step <= 0:
            if nxt not in self._cache:
                batch.append(nxt)
            nxt += step
        images = torch.cat([preprocess_slice(self.stack[i])[0] for i in batch])
        images = images.to(self.device, self._input_dtype)
        if self._channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            embeddings = self.encoder(images)
        for offset, i in enumerate(batch):
            self._cache[i] = embeddings[offset : offset + 1]
        while len(self._cache) > self.cache_slices:
            self._cache.popitem(last=False)
        return self._cache[index]

    def _check_index(self, index: int) -> int:
        count = self.stack.shape[0]
        if not 0 <= int(index) < count:
            raise InputError("slice", f"slice {index} out of range for {count} slices")
        return int(index)


def _prompts_to_256(
    box: BoxLike | None,
    points: PointsLike | None,
    point_labels: Sequence[int] | np.ndarray | None,
    shape: tuple[int, int],
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Validate slice-pixel prompts and scale them to 256-space (boxes truncated as in the
    official script; points scaled exactly, as SAM's ``ResizeLongestSide`` does)."""
    if box is None and points is None:
        raise InputError("prompt", "give a box, points or both")
    box256 = None
    if box is not None:
        b = np.asarray(box, dtype=np.float64)
        if b.shape != (4,) or not np.isfinite(b).all() or b[2] < b[0] or b[3] < b[1]:
            raise InputError("prompt", f"box must be finite (x0, y0, x1, y1), x0<=x1, y0<=y1: {b}")
        box256 = box_to_256(b, shape)
    if points is None:
        if point_labels is not None:
            raise InputError("prompt", "point_labels given without points")
        return box256, None, None
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2) if np.size(points) else None
    if p is None or not np.isfinite(p).all():
        raise InputError("prompt", "points must be a non-empty finite (N, 2) array of (x, y)")
    labels = np.ones(len(p)) if point_labels is None else np.asarray(point_labels, np.float64)
    if labels.shape != (len(p),) or not np.isin(labels, (0, 1)).all():
        raise InputError("prompt", f"point_labels must be {len(p)} values of 0 or 1")
    return box256, p * (IMAGE_SIZE / max(shape)), labels


def _resized_shape(shape: Sequence[int]) -> tuple[int, int]:
    """Official ``resize_longest_side`` size: longest side 256, ``int(x * scale + 0.5)``."""
    height, width = int(shape[0]), int(shape[1])
    scale = IMAGE_SIZE / max(height, width)
    new_h, new_w = int(height * scale + 0.5), int(width * scale + 0.5)
    if min(new_h, new_w) < 1:
        raise InputError("slice", f"slice {height}x{width} is too elongated for a 256 resize")
    return new_h, new_w


def _tensor(array: np.ndarray, device: torch.device) -> Tensor:
    return torch.as_tensor(array, dtype=torch.float32, device=device)
