"""Restoration tasks: ``RestorationTask`` (RAT and any net ``degraded -> clean``) and
``AdversarialRestorationTask`` (DISGAN: generator + discriminator, manual optimisation).

Batches come from :class:`medseg.data.RestorationDataModule`: ``input`` ``(B, 1, *s)``,
``target`` ``(B, 1, *S)`` with ``S = scale * s``, and ``regions`` ``(B, *S)`` for RAT. The
``restoration`` dict (linked from the data module by the CLI, stored in every checkpoint) tells
``medseg restore`` how the pairs were made: dimensionality, scale, degradations, intensity map.

Validation logs ``val/psnr``, ``val/ssim`` (MONAI, data range of the clean target) and the same
for the degraded input brought to the target grid (``val/psnr_input``; nearest upsampling for
super-resolution), so ``val/psnr_gain`` is the improvement in dB. Checkpoints keep the best
``val/psnr``. The non-finite guards of :mod:`medseg.engine.guards` apply as in segmentation.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn

from medseg.engine.base import MedsegTask
from medseg.engine.guards import check_finite_gradients, check_finite_loss
from medseg.losses.adversarial import (
    FeatureLoss,
    instance_noise_sigma,
    ragan_discriminator_loss,
    ragan_generator_loss,
)
from medseg.losses.restoration import FocalRegionLoss
from medseg.metrics import RestorationMetrics

__all__ = ["AdversarialRestorationTask", "RestorationTask"]


class RestorationTask(MedsegTask):
    """Supervised restoration: ``net(input[, regions]) -> target``.

    Args:
        net: ``(B, C, *s)`` (plus ``regions`` ``(B, *S)`` when its ``forward`` takes them) ->
            ``(B, C, *S)``.
        loss: ``(pred, target[, regions]) -> scalar``; default RAT's focal region loss
            (beta 1e-3) for nets that take regions, else L1.
        optimizer: ``params -> Optimizer``; default Adam lr 2e-4, betas (0.5, 0.999) (RAT).
        schedule: ``"cosine"`` (per step, to ``min_lr`` over the run's steps, RAT) or
            ``"constant"``.
        min_lr: end of the cosine schedule.
        restoration: the data module's ``restoration`` dict (linked by the CLI).
    """

    checkpoint_metric = "val/psnr"

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module | None = None,
        optimizer: OptimizerCallable | None = None,
        schedule: str = "cosine",
        min_lr: float = 1e-6,
        restoration: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {schedule!r}")
        with warnings.catch_warnings():  # a net passed as an object is pickled on purpose
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`")
            self.save_hyperparameters()
        self.hparams["restoration"] = restoration  # linked after the CLI captured the config
        _check_agrees(net, restoration)
        self.net = net
        self.takes_regions = _takes(net.forward, "regions")
        if loss is None:
            loss = FocalRegionLoss(beta=1e-3) if self.takes_regions else nn.L1Loss()
        self.loss_fn = loss
        self._loss_takes_regions = _takes(loss.forward, "regions")
        self.optimizer = optimizer
        self.schedule = schedule
        self.min_lr = min_lr
        self.restoration = restoration
        self._metrics: dict[str, RestorationMetrics] = {}

    def forward(self, x: torch.Tensor, regions: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, C, *s)`` normalised degraded image -> ``(B, C, *S)`` restored."""
        if self.takes_regions:
            return self.net(x, regions)
        return self.net(x)

    # training ------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, y, regions = _unpack(batch)
        pred = self(x, regions)
        loss = self._loss(pred, y, regions)
        check_finite_loss(self, loss, batch_idx)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(x))
        return loss

    def configure_optimizers(self) -> Any:
        params = [p for p in self.net.parameters() if p.requires_grad]
        opt = (
            self.optimizer(params)
            if self.optimizer is not None
            else torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))
        )
        if self.schedule == "constant":
            return opt
        return {"optimizer": opt, "lr_scheduler": self._cosine(opt)}

    # helpers -----------------------------------------------------------------------------------
    def _loss(self, pred, target, regions) -> torch.Tensor:
        if self._loss_takes_regions:
            return self.loss_fn(pred, target, regions)
        return self.loss_fn(pred, target)

    def _cosine(self, opt: torch.optim.Optimizer) -> dict[str, Any]:
        trainer, base = self.trainer, [g["lr"] for g in opt.param_groups]
        floor = self.min_lr

        def factor(step: int) -> float:  # reads the run length live (resume may extend it)
            total = trainer.estimated_stepping_batches
            if not math.isfinite(total) or total < 1:
                return 1.0
            t = min(step / total, 1.0)
            lo = floor / base[0] if base[0] > 0 else 0.0
            return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * t))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"scheduler": sched, "interval": "step"}

    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        x, y, regions = _unpack(batch)
        pred = self(x, regions)
        self.log(f"{stage}/loss", F.l1_loss(pred, y), on_epoch=True, batch_size=len(x))
        baseline = x if x.shape == y.shape else F.interpolate(x, size=y.shape[2:], mode="nearest")
        self._metrics.setdefault(stage, RestorationMetrics()).update(pred, y, baseline)

    def _log_metrics(self, stage: str) -> None:
        result = self._epoch_results(stage)
        if "psnr" in result:
            self.log(f"{stage}/psnr", result.pop("psnr"), prog_bar=True, sync_dist=True)
        self.log_dict({f"{stage}/{k}": v for k, v in result.items()}, sync_dist=True)


class AdversarialRestorationTask(RestorationTask):
    """DISGAN's training: per batch one generator step, then one discriminator step
    (Lightning manual optimisation; MODELS.md §6(c)).

    ``net`` holds ``generator``, ``discriminator`` and an optional frozen ``feature_extractor``
    (:class:`medseg.models.disgan.DISGAN`). Generator loss ``L1 + adv_weight * RaGAN_G +
    feature_weight * L1(features)``; discriminator loss RaGAN_D. Both discriminator inputs get
    the same Gaussian instance noise with ``sigma = instance_noise_sigma(epoch, max_epochs)``
    (zero at the last epoch), when ``instance_noise`` is on.

    Args:
        net: the DISGAN container.
        optimizer: generator optimiser (default Adam 1e-4).
        optimizer_d: discriminator optimiser (default Adam 1e-4).
        adv_weight, feature_weight: loss weights (5e-3, 1e-2 in the released code).
        instance_noise: add the decaying instance noise.
        restoration: linked from the data module.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerCallable | None = None,
        optimizer_d: OptimizerCallable | None = None,
        adv_weight: float = 5e-3,
        feature_weight: float = 1e-2,
        instance_noise: bool = True,
        restoration: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            net, loss=nn.L1Loss(), optimizer=optimizer, schedule="constant", restoration=restoration
        )
        self.automatic_optimization = False
        self.optimizer_d = optimizer_d
        self.adv_weight = adv_weight
        self.feature_weight = feature_weight
        self.instance_noise = instance_noise
        extractor = getattr(net, "feature_extractor", None)
        self.feature_loss = None if extractor is None else FeatureLoss(extractor)

    def forward(self, x: torch.Tensor, regions: torch.Tensor | None = None) -> torch.Tensor:
        return self.net.generator(x)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x, hr, _ = _unpack(batch)
        opt_g, opt_d = self.optimizers()
        gen, disc = self.net.generator, self.net.discriminator
        sigma = self.noise_sigma
        noise = torch.randn_like(hr) * sigma if sigma > 0 else torch.zeros_like(hr)

        self.toggle_optimizer(opt_g)  # generator step: the discriminator gets no gradient
        sr = gen(x)
        d_real, d_fake = disc(hr + noise), disc(sr + noise)
        l1 = F.l1_loss(sr, hr)
        adv = ragan_generator_loss(d_real.detach(), d_fake)
        loss_g = l1 + self.adv_weight * adv
        if self.feature_loss is not None and self.feature_weight:
            loss_g = loss_g + self.feature_weight * self.feature_loss(sr, hr)
        check_finite_loss(self, loss_g, batch_idx)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        check_finite_gradients(self)
        opt_g.step()
        self.untoggle_optimizer(opt_g)

        self.toggle_optimizer(opt_d)  # discriminator step on the detached output
        loss_d = ragan_discriminator_loss(disc(hr + noise), disc(sr.detach() + noise))
        check_finite_loss(self, loss_d, batch_idx)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d)
        check_finite_gradients(self)
        opt_d.step()
        self.untoggle_optimizer(opt_d)

        n = len(x)
        self.log("train/loss", loss_g, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log_dict(
            {"train/l1": l1, "train/adv_g": adv, "train/loss_d": loss_d, "train/noise": sigma},
            on_step=True,
            on_epoch=True,
            batch_size=n,
        )

    @property
    def noise_sigma(self) -> float:
        """Instance-noise standard deviation for the current epoch (0 when disabled, and when
        the run has no epoch budget, e.g. ``max_epochs=-1`` with ``max_steps``)."""
        epochs = None if self._trainer is None else self.trainer.max_epochs
        if not self.instance_noise or not epochs or epochs < 1:
            return 0.0
        return instance_noise_sigma(self.current_epoch, int(epochs))

    def configure_optimizers(self) -> Any:
        g = [p for p in self.net.generator.parameters() if p.requires_grad]
        d = [p for p in self.net.discriminator.parameters() if p.requires_grad]
        opt_g = self.optimizer(g) if self.optimizer is not None else torch.optim.Adam(g, lr=1e-4)
        opt_d = (
            self.optimizer_d(d) if self.optimizer_d is not None else torch.optim.Adam(d, lr=1e-4)
        )
        return [opt_g, opt_d]


def _check_agrees(net: nn.Module, restoration: dict[str, Any] | None) -> None:
    """The net must upsample by the data's factor and have its dimensionality."""
    if not restoration:
        return
    want, has = int(restoration.get("scale", 1)), int(getattr(net, "scale", 1))
    if want != has:
        raise ValueError(
            f"the degradations shrink images by {want} but the net upsamples by {has}: set the "
            f"net's scale to {want} (e.g. --model.init_args.net.init_args.scale={want}; "
            "configs/model/rat_x2.yaml for RAT)"
        )
    dims = getattr(net, "spatial_dims", None)
    if dims is not None and int(dims) != int(restoration.get("spatial_dims", dims)):
        raise ValueError(
            f"the net is {dims}-D but the data module makes {restoration['spatial_dims']}-D "
            "pairs: set data.init_args.spatial_dims to match"
        )


def _takes(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _unpack(batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    def plain(t: Any) -> Any:
        return t.as_tensor() if hasattr(t, "as_tensor") else t

    regions = batch.get("regions")
    return (
        plain(batch["input"]),
        plain(batch["target"]),
        None if regions is None else plain(regions),
    )
