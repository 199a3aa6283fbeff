"""Region partitions for RAT: an image -> an integer region map, plus an on-disk cache.

Convention (the released code's ``toSegMap``, README and issue #1): masks are sorted by area,
largest first, and painted in that order with ids ``1..K`` (a later, smaller mask overwrites an
earlier one); pixels that no mask covers get ``K + 1``. The painted map is then relabelled to
consecutive ids in the same order (a mask hidden entirely by smaller ones leaves no id behind),
so every returned map holds exactly the ids ``1..max``.

- :class:`SamGridPartitioner`: LiteMedSAM prompted by boxes on a point grid; our stand-in for
  the released SAM ``SamAutomaticMaskGenerator`` (faithful in kind, not bit-for-bit);
- :class:`KMeansPartitioner`: intensity + position k-means split into connected components
  (SLIC-like; not faithful, for CPU tests and demos);
- :class:`RegionCache`: content-addressed ``.npy`` cache around any partitioner.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch

if TYPE_CHECKING:
    from medseg.models.litemedsam import LiteMedSAM

__all__ = [
    "KMeansPartitioner",
    "RegionCache",
    "RegionPartitioner",
    "SamGridPartitioner",
    "make_partitioner",
    "paint_masks",
]


@runtime_checkable
class RegionPartitioner(Protocol):
    """``(H, W)`` float image (any intensity range) -> ``(H, W)`` int32 region ids ``>= 1``.

    ``name`` identifies the method (used in cache keys; a ``config`` dict attribute, when
    present, is added to the key); ``faithful`` says whether it stands for the paper's SAM.
    ``partition(image)`` is the call :mod:`medseg.data.restoration` and the restorer make (a
    named method, so that configs can nest partitioners by ``class_path``); the partitioners
    here are also plain callables.
    """

    name: str
    faithful: bool

    def partition(self, image: np.ndarray) -> np.ndarray: ...


class SamGridPartitioner:
    """LiteMedSAM masks from box prompts centred on a regular point grid, painted by area.

    The image is min-max scaled to 8 bit (the released code ran SAM on the 8-bit degraded
    input) and encoded once. At each of the ``points_per_side ** 2`` grid points (cell centres)
    one square box per ``box_scales`` entry (side = that fraction of the longer image side,
    clipped to the image) is decoded, one decoder call per box. LiteMedSAM was distilled and
    fine-tuned with box prompts: a single foreground point gives an empty or near-empty mask
    with predicted IoU around 0.4-0.5 (measured on synthetic discs), so SAM's point grid becomes
    a box grid here. A box that does not enclose an object gives a box-shaped blob, so each
    mask is re-prompted ``refine_steps`` times with its own bounding box (+3 px): objects
    converge to themselves with a high predicted IoU (0.95-0.97 on synthetic discs), blobs keep
    drifting and score lower (<= 0.89 measured), which plays the role of SAM's stability score.
    Masks whose final predicted IoU is below ``pred_iou_thresh`` or smaller than
    ``min_area_fraction`` of the image are dropped; near-duplicates (mask IoU > ``dedupe_iou``)
    keep the higher-scoring one; the rest is painted by :func:`paint_masks`.

    ``faithful`` is True in the sense the task allows (a SAM-family model, frozen, run on the
    degraded input, masks painted by area as released), but the maps are not those of SAM's
    ``SamAutomaticMaskGenerator`` (no multimask output, stability score or crop layers).
    Cost: one encoder call plus ``points_per_side ** 2 * len(box_scales) * (1 + refine_steps)``
    box decodes: by default ``prompts_per_call`` boxes per decoder call, one batch per
    refinement step (:func:`medseg.inference.sam_boxes.refined_box_masks`: the same masks in
    24 decoder calls instead of 1,536). On CPU that saves only the per-call overhead (1.3x
    measured on a shared 2-core machine, ``bench/sam_regions.py``): each box still costs a
    full decoder pass over the 64 x 64 embedding, so a slice stays in minutes there; on a GPU
    the batch is what makes it fast. ``prompts_per_call=1`` is the one-box-per-call path.

    Args:
        points_per_side: grid side.
        pred_iou_thresh: minimum predicted IoU.
        min_area_fraction: minimum mask area over the image area.
        box_scales: box sides as fractions of the longer image side.
        dedupe_iou: masks overlapping more than this are duplicates.
        refine_steps: re-prompts with the bounding box (+3 px) of the previous mask.
        prompts_per_call: boxes per decoder call (1: one call per box, the reference path).
        device: device for LiteMedSAM (``"cpu"``, ``"cuda"``, ``"auto"``).
        net: a loaded eval-mode LiteMedSAM; ``None`` loads the shipped checkpoint on first use.
    """

    faithful = True

    def __init__(
        self,
        points_per_side: int = 16,
        pred_iou_thresh: float = 0.8,
        min_area_fraction: float = 1e-3,
        box_scales: Sequence[float] = (0.25, 0.5),
        dedupe_iou: float = 0.9,
        refine_steps: int = 2,
        device: str = "cpu",
        net: LiteMedSAM | None = None,
        prompts_per_call: int = 64,
    ) -> None:
        if prompts_per_call < 1:
            raise ValueError(f"prompts_per_call must be >= 1, got {prompts_per_call}")
        if points_per_side < 1 or not box_scales or min(box_scales) <= 0:
            raise ValueError(
                f"need points_per_side >= 1 and positive box_scales, got {points_per_side}, "
                f"{box_scales}"
            )
        self.name = "litemedsam_grid"
        self.points_per_side = points_per_side
        self.pred_iou_thresh = pred_iou_thresh
        self.min_area_fraction = min_area_fraction
        self.box_scales = tuple(float(s) for s in box_scales)
        self.dedupe_iou = dedupe_iou
        self.refine_steps = refine_steps
        self.prompts_per_call = prompts_per_call  # not in config: the maps do not depend on it
        self.device = device
        self._net = net
        self._predictor: Any = None
        self.config = {
            "points_per_side": points_per_side,
            "pred_iou_thresh": pred_iou_thresh,
            "min_area_fraction": min_area_fraction,
            "box_scales": self.box_scales,
            "dedupe_iou": dedupe_iou,
            "refine_steps": refine_steps,
            "weights": "shipped" if net is None else f"custom:{id(net)}",
        }

    def __call__(self, image: np.ndarray) -> np.ndarray:
        gray = _check_image(image)
        predictor = self._get_predictor()
        predictor.set_stack(_to_uint8(gray)[None])
        height, width = gray.shape
        n, side = self.points_per_side, max(height, width)
        boxes = []
        for y in (np.arange(n) + 0.5) * height / n:
            for x in (np.arange(n) + 0.5) * width / n:
                for fraction in self.box_scales:
                    half = fraction * side / 2
                    box = [max(0, x - half), max(0, y - half)]
                    boxes.append(box + [min(width - 1, x + half), min(height - 1, y + half)])
        if self.prompts_per_call > 1:
            from .sam_boxes import refined_box_masks

            found, ious = refined_box_masks(
                predictor, boxes, refine_steps=self.refine_steps, chunk=self.prompts_per_call
            )
        else:
            found, ious = zip(*[self._one_by_one(predictor, b) for b in boxes], strict=True)
        min_area = self.min_area_fraction * height * width
        keep = [i for i, m in enumerate(found) if ious[i] >= self.pred_iou_thresh
                and m.sum() >= min_area]  # fmt: skip
        masks, scores = [found[i] for i in keep], [float(ious[i]) for i in keep]
        return paint_masks(_dedupe(masks, scores, self.dedupe_iou), (height, width))

    def _one_by_one(self, predictor: Any, box: list[float]) -> tuple[np.ndarray, float]:
        """One box and its re-prompts, one decoder call each (the reference path)."""
        from .sam_boxes import mask_box

        mask, iou = predictor.predict(0, box=box)
        for _ in range(self.refine_steps):  # re-prompt with the mask's own box
            if not mask.any():
                break
            mask, iou = predictor.predict(0, box=mask_box(mask, margin=3))
        return mask, iou

    def partition(self, image: np.ndarray) -> np.ndarray:
        """The same as calling it (the name ``medseg.data`` and the restorer call)."""
        return self(image)

    def _get_predictor(self) -> Any:
        if self._predictor is None:
            from medseg.models.litemedsam import load_litemedsam

            from .litemedsam import LiteMedSAMPredictor

            net = load_litemedsam(device=self.device) if self._net is None else self._net
            self._predictor = LiteMedSAMPredictor(
                net, device=self.device, precision="fp32", runtime="torch"
            )
        return self._predictor


class KMeansPartitioner:
    """k-means on (intensity, y, x), each cluster split into connected components (not faithful).

    Features per pixel: min-max normalised intensity, and ``spatial_weight * y / max(H, W)``,
    ``spatial_weight * x / max(H, W)``. Centres start at ``n_regions`` pixels drawn with
    ``seed``; ``iters`` Lloyd steps (an emptied cluster keeps its centre). Clusters are split into
    4-connected components (``scipy.ndimage.label``); components smaller than
    ``min_area_fraction`` of the image are left unlabelled (id ``K + 1``). Deterministic for a
    given image and seed.
    """

    faithful = False

    def __init__(
        self,
        n_regions: int = 16,
        iters: int = 10,
        spatial_weight: float = 0.5,
        seed: int = 0,
        min_area_fraction: float = 1e-3,
    ) -> None:
        if n_regions < 1 or iters < 0:
            raise ValueError(f"need n_regions >= 1 and iters >= 0, got {n_regions}, {iters}")
        self.name = "kmeans"
        self.n_regions, self.iters = n_regions, iters
        self.spatial_weight, self.seed = spatial_weight, seed
        self.min_area_fraction = min_area_fraction
        self.config = {
            "n_regions": n_regions,
            "iters": iters,
            "spatial_weight": spatial_weight,
            "seed": seed,
            "min_area_fraction": min_area_fraction,
        }

    def __call__(self, image: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        gray = _check_image(image)
        height, width = gray.shape
        labels = self._cluster(gray)
        masks = []
        for cluster in np.unique(labels):
            components, count = ndimage.label(labels == cluster)
            masks += [components == i for i in range(1, count + 1)]
        keep = [m for m in masks if m.sum() >= self.min_area_fraction * gray.size]
        return paint_masks(keep, (height, width))

    def partition(self, image: np.ndarray) -> np.ndarray:
        """The same as calling it (the name ``medseg.data`` and the restorer call)."""
        return self(image)

    def _cluster(self, gray: np.ndarray) -> np.ndarray:
        """``(H, W)`` -> ``(H, W)`` cluster index of every pixel."""
        height, width = gray.shape
        value = torch.from_numpy(gray.astype(np.float32))
        span = float(value.max() - value.min())
        value = (value - value.min()) / span if span > 0 else torch.zeros_like(value)
        side = self.spatial_weight / max(height, width)
        yy, xx = torch.meshgrid(
            torch.arange(height, dtype=torch.float32),
            torch.arange(width, dtype=torch.float32),
            indexing="ij",
        )
        feats = torch.stack([value, yy * side, xx * side], -1).reshape(-1, 3)  # (HW, 3)
        k = min(self.n_regions, feats.shape[0])
        gen = torch.Generator().manual_seed(self.seed)
        centres = feats[torch.randperm(feats.shape[0], generator=gen)[:k]].clone()
        for _ in range(self.iters):
            assign = torch.cdist(feats, centres).argmin(1)
            sums = torch.zeros_like(centres).index_add_(0, assign, feats)
            counts = torch.bincount(assign, minlength=k)[:, None]
            centres = torch.where(counts > 0, sums / counts.clamp(min=1), centres)
        return torch.cdist(feats, centres).argmin(1).reshape(height, width).numpy()


class RegionCache:
    """Compute region maps once per (image, partitioner) and keep them as ``.npy`` files.

    The key is the SHA-256 of the image bytes, shape and dtype, the partitioner's ``name`` and
    its ``config`` (if any). Files are int16 when the largest id fits, else int32, and are
    written atomically (temporary file in ``folder`` + ``os.replace``). An unreadable or
    malformed file is recomputed and rewritten.

    Shapes: image ``(H, W)`` -> ``(H, W)`` int32 ids.
    """

    def __init__(self, folder: str | os.PathLike[str], partitioner: RegionPartitioner) -> None:
        self.folder = Path(folder)
        self.partitioner = partitioner

    @property
    def name(self) -> str:
        """The wrapped partitioner's name (checkpoints record what made the regions)."""
        return self.partitioner.name

    @property
    def faithful(self) -> bool:
        return self.partitioner.faithful

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.ascontiguousarray(image)
        path = self.folder / f"{self.key(image)}.npy"
        cached = _read(path, image.shape)
        if cached is not None:
            return cached
        ids = np.asarray(self.partitioner.partition(image), dtype=np.int32)
        self.folder.mkdir(parents=True, exist_ok=True)
        small = ids.size == 0 or int(ids.max()) < np.iinfo(np.int16).max
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, ids.astype(np.int16 if small else np.int32))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return ids

    def partition(self, image: np.ndarray) -> np.ndarray:
        """The same as calling it (the name ``medseg.data`` and the restorer call)."""
        return self(image)

    def key(self, image: np.ndarray) -> str:
        """Hex SHA-256 naming the cache file of ``image``."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(image).tobytes())
        config = getattr(self.partitioner, "config", None)
        meta = (
            image.shape,
            str(image.dtype),
            self.partitioner.name,
            sorted((config or {}).items()),
        )
        digest.update(repr(meta).encode())
        return digest.hexdigest()


def make_partitioner(kind: str = "sam", **kwargs: Any) -> RegionPartitioner:
    """``"sam"`` -> :class:`SamGridPartitioner`, ``"kmeans"`` -> :class:`KMeansPartitioner`."""
    kinds = {"sam": SamGridPartitioner, "kmeans": KMeansPartitioner}
    if kind not in kinds:
        raise ValueError(f"unknown partitioner {kind!r}; choose one of {', '.join(kinds)}")
    return kinds[kind](**kwargs)


def paint_masks(masks: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Paint boolean ``(H, W)`` masks by decreasing area with ids ``1..K``, the rest ``K + 1``,
    then relabel to consecutive ids in that order. Returns ``(H, W)`` int32."""
    order = sorted(range(len(masks)), key=lambda i: -int(masks[i].sum()))  # stable
    ids = np.full(shape, len(masks) + 1, dtype=np.int32)
    for painted, i in enumerate(order, start=1):
        ids[masks[i]] = painted
    _, compact = np.unique(ids, return_inverse=True)
    return (compact.reshape(shape) + 1).astype(np.int32)


def _dedupe(masks: list[np.ndarray], scores: list[float], thresh: float) -> list[np.ndarray]:
    """Greedy NMS on mask IoU: keep masks by decreasing score unless they overlap a kept one.

    IoUs are measured on masks subsampled to at most about 256 x 256 pixels (bounded memory)."""
    if not masks:
        return []
    step = max(1, int(np.ceil(np.sqrt(masks[0].size / 65536))))
    flat = np.stack([m[::step, ::step].ravel() for m in masks]).astype(np.float32)
    inter = flat @ flat.T
    area = flat.sum(1)
    iou = inter / np.maximum(area[:, None] + area[None, :] - inter, 1.0)
    kept: list[int] = []
    for i in sorted(range(len(masks)), key=lambda j: -scores[j]):
        if not kept or iou[i, kept].max() <= thresh:
            kept.append(i)
    return [masks[i] for i in kept]


def _check_image(image: np.ndarray) -> np.ndarray:
    gray = np.asarray(image)
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise ValueError(f"expected a non-empty (H, W) image, got shape {gray.shape}")
    if not np.isfinite(gray).all():
        raise ValueError("image holds NaN or infinite values")
    return gray


def _to_uint8(gray: np.ndarray) -> np.ndarray:
    """Min-max to 0-255 uint8 (a constant image maps to zeros)."""
    data = gray.astype(np.float64)
    span = data.max() - data.min()
    return (
        np.zeros(data.shape, np.uint8)
        if span <= 0
        else ((data - data.min()) / span * 255).astype(np.uint8)
    )


def _read(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """A cached map, or ``None`` when missing, unreadable or not an ``(H, W)`` id map >= 1."""
    try:
        ids = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if ids.shape != shape or ids.dtype.kind not in "iu" or (ids.size and ids.min() < 1):
        return None
    return ids.astype(np.int32)
