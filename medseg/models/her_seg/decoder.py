"""HER-Seg's prompt-free mask decoder (code: ``SAM/ecm_decoder.py``, "ECM-Decoder"; paper v2:
"ME-Decoder"), vectorised over the batch.

A SAM mask decoder without prompts and without the IoU head: learned output tokens (an IoU token
and mask tokens) attend to the image embedding through SAM's two-way transformer; the embedding is
upscaled 4x by two transposed convs; a hypernetwork MLP per output turns the **IoU token's**
output into a ``dim / 8`` vector whose dot product with the upscaled embedding is a mask. (The
released code feeds the IoU-token output, not the mask tokens' outputs, to every hypernetwork;
we keep that, FIDELITY.md flags it.)
"""

from __future__ import annotations

import torch
from segment_anything.modeling.common import LayerNorm2d
from segment_anything.modeling.mask_decoder import MLP
from torch import Tensor, nn

__all__ = ["ECMDecoder"]


class ECMDecoder(nn.Module):
    """Masks from an image embedding with SAM's two-way transformer and no prompts.

    Args:
        transformer_dim: embedding channels ``d`` (a multiple of 8).
        transformer: ``(src (B, d, h, w), pos (B, d, h, w), tokens (B, T, d))`` ->
            ``(tokens (B, T, d), src (B, h * w, d))``, e.g. SAM's ``TwoWayTransformer``.
        num_outputs: masks ``K``, one hypernetwork MLP each (the released code: 3 MLPs, of which
            mask 0 is used).
        num_mask_tokens: mask tokens in the token sequence (3 in the code); their outputs are
            unused, they only take part in the attention.

    Shapes:
        image_embeddings: ``(B, d, h, w)``; image_pe: ``(1 | B, d, h, w)``; dense_embeddings:
        ``(1 | B, d, 1 | h, 1 | w)`` added to the image embedding -> mask logits
        ``(B, K, 4h, 4w)``.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_outputs: int = 1,
        num_mask_tokens: int = 3,
    ) -> None:
        super().__init__()
        if num_outputs < 1 or num_mask_tokens < 0 or transformer_dim % 8:
            raise ValueError(
                f"need num_outputs >= 1, num_mask_tokens >= 0 and transformer_dim % 8 == 0; got "
                f"{num_outputs}, {num_mask_tokens}, {transformer_dim}"
            )
        d = transformer_dim
        self.transformer_dim = d
        self.transformer = transformer
        self.iou_token = nn.Embedding(1, d)
        self.mask_tokens = nn.Embedding(num_mask_tokens, d)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(d, d // 4, kernel_size=2, stride=2),
            LayerNorm2d(d // 4),
            nn.GELU(),
            nn.ConvTranspose2d(d // 4, d // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(d, d, d // 8, 3) for _ in range(num_outputs)
        )

    def forward(
        self, image_embeddings: Tensor, image_pe: Tensor, dense_embeddings: Tensor
    ) -> Tensor:
        b, d, h, w = image_embeddings.shape
        tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        tokens = tokens.unsqueeze(0).expand(b, -1, -1)  # (B, 1 + M, d); no sparse prompts
        src = image_embeddings + dense_embeddings
        pos = image_pe.expand(b, -1, -1, -1)
        hs, src = self.transformer(src, pos, tokens)
        iou_out = hs[:, 0, :]  # (B, d): the IoU token's output drives every hypernetwork
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, d, h, w))
        hyper = torch.stack([mlp(iou_out) for mlp in self.output_hypernetworks_mlps], dim=1)
        return torch.einsum("bkc,bchw->bkhw", hyper, upscaled)  # (B, K, 4h, 4w)
