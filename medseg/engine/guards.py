"""The non-finite guards every training task shares (RELIABILITY.md C.2 #34): a NaN/Inf gradient
stops training before the optimiser step, and a checkpoint with non-finite weights is never
written, so the last good ``last.ckpt`` survives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule

from medseg.errors import ModelError

__all__ = [
    "NonFiniteLossError",
    "check_finite_gradients",
    "check_finite_loss",
    "check_finite_weights",
]


class NonFiniteLossError(ModelError):
    """Training produced a NaN/Inf loss or gradient (exit 4); nothing was stepped or saved."""

    def __init__(self, message: str) -> None:
        super().__init__("non_finite_loss", message)


def check_finite_loss(task: LightningModule, loss: torch.Tensor, batch_idx: int) -> None:
    """Raise :class:`NonFiniteLossError` naming the step when ``loss`` is NaN/Inf (call in
    ``training_step`` before returning or back-propagating it). Under DDP every rank takes the
    same decision, so no rank hangs in a collective while another stops."""
    finite = bool(torch.isfinite(loss).all())
    if task._trainer is not None:
        finite = task.trainer.strategy.reduce_boolean_decision(finite, all=True)
    if not finite:
        raise NonFiniteLossError(
            f"non-finite loss at step {task.global_step} (epoch {task.current_epoch}, "
            f"batch {batch_idx}); training stopped, the last good checkpoint is kept"
        )


def check_finite_gradients(task: LightningModule) -> None:
    """Raise :class:`NonFiniteLossError` when a gradient of ``task`` is NaN/Inf (call from
    ``on_before_optimizer_step``). Skipped under fp16 loss scaling, which skips such steps."""
    if str(task.trainer.precision).startswith("16"):
        return
    for p in task.parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            raise NonFiniteLossError(
                f"non-finite gradient at step {task.global_step}; training stopped, "
                "the last good checkpoint is kept"
            )


def check_finite_weights(checkpoint: Mapping[str, Any], step: int) -> None:
    """Raise :class:`NonFiniteLossError` when the checkpoint's ``state_dict`` holds a NaN/Inf
    float tensor (call from ``on_save_checkpoint``: the save is then abandoned)."""
    for name, value in checkpoint.get("state_dict", {}).items():
        if torch.is_tensor(value) and value.is_floating_point() and not value.isfinite().all():
            raise NonFiniteLossError(
                f"refusing to save a checkpoint with non-finite weights ({name}) at step "
                f"{step}; the last good checkpoint is kept"
            )
