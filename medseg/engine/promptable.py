"""``PromptableSegmentationTask``: fine-tunes SAM-family nets on 2-D slices, one object per prompt.

The data are :class:`medseg.data.SegmentationDataModule` batches in 2-D mode (slices
``(N, C, h, w)`` with class-index labels ``(N, 1, h, w)``; validation volumes ``(1, C, X, Y, Z)``),
or, for support nets, :class:`medseg.data.SliceChunkDataModule` chunks of consecutive slices
``(N, C, X, Y, Z)`` (3-D training by propagation, :mod:`medseg.engine.support_training`).
Each slice is min-max scaled to [0, 1] per channel, resized (longest side) to the net's
``image_size`` and padded bottom/right, as MedSAM prepares slices. The net says how it is prompted
(``net.prompt``):

- ``"box"`` (DB-SAM): per training slice, one foreground class present in it; box = the extent of
  that class with a random 0..``box_jitter`` px enlargement per side (at 256 scale, MedSAM's
  convention, scaled to the net frame). ``net(images, boxes) -> (logits, iou)``.
- ``"support"`` (SAM2-SGP): prompt-free; per step, one class, and every slice holding it is a
  support for the others (leave-one-out; 3-D chunks: the slices of other cases' chunks).
  ``net.encode_images / support_memory / predict / segment_stack``. Validation uses a bank of
  training slices per class (the ``support_bank`` most recent ones, not held out), slices
  independently or propagated through the volume (``val_bank_size``).

Loss on the low-res logits against the area-downsampled target (default MONAI ``DiceCELoss``
with sigmoid and squared denominators, DB-SAM's ``SegLoss``); for ``"support"`` nets
``(1 - w) * loss(final) + w * loss(pseudo)``, ``w = pseudo_weight * pseudo_decay ** epoch``.
Validation prompts every class on every slice where the reference holds it (box mode) or every
slice (support mode) and scores whole volumes with :class:`medseg.metrics.SegmentationMetrics`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from medseg.engine.base import ScoredSegmentationTask
from medseg.engine.guards import check_finite_loss
from medseg.engine.segmentation import _plain
from medseg.engine.support_training import chunk_step, slice_step
from medseg.errors import ModelError
from medseg.metrics import SegmentationMetrics
from medseg.transforms.prompts import (
    boxes_from_masks,
    from_frame,
    jitter_boxes,
    low_res_target,
    to_frame,
)

__all__ = ["BCEWithPosWeight", "PromptableSegmentationTask", "without_weight_files"]

WEIGHT_FILE_ARGS = ("sam_checkpoint", "sam2_checkpoint")


class PromptableSegmentationTask(ScoredSegmentationTask):
    """Promptable (box) or support-prompted fine-tuning on 2-D slices (support nets: also 3-D
    on chunks of consecutive slices).

    Args:
        net: a promptable net with ``image_size`` and ``prompt`` (``"box"`` | ``"support"``).
        loss: ``(logits (N, 1, h, w), target (N, 1, h, w) float) -> scalar``; default MONAI
            ``DiceCELoss(sigmoid=True, squared_pred=True)``.
        optimizer: ``params -> Optimizer``; default AdamW (lr 1e-4, weight decay 0.01).
        lr_scheduler: ``optimizer -> scheduler`` stepped per epoch; overrides ``schedule``.
        schedule: ``"poly"`` (power 0.9) or ``"constant"`` after ``warmup_epochs`` linear epochs.
        warmup_epochs: linear warm-up length (DB-SAM: 1).
        preprocessing: linked from the data module (labels, slice axis, spacing).
        box_jitter: max box enlargement per side in px at 256 scale (MedSAM: 20; 0 = exact).
        val_box_jitter: the same at validation (DB-SAM's test code: 20; default exact boxes).
        pseudo_weight / pseudo_decay: support mode, weight of the pseudo-mask loss term.
        support_bank: training slices kept per class for validation supports.
        bank_size: support mode, 3-D training: memories of previous slices kept while a chunk
            is propagated (SAM2-SGP: 16).
        val_bank_size: support mode, validation: 0 = slices independently (2-D); > 0 = slices
            propagated in order with a bank of this many memories (3-D).
        val_batch_size: slices per forward pass at validation.
        hd95: also compute HD95 at validation.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        schedule: str = "poly",
        warmup_epochs: int = 0,
        preprocessing: dict[str, Any] | None = None,
        box_jitter: int = 20,
        val_box_jitter: int = 0,
        pseudo_weight: float = 0.5,
        pseudo_decay: float = 0.95,
        support_bank: int = 8,
        bank_size: int = 16,
        val_bank_size: int = 0,
        val_batch_size: int = 8,
        hd95: bool = True,
    ) -> None:
        super().__init__()
        if schedule not in ("poly", "constant"):
            raise ValueError(f"schedule must be poly or constant, got {schedule!r}")
        if getattr(net, "prompt", None) not in ("box", "support"):
            raise ValueError("net must say how it is prompted: net.prompt in ('box', 'support')")
        if bank_size < 0 or val_bank_size < 0:
            raise ValueError("bank_size and val_bank_size must be >= 0")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")
            self.save_hyperparameters()
        self.hparams["preprocessing"] = preprocessing
        self.net = net
        if loss is None:
            from monai.losses import DiceCELoss

            loss = DiceCELoss(sigmoid=True, squared_pred=True)
        self.loss_fn = loss
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.schedule, self.warmup_epochs = schedule, warmup_epochs
        self.preprocessing = preprocessing
        self.box_jitter, self.val_box_jitter = box_jitter, val_box_jitter
        self.pseudo_weight, self.pseudo_decay = pseudo_weight, pseudo_decay
        self.support_bank, self.val_batch_size, self.hd95 = support_bank, val_batch_size, hd95
        self.bank_size, self.val_bank_size = bank_size, val_bank_size
        self._bank: dict[int, list[tuple[Tensor, Tensor]]] = {}
        self._metrics: dict[str, SegmentationMetrics] = {}

    @property
    def size(self) -> int:
        return int(self.net.image_size)

    # training ----------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor | None:
        image, label = _plain(batch["image"]), _plain(batch["label"])
        if image.ndim == 5 and self.net.prompt == "support":
            axis = int((self.preprocessing or {}).get("slice_axis", 2))
            loss = chunk_step(
                self,
                image,
                label,
                batch.get("case"),
                _generator(self),
                slice_axis=axis,
                bank_size=self.bank_size,
            )
        elif image.ndim != 4:
            raise ValueError(
                f"promptable training needs 2-D slices (support nets: or chunks of slices), "
                f"got {tuple(image.shape)}"
            )
        elif self.net.prompt == "box":
            frame, _ = to_frame(image, self.size)
            loss = self._box_step(frame, to_frame(label.float(), self.size, mode="nearest")[0])
        else:
            frame, _ = to_frame(image, self.size)
            lab, _ = to_frame(label.float(), self.size, mode="nearest")
            loss = slice_step(self, frame, lab, _generator(self))
        if loss is None:
            return None  # no foreground in this batch: nothing to prompt
        check_finite_loss(self, loss, batch_idx)
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(image)
        )
        return loss

    def _box_step(self, frame: Tensor, lab: Tensor) -> Tensor | None:
        gen = _generator(self)
        targets, keep = [], []
        for i in range(len(lab)):
            present = [int(c) for c in lab[i].unique() if c > 0]
            if present:
                c = present[int(torch.randint(len(present), (1,), generator=gen))]
                targets.append(lab[i] == c)
                keep.append(i)
        if not keep:
            return None
        target = torch.stack(targets).float()
        boxes, _ = boxes_from_masks(target > 0.5)
        jitter = self.box_jitter * self.size / 256.0
        boxes = jitter_boxes(boxes, jitter, self.size, generator=gen)
        logits, _ = self.net(frame[keep], boxes.to(frame.device))
        return self.loss_fn(logits, low_res_target(target, logits))

    def _remember(self, c: int, images: Tensor, masks: Tensor) -> None:
        bank = self._bank.setdefault(c, [])
        for img, m in zip(images, masks, strict=True):
            bank.append((img.detach().cpu(), m.detach().cpu()))
        del bank[: max(0, len(bank) - self.support_bank)]

    # prediction (validation and test hooks: MedsegTask) -------------------------------------------
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Any:
        raise ModelError(
            "promptable_predict",
            "a promptable model needs prompts or supports: use `medseg segment --model "
            "db_sam|sam2_sgp --checkpoint CKPT` instead of `medseg predict`",
        )

    def predict_slices(
        self,
        image: Tensor,
        label: Tensor | None,
        classes: list[int],
        supports: dict[int, Any] | None = None,
        bank_size: int = 0,
    ) -> Tensor:
        """Class-index prediction of 2-D slices ``(N, C, h, w)`` -> ``(N, 1, h, w)`` long.

        Box mode needs ``label`` (boxes from the reference, the box-given protocol); support
        mode uses ``supports`` (class -> encoded support; default: from the support bank) and,
        with ``bank_size > 0``, propagates through the slices in order (3-D).
        Later classes overwrite earlier ones where they overlap.
        """
        if self.net.prompt == "support" and supports is None:
            supports = self._bank_supports(image.device)
        out = torch.zeros(
            image.shape[0], 1, *image.shape[2:], dtype=torch.long, device=image.device
        )
        frame, (h, w) = to_frame(image, self.size)
        for c in classes:
            if self.net.prompt == "box":
                assert label is not None
                ref, _ = to_frame((label == c).float(), self.size, mode="nearest")
                boxes, valid = boxes_from_masks(ref > 0.5)
                if not bool(valid.any()):
                    continue
                jitter = self.val_box_jitter * self.size / 256.0
                gen = torch.Generator().manual_seed(c)
                boxes = jitter_boxes(boxes, jitter, self.size, generator=gen).to(image.device)
                idx = valid.nonzero()[:, 0].to(image.device)
                found = self.net(frame[idx], boxes[idx])[0].float()
                logits = found.new_full((len(frame), *found.shape[1:]), -1e4)
                logits[idx] = found
            else:
                if c not in supports:
                    continue
                if bank_size:
                    res = self.net.segment_stack(frame, supports[c], bank_size=bank_size)
                else:
                    res = self.net.predict(self.net.encode_images(frame), supports[c])
                logits = res["logits"]
            mask = from_frame(logits, self.size, (h, w), image.shape[2:]) > 0
            out[mask] = c
        return out

    def _bank_supports(self, device: torch.device) -> dict[int, Any]:
        out = {}
        for c, items in self._bank.items():
            images = torch.stack([img for img, _ in items]).to(device)
            masks = torch.stack([m for _, m in items]).to(device)
            out[c] = self.net.support_memory(self.net.encode_images(images), masks)
        return out

    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        image, label = _plain(batch["image"]), _plain(batch["label"])
        k = len((self.preprocessing or {}).get("labels") or {}) or int(label.max()) + 1
        classes = list(range(1, k))
        axis = int((self.preprocessing or {}).get("slice_axis", 2)) + 2 if image.ndim == 5 else None
        img = image.movedim(axis, 2)[0].transpose(0, 1) if axis else image  # (S, C, P, Q)
        lab = label.movedim(axis, 2)[0].transpose(0, 1) if axis else label
        supports = self._bank_supports(image.device) if self.net.prompt == "support" else None
        if supports is not None and self.val_bank_size:  # 3-D: the whole stack, in order
            pred = self.predict_slices(img, lab, classes, supports, self.val_bank_size)
        else:
            preds = []
            for start in range(0, len(img), self.val_batch_size):
                sl = slice(start, start + self.val_batch_size)
                preds.append(self.predict_slices(img[sl], lab[sl], classes, supports))
            pred = torch.cat(preds)
        if axis:
            pred = pred.transpose(0, 1)[None].movedim(2, axis)
        spacing = (self.preprocessing or {}).get("target_spacing") if axis else None
        self._score(stage, pred, label, k, spacing)

    # optimisation ------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer is not None:
            opt = self.optimizer(params)
        else:
            opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
        if self.lr_scheduler is not None:
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": self.lr_scheduler(opt), "interval": "epoch"},
            }
        trainer, kind, warm = self.trainer, self.schedule, self.warmup_epochs

        def factor(epoch: int) -> float:
            if epoch < warm:
                return (epoch + 1) / (warm + 1)
            total = trainer.max_epochs
            if kind == "constant" or total is None or total <= warm:
                return 1.0
            return (1.0 - min((epoch - warm) / (total - warm), 1.0)) ** 0.9

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        hparams = checkpoint.get("hyper_parameters")
        if isinstance(hparams, dict):  # the state dict holds every weight: never re-read them
            checkpoint["hyper_parameters"], removed = without_weight_files(hparams)
            if removed:
                checkpoint["pretrained_weights"] = removed  # provenance only
        if self._bank:  # support mode: keep the validation supports (uint8, ~2 MB per slice)
            checkpoint["support_bank"] = {
                c: [((img * 255).round().to(torch.uint8), m.to(torch.uint8)) for img, m in items]
                for c, items in self._bank.items()
            }
        super().on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        bank = checkpoint.get("support_bank") or {}
        self._bank = {
            int(c): [(img.float() / 255.0, m.float()) for img, m in items]
            for c, items in bank.items()
        }


class BCEWithPosWeight(nn.Module):
    """``BCEWithLogitsLoss(pos_weight)`` with a float ``pos_weight`` (YAML-friendly; SAM2-SGP
    uses 2). ``(logits, target)`` same shape -> scalar."""

    def __init__(self, pos_weight: float = 2.0) -> None:
        super().__init__()
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)), persistent=False)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)


def without_weight_files(hparams: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """``(hparams with the net's pretrained-weights paths set to None, the removed paths)``.

    The paths are :data:`WEIGHT_FILE_ARGS` of the net config (``{"class_path", "init_args"}``
    as LightningCLI saves it). A fine-tuned state dict holds every weight, so rebuilding the net
    from a checkpoint must not read the original SAM/SAM2 file (it may be gone). Returns a
    copy; ``hparams`` is not modified.
    """
    net = hparams.get("net")
    init = net.get("init_args") if isinstance(net, Mapping) else None
    if not isinstance(init, Mapping):
        return hparams, {}
    removed = {k: str(init[k]) for k in WEIGHT_FILE_ARGS if init.get(k) is not None}
    if not removed:
        return hparams, {}
    net = {**net, "init_args": {**init, **dict.fromkeys(removed)}}
    return {**hparams, "net": net}, removed


def _generator(task: ScoredSegmentationTask) -> torch.Generator:
    """Per-step generator seeded from the global RNG (so ``seed_everything`` fixes it)."""
    return torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
