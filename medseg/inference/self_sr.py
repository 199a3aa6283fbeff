"""Self-supervised through-plane super-resolution of a thick-slice volume (``--method self-sr``).

The SMORE/ECLARE idea (Zhao et al., IEEE TMI 2021; Remedios et al., 2024), built on a tiny
:class:`medseg.models.rat.RAT`: a thick-slice volume is sharp in-plane and blurred through-plane,
so its own in-plane slices, degraded along one in-plane axis the way the scanner degraded the
through-plane axis, are training pairs for undoing that degradation. No data other than the
input is used, and nothing is kept after the run.

1. **Axes.** The through-plane axis is the voxel axis with the largest spacing ``t``; the
   in-plane spacing ``p`` is the mean of the other two. The factor is ``scale`` (given) or
   ``round(t / p)``; a volume with ``t < 1.5 p`` is refused (not a thick-slice volume).
2. **Slice profile.** Each thick slice is the mean of the signal over a box of width
   ``thickness`` mm centred on the slice (``thickness`` given, or the slice spacing ``t``:
   contiguous slices with no gap). On an in-plane slice the same box, ``scale * thickness / t``
   pixels wide, is applied along one axis and every ``scale``-th sample is kept
   (:func:`slice_profile`): exactly :func:`medseg.transforms.degrade.thick_slices` when the
   thickness is the spacing.
3. **Training.** Random ``patch`` x ``patch`` crops of the in-plane slices (those inside the
   body: above the 10th percentile of the patch means), intensities scaled by the volume's
   0.5-99.5th percentiles, the degraded crop brought back to full size by bicubic interpolation
   along the degraded axis; the RAT learns the residual to the clean crop (L1, Adam, cosine
   decay, ``steps`` steps; the degraded axis is the rows or the columns at random).
4. **Inference.** Every slice that contains the through-plane axis is interpolated (bicubic,
   voxel edges aligned) to ``scale`` times its samples and restored by the net, tiled into
   ``patch``-sized regions of RAT's region attention (the context it was trained with); the
   two stacks of such slices (one per in-plane axis) are averaged, as SMORE does.

The output covers the input's physical box with ``scale`` times the voxels (``1/scale`` the
spacing) along the through-plane axis, in the input's units
(:func:`medseg.inference.restoration.super_resolved_affine`). Assumes: in-plane resolution
is isotropic enough to stand in for the through-plane one (``t / scale`` vs ``p``: the
README states both), the slice profile is a box, and anatomy looks alike in every direction.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medseg.errors import InputError
from medseg.inference.classical import ClassicalOutput
from medseg.inference.memory import check_memory, header_guard, restoration_need
from medseg.io.volume import Volume, VolumeHeader

__all__ = ["SelfSR", "slice_profile", "through_plane"]

MIN_RATIO = 1.5
MIN_PATCH = 16
MEMORY_FIX = "crop the image first"


def through_plane(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[int, float, float]:
    """``(axis, t, p)``: the voxel axis with the largest spacing, its spacing ``t`` (mm) and
    the mean spacing ``p`` of the other two axes."""
    spacing = np.linalg.norm(np.asarray(affine, np.float64)[:3, :3], axis=0)
    axis = int(np.argmax(spacing))
    others = [float(spacing[i]) for i in range(3) if i != axis]
    return axis, float(spacing[axis]), float(np.mean(others))


def slice_profile(n: int, scale: int, width: float) -> torch.Tensor:
    """``(n // scale, n)`` weights: row ``k`` averages the pixels under a box ``width`` pixels
    wide centred on ``(k + 0.5) * scale`` (pixel ``i`` spans ``[i, i + 1)``); partly covered
    pixels count by their covered fraction, and each row sums to 1."""
    low = n // scale
    centre = (torch.arange(low, dtype=torch.float64) + 0.5) * scale
    lo, hi = centre - width / 2, centre + width / 2
    edges = torch.arange(n, dtype=torch.float64)
    cover = torch.minimum(hi[:, None], edges[None] + 1) - torch.maximum(lo[:, None], edges[None])
    weights = cover.clamp(min=0)
    return (weights / weights.sum(1, keepdim=True)).to(torch.float32)


def upsample_rows(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``(B, 1, h, w) -> (B, 1, h * scale, w)``: bicubic along the rows, voxel edges aligned."""
    return F.interpolate(x, scale_factor=(scale, 1), mode="bicubic", align_corners=False)


class SelfSR:
    """Through-plane super-resolution trained on the input itself (module docstring).

    Args:
        scale: output slices per input slice along the through-plane axis (None: the rounded
            ratio of the through-plane to the in-plane spacing).
        thickness: slice thickness in mm (None: the slice spacing; larger: overlapping slices,
            smaller: a gap between them).
        steps: training steps (batches of ``batch`` crops).
        patch: crop side in pixels (rounded up to a multiple of ``scale``; smaller slices
            shrink it to fit).
        batch: crops per step.
        width: RAT width (the ``tiny`` preset's 16; larger is slower and sharper).
        seed: seed of the crops and the initial weights (the same input gives the same output).
        device: a torch device string.
        progress: called with ``(done, total, stage)`` (``"train"`` steps, ``"restore"``
            slices) as work proceeds.
    """

    method = "self-sr"

    def __init__(
        self,
        *,
        scale: int | None = None,
        thickness: float | None = None,
        steps: int = 1000,
        patch: int = 48,
        batch: int = 16,
        width: int = 16,
        seed: int = 0,
        device: str = "cpu",
        progress: Callable[[int, int, str], None] | None = None,
    ) -> None:
        for name, value in (("steps", steps), ("patch", patch), ("batch", batch),
                            ("width", width), ("scale", scale)):  # fmt: skip
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise InputError("bad_argument", f"{name} must be a positive int, got {value!r}")
        if scale is not None and scale < 2:
            raise InputError("bad_argument", f"--scale must be at least 2 for self-sr, got {scale}")
        if thickness is not None and not (math.isfinite(thickness) and thickness > 0):
            raise InputError(
                "bad_argument", f"--slice-thickness must be a positive number (mm), got {thickness}"
            )
        self.scale_given, self.thickness = scale, thickness
        self.steps, self.patch, self.batch, self.width = steps, patch, batch, width
        self.seed, self.device, self.progress = seed, torch.device(device), progress
        self.scale = scale or 2  # updated per volume; what the memory guard assumes until then

    def plan(self, affine: np.ndarray, shape: tuple[int, ...]) -> dict[str, Any]:
        """The axis, factor and slice profile for a volume (InputError if it is not thick)."""
        axis, t, p = through_plane(affine, shape)
        if self.scale_given is None and t < MIN_RATIO * p:
            raise InputError(
                "not_thick_slices",
                f"self-sr restores thick slices, but the spacing is {t:.3g} mm through-plane "
                f"and {p:.3g} mm in-plane (ratio {t / p:.2f} < {MIN_RATIO}); give --scale to "
                "force a factor, or use --method nlmeans to denoise",
            )
        scale = self.scale_given or max(2, round(t / p))
        thickness = self.thickness or t
        return {"axis": axis, "spacing_mm": round(t, 4), "in_plane_mm": round(p, 4),
                "scale": scale, "thickness_mm": round(thickness, 4),
                "profile_px": round(scale * thickness / t, 4)}  # fmt: skip

    def restore(self, volume: Volume) -> ClassicalOutput:
        """Super-resolve ``volume`` ``(X, Y, Z)`` (or ``(1, X, Y, Z)``) along its thick axis:
        float32 ``(X, Y, Z)`` with ``scale`` times the slices, same physical box (module
        docstring)."""
        from medseg.inference.restoration import super_resolved_affine
        from medseg.models.rat import tiny

        start = time.perf_counter()
        where = volume.meta.get("path")
        if volume.array.ndim == 4 and volume.array.shape[0] == 1:  # one channel of a series
            volume = volume.with_array(volume.array[0])
        if volume.array.ndim != 3:
            raise InputError(
                "bad_method",
                f"self-sr restores one 3-D volume, this input has shape {volume.array.shape}; "
                "pick one with --volume-index",
                path=where,
            )
        plan = self.plan(volume.affine, volume.array.shape)
        self.scale = plan["scale"]
        check_memory(self.memory_need(VolumeHeader.of(volume), loaded=True),
                     what="restoration", fix=MEMORY_FIX, path=where)  # fmt: skip
        array = np.asarray(volume.array, dtype=np.float32)
        lo, hi = np.percentile(array, [0.5, 99.5])
        span = float(hi - lo) or 1.0
        scaled = ((np.moveaxis(array, plan["axis"], -1) - lo) / span).astype(np.float32)
        moved = torch.from_numpy(np.ascontiguousarray(scaled))  # (A, B, T)
        torch.manual_seed(self.seed)
        net = tiny(width=self.width).to(self.device)
        train_info = self._train(net, moved, plan)
        out = self._apply(net, moved, plan["scale"], train_info["patch"])
        restored = np.moveaxis(out.numpy() * span + lo, -1, plan["axis"]).astype(np.float32)
        factors = [plan["scale"] if i == plan["axis"] else 1 for i in range(3)]
        affine = super_resolved_affine(volume.affine, factors)
        result = Volume(
            array=np.ascontiguousarray(restored),
            affine=affine,
            qform=None if volume.qform is None else affine.copy(),
            sform=None if volume.sform is None else affine.copy(),
            qform_code=volume.qform_code,
            sform_code=volume.sform_code,
            meta={**volume.meta, "restored": True, "super_resolution": factors},
        )
        info = {"method": self.method, "net": f"RAT tiny (width {self.width})", **plan,
                **train_info, "seconds": round(time.perf_counter() - start, 3)}  # fmt: skip
        return ClassicalOutput(result, info)

    def _train(self, net: torch.nn.Module, moved: torch.Tensor, plan: dict[str, Any]) -> dict:
        """Fit ``net`` on degraded in-plane crops of ``moved`` ``(A, B, T)`` (module docstring)."""
        scale = plan["scale"]
        a, b, t = moved.shape
        size = min(scale * math.ceil(self.patch / scale), scale * (min(a, b) // scale))
        if size < MIN_PATCH:
            raise InputError(
                "too_small",
                f"self-sr trains on in-plane crops of at least {MIN_PATCH}x{MIN_PATCH} pixels "
                f"(whole multiples of the factor {scale}); the slices are {a}x{b}",
            )
        profile = slice_profile(size, scale, plan["profile_px"]).to(self.device)
        gen = torch.Generator().manual_seed(self.seed)
        slices = moved.permute(2, 0, 1)  # (T, A, B)
        # body crops only: the 10% emptiest candidate corners are never drawn
        cand = torch.stack([torch.randint(0, n, (4096,), generator=gen)
                            for n in (t, a - size + 1, b - size + 1)], 1)  # fmt: skip
        means = torch.stack([slices[k, i : i + size, j : j + size].mean() for k, i, j in cand])
        keep = cand[means >= torch.quantile(means, 0.1)]  # a flat image keeps all
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.steps)
        net.train()
        losses = []
        for step in range(self.steps):
            pick = keep[torch.randint(0, len(keep), (self.batch,), generator=gen)]
            clean = torch.stack([slices[k, i : i + size, j : j + size] for k, i, j in pick])
            flip = torch.rand(self.batch, generator=gen) < 0.5  # degrade columns instead of rows
            clean = torch.where(flip[:, None, None], clean.transpose(1, 2), clean)
            clean = clean[:, None].to(self.device)  # (N, 1, size, size)
            low = torch.einsum("lr,nxrc->nxlc", profile, clean)
            loss = F.l1_loss(net(upsample_rows(low, scale)), clean)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if self.progress is not None and (step + 1) % 50 == 0:
                self.progress(step + 1, self.steps, "train")
        tail = losses[-max(1, len(losses) // 10) :]
        return {"steps": self.steps, "patch": size, "batch": self.batch,
                "final_l1": round(float(np.mean(tail)), 5)}  # fmt: skip

    @torch.no_grad()
    def _apply(
        self, net: torch.nn.Module, moved: torch.Tensor, scale: int, size: int
    ) -> torch.Tensor:
        """``(A, B, T) -> (A, B, T * scale)``: the mean of the restored A- and B-slices, each
        restored in ``size``-pixel tiles of region attention."""
        net.eval()
        a, b, t = moved.shape
        total, done = a + b, 0
        out = torch.zeros(a, b, t * scale)
        for first, stack in ((True, moved.permute(0, 2, 1)), (False, moved.permute(1, 2, 0))):
            restored = []  # stack: (A, T, B), then (B, T, A)
            for chunk in stack.split(8):
                up = upsample_rows(chunk[:, None].to(self.device), scale)  # (n, 1, T*s, W)
                restored.append(net(up, _tiles(up, size))[:, 0].cpu())
                done += len(chunk)
                if self.progress is not None:
                    self.progress(done, total, "restore")
            restored = torch.cat(restored)  # (n, T*s, W)
            out += restored.permute(0, 2, 1) if first else restored.permute(2, 0, 1)
        return out / 2

    def memory_need(self, header: VolumeHeader, *, loaded: bool = False) -> int:
        """Bytes :meth:`restore` needs for a volume with this header (the restoration estimate
        with ``scale`` output voxels per input voxel, plus the averaged output stack)."""
        return restoration_need(header, upscale=self.scale + 1, loaded=loaded)

    def memory_guard(self) -> Callable[[VolumeHeader], None]:
        """``load_volume(..., on_header=...)`` callback refusing a volume too large."""
        return header_guard(self.memory_need, fix=MEMORY_FIX, what="restoration")

    def describe(self) -> str:
        return self.method


def _tiles(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(n, 1, h, w)`` -> ``(n, h, w)`` region ids of ``size``-pixel tiles (RAT attends within
    each, as in training)."""
    n, _, h, w = x.shape
    rows, cols = torch.arange(h) // size, torch.arange(w) // size
    ids = rows[:, None] * (w // size + 1) + cols[None]
    return ids.expand(n, h, w).to(x.device)
