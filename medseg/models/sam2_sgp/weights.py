"""Load official SAM2 weights into SAM2-SGP (local file, ``weights_only=True``, strict keys).

SAM2 checkpoints hold ``{"model": state_dict}``; every key of SGP's ``sam2.*`` part (LoRA
factors excepted) must be in it with the same shape, and it may hold nothing else. Files are
read by :func:`medseg.models.weights.read_state_dict` (regular files only, integrity checked).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medseg.models.weights import load_strict_subset, read_state_dict

__all__ = ["init_pma_from_sam2", "load_sam2_weights", "sam2_keys"]


def sam2_keys(net: nn.Module) -> list[str]:
    """SGP's SAM2 state-dict keys without the ``sam2.`` prefix and without LoRA factors."""
    return [k for k in net.sam2.state_dict() if ".lora_" not in k]


def load_sam2_weights(net: nn.Module, path: str | Path) -> None:
    """Copy an official SAM2 checkpoint into ``net.sam2`` (strict; ``ModelError`` otherwise)."""
    state = read_state_dict(path, what="sam2_checkpoint")
    load_strict_subset(net.sam2, state, sam2_keys(net), path, what="SAM2")


def init_pma_from_sam2(net: nn.Module) -> int:
    """Initialise the PMA decoder from SAM2's mask decoder wherever the parameter names (PMA
    names mirror SAM's ``transformer.layers.*``, ``transformer.final_attn_token_to_image``,
    ``mask_tokens``, ``output_upscaling``) and shapes agree; returns the tensors copied."""
    src = net.sam2.sam_mask_decoder.state_dict()
    src = {k.removeprefix("transformer."): v for k, v in src.items()}
    own = net.pma_decoder.state_dict()
    take = {k: v for k, v in src.items() if k in own and own[k].shape == v.shape}
    with torch.no_grad():
        net.pma_decoder.load_state_dict(take, strict=False)
    return len(take)
