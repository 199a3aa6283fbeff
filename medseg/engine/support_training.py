"""Training steps of support-prompted nets (SAM2-SGP) for
:class:`~medseg.engine.promptable.PromptableSegmentationTask`.

Both steps pick one foreground class per step and return
``(1 - w) * loss(final) + w * loss(pseudo)``, ``w = pseudo_weight * pseudo_decay ** epoch``
(``None`` when there is nothing to learn from):

- :func:`slice_step` (2-D): every slice holding the class is a support for the others
  (leave-one-out, so a query never sees its own mask).
- :func:`chunk_step` (3-D, MODELS.md §7.2): chunks of ``L`` consecutive slices
  (:class:`medseg.data.SliceChunkDataModule`). Each chunk is propagated slice by slice in order
  with the net's own memory bank (at most ``bank_size`` memories of its previous predictions,
  gradients kept) on top of supports = the slices holding the class in the chunks of *other*
  cases of the batch; the loss is averaged over the chunk's slices, then over the chunks, and
  back-propagated once per step (once per chunk when a batch holds one query chunk).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from medseg.transforms.prompts import low_res_target, to_frame

__all__ = ["chunk_step", "pick_class", "slice_step"]


def pick_class(lab: Tensor, gen: torch.Generator) -> int | None:
    """A random foreground class present in ``lab`` (None when there is none)."""
    classes = [int(c) for c in lab.unique() if c > 0]
    if not classes:
        return None
    return classes[int(torch.randint(len(classes), (1,), generator=gen))]


def slice_step(task: Any, frame: Tensor, lab: Tensor, gen: torch.Generator) -> Tensor | None:
    """2-D leave-one-out step on net-frame slices ``frame (N, C, S, S)``, ``lab (N, 1, S, S)``."""
    net = task.net
    c = pick_class(lab, gen)
    if c is None:
        return None
    target = (lab == c).float()
    has = target.flatten(1).any(1)
    if int(has.sum()) < 2:
        return None  # leave-one-out needs two slices with the object
    sup = has.nonzero()[:, 0]
    task._remember(c, frame[sup], target[sup])
    feats = net.encode_images(frame)
    support = net.support_memory(net.select(feats, sup), target[sup])
    exclude = sup[None, :] == torch.arange(len(frame), device=frame.device)[:, None]
    queries = (~exclude).any(1)
    out = net.predict(feats, support, exclude=exclude, generator=gen)
    return _loss(task, out, target, queries)


def chunk_step(
    task: Any,
    image: Tensor,
    label: Tensor,
    cases: Sequence[str] | None,
    gen: torch.Generator,
    *,
    slice_axis: int,
    bank_size: int,
) -> Tensor | None:
    """3-D step on chunks ``image (N, C, X, Y, Z)``, ``label (N, 1, X, Y, Z)`` holding ``L``
    consecutive slices across ``slice_axis`` (0..2); ``cases`` names each chunk's volume (chunks
    of one case never support each other; None = every chunk is its own case)."""
    net, size = task.net, task.size
    img = image.movedim(slice_axis + 2, 1)  # (N, L, C, P, Q)
    n, length = img.shape[:2]
    frame, _ = to_frame(img.flatten(0, 1), size)
    lab, _ = to_frame(label.movedim(slice_axis + 2, 1).flatten(0, 1).float(), size, mode="nearest")
    c = pick_class(lab, gen)
    if c is None:
        return None
    target = (lab == c).float()  # (N * L, 1, S, S)
    names = list(cases) if cases is not None and len(cases) == n else [str(i) for i in range(n)]
    group = torch.tensor([names.index(name) for name in names], device=frame.device)
    slice_group = group.repeat_interleave(length)
    sup = target.flatten(1).any(1).nonzero()[:, 0]
    if not bool((slice_group[sup][None, :] != group[:, None]).any()):
        return None  # no chunk has a support from another case
    task._remember(c, frame[sup], target[sup])
    feats = net.encode_images(frame)
    support = net.support_memory(net.select(feats, sup), target[sup])
    losses = []
    for i in range(n):
        exclude = slice_group[sup] == group[i]
        if bool(exclude.all()):
            continue
        rows = torch.arange(i * length, (i + 1) * length, device=frame.device)
        out = net.segment_stack(
            net.select(feats, rows), support, bank_size=bank_size, exclude=exclude, generator=gen
        )
        losses.append(_loss(task, out, target[rows]))
    return torch.stack(losses).mean()


def _loss(task: Any, out: dict[str, Tensor], target: Tensor, rows: Tensor | None = None) -> Tensor:
    """``(1 - w) * loss(final) + w * loss(pseudo)`` on ``rows`` (default all)."""
    w = task.pseudo_weight * task.pseudo_decay**task.current_epoch
    pick = slice(None) if rows is None else rows
    main = task.loss_fn(out["logits"][pick], low_res_target(target, out["logits"])[pick])
    pseudo_t = low_res_target(target, out["pseudo_logits"])
    pseudo = task.loss_fn(out["pseudo_logits"][pick], pseudo_t[pick])
    return (1.0 - w) * main + w * pseudo
