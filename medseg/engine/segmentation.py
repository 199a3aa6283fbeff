"""``SegmentationTask``: trains and evaluates an injected segmentation net (2-D or 3-D).

The net is any ``nn.Module`` mapping ``(B, C, *spatial)`` to logits ``(B, K, *spatial)`` (a list
``[full_res, lower_res, ...]`` in training mode when deeply supervised). The task owns the loss,
the metrics, sliding-window evaluation and the optimiser; it never imports a model registry:
LightningCLI's ``save_hyperparameters`` stores the net's ``class_path``/``init_args`` and the
``preprocessing`` dict, so ``SegmentationTask.load_from_checkpoint(path)`` rebuilds both.

Fault rules (RELIABILITY.md C.2 #34): a non-finite loss (or, outside fp16 loss scaling, a
non-finite gradient) raises :class:`NonFiniteLossError` ``"non-finite loss at step k"`` *before*
the optimiser step, and :meth:`on_save_checkpoint` refuses to write non-finite weights, so a NaN
can never reach ``last.ckpt``; the last good checkpoint stays.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from monai.inferers import sliding_window_inference
from torch import nn

from medseg.engine.base import ScoredSegmentationTask
from medseg.engine.guards import (
    NonFiniteLossError,
    check_finite_loss,
)
from medseg.errors import ModelError
from medseg.losses import DeepSupervisionLoss
from medseg.metrics import SegmentationMetrics

__all__ = ["NonFiniteLossError", "SegmentationTask"]

SCHEDULES = ("poly", "cosine", "constant")


class SegmentationTask(ScoredSegmentationTask):
    """Supervised segmentation with Dice+CE, sliding-window validation, Dice/HD95 metrics.

    Args:
        net: ``(B, C, *spatial)`` -> logits ``(B, K, *spatial)`` (or a deep-supervision list).
        loss: ``(logits, label (B, 1, *spatial))`` -> scalar; default nnU-Net's Dice+CE with
            deep-supervision weights (:class:`medseg.losses.DeepSupervisionLoss`).
        optimizer: ``params -> Optimizer`` (LightningCLI ``class_path``); default SGD
            (lr 1e-2, momentum 0.99, Nesterov, weight decay 3e-5) as in nnU-Net.
        lr_scheduler: ``optimizer -> scheduler`` stepped per epoch; overrides ``schedule``.
        schedule: built-in per-epoch schedule when ``lr_scheduler`` is None: ``"poly"``
            (``(1 - epoch / max_epochs) ** 0.9``), ``"cosine"`` or ``"constant"``. It reads
            ``trainer.max_epochs`` live, so raising ``max_epochs`` on resume stretches it.
        preprocessing: the dict of :mod:`medseg.transforms.preprocess` (linked from the data
            module by the CLI); gives the labels, the 2-D slice axis, the spacing and the patch.
        sw_roi_size: sliding-window size (``len == spatial_dims``); default the patch size.
        sw_overlap: window overlap fraction (0.5 = nnU-Net; cost grows with it, PERF.md §4).
        sw_batch_size: windows per forward pass.
        hd95: compute HD95 during validation/test (distance transforms cost CPU time).
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        schedule: str = "poly",
        preprocessing: dict[str, Any] | None = None,
        sw_roi_size: list[int] | None = None,
        sw_overlap: float = 0.5,
        sw_batch_size: int = 2,
        hd95: bool = True,
    ) -> None:
        super().__init__()
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if not 0.0 <= sw_overlap < 1.0:
            raise ValueError(f"sw_overlap must be in [0, 1), got {sw_overlap}")
        with warnings.catch_warnings():  # a net passed as an object is pickled on purpose
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")
            self.save_hyperparameters()
        # instantiation links (data.preprocessing) arrive after the CLI captured the config
        self.hparams["preprocessing"] = preprocessing
        self.net = net
        self.loss_fn = loss if loss is not None else DeepSupervisionLoss()
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.schedule = schedule
        self.preprocessing = preprocessing
        self.sw_roi_size = sw_roi_size
        self.sw_overlap = sw_overlap
        self.sw_batch_size = sw_batch_size
        self.hd95 = hd95
        self._metrics: dict[str, SegmentationMetrics] = {}

    # inference ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, C, *spatial)`` -> full-resolution logits ``(B, K, *spatial)``."""
        out = self.net(x)
        return out[0] if isinstance(out, (list, tuple)) else out

    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Whole-volume logits by Gaussian-weighted sliding windows.

        ``image`` ``(B, C, X, Y, Z)`` on the preprocessed grid -> ``(B, K, X, Y, Z)``. A 2-D net
        (``preprocessing["spatial_dims"] == 2``) runs slice by slice across ``slice_axis``.
        """
        image = _plain(image)
        pre = self.preprocessing or {}
        dims = int(pre.get("spatial_dims", image.ndim - 2))
        if dims == image.ndim - 2:
            roi = self._roi(image.shape[2:])
            return self._swi(image, roi)
        if dims != 2 or image.ndim != 5:
            raise ValueError(
                f"a {dims}-D net cannot predict an input of shape {tuple(image.shape)}"
            )
        axis = int(pre.get("slice_axis", 2)) + 2
        b, c = image.shape[:2]
        moved = image.movedim(axis, 2)  # (B, C, S, P, Q)
        s, p, q = moved.shape[2:]
        slices = moved.permute(0, 2, 1, 3, 4).reshape(b * s, c, p, q)
        logits = self._swi(slices, self._roi((p, q)))  # (B*S, K, P, Q)
        k = logits.shape[1]
        return logits.reshape(b, s, k, p, q).permute(0, 2, 1, 3, 4).movedim(2, axis)

    # training ------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        image, label = _plain(batch["image"]), _plain(batch["label"])
        loss = self.loss_fn(self.net(image), label)
        check_finite_loss(self, loss, batch_idx)
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(image)
        )
        return loss

    # prediction (validation and test hooks: ScoredSegmentationTask) ---------------------------
    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        """Arg-max labels mapped back onto each input grid.

        Returns one dict per volume: ``case``, ``path`` (the input file), ``pred`` uint8
        ``(X, Y, Z)`` on the input's voxel grid and ``affine`` ``(4, 4)`` (voxel -> RAS+ mm).
        """
        from monai.data import MetaTensor, decollate_batch
        from monai.transforms import Invertd
        from monai.transforms.utils import reset_ops_id

        from medseg.transforms.preprocess import inference_transforms

        if self.preprocessing is None:
            raise ModelError("no_preprocessing", "this checkpoint holds no preprocessing")
        labels = self.predict_logits(batch["image"]).argmax(1, keepdim=True).float()
        invert = Invertd("pred", inference_transforms(self.preprocessing), orig_keys="image")
        results = []
        for item, pred in zip(decollate_batch(batch), labels, strict=True):
            image = reset_ops_id(item["image"])  # recorded by an equal, not the same, Compose
            item["pred"] = MetaTensor(pred.cpu(), affine=image.affine, meta=dict(image.meta))
            out = invert(item)["pred"]
            results.append(
                {
                    "case": item.get("case"),
                    "path": image.meta.get("filename_or_obj"),
                    "pred": out[0].round().to(torch.uint8).numpy(),
                    "affine": out.affine.numpy(),
                }
            )
        return results

    # optimisation ------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer is not None:
            opt = self.optimizer(params)
        else:
            opt = torch.optim.SGD(params, lr=1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
        if self.lr_scheduler is not None:
            sched = self.lr_scheduler(opt)
            config = {"scheduler": sched, "interval": "epoch"}
            if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                config["monitor"] = "val/dice"
            return {"optimizer": opt, "lr_scheduler": config}
        if self.schedule == "constant":
            return opt
        trainer, kind = self.trainer, self.schedule

        def factor(epoch: int) -> float:  # a closure, so the scheduler state holds no task
            total = trainer.max_epochs
            if total is None or total < 1:
                return 1.0
            t = min(epoch / total, 1.0)
            return (1.0 - t) ** 0.9 if kind == "poly" else 0.5 * (1.0 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    # helpers -----------------------------------------------------------------------------------
    @property
    def label_names(self) -> list[str]:
        """Foreground class names in class order (``class<i>`` without preprocessing)."""
        labels = (self.preprocessing or {}).get("labels")
        if labels:
            return [labels[str(i)] for i in range(1, len(labels))]
        return []

    def _roi(self, spatial: Sequence[int]) -> list[int]:
        if self.sw_roi_size is not None:
            return [int(r) for r in self.sw_roi_size]
        patch = (self.preprocessing or {}).get("patch_size")
        if patch is not None and len(patch) == len(spatial):
            return [int(p) for p in patch]
        return [int(s) for s in spatial]

    def _swi(self, x: torch.Tensor, roi: Sequence[int]) -> torch.Tensor:
        out = sliding_window_inference(
            x, roi, self.sw_batch_size, self, overlap=self.sw_overlap, mode="gaussian"
        )
        return _plain(out)  # type: ignore[arg-type]

    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        image, label = _plain(batch["image"]), _plain(batch["label"])
        logits = self.predict_logits(image)
        loss = self.loss_fn(logits, label)
        self.log(f"{stage}/loss", loss, on_epoch=True, batch_size=len(image), sync_dist=True)
        spacing = (self.preprocessing or {}).get("target_spacing")
        self._score(stage, logits, label, logits.shape[1], spacing)


def _plain(x: Any) -> torch.Tensor:
    """MetaTensor -> plain tensor (metadata is not needed inside the net or the loss)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else x
