"""Pseudo-mask attention (PMA) decoder of SAM2-SGP (released ``MaskDecoder2_512``), fixed.

The released PMA is numerically inert (the pseudo-mask goes through a softmax over a size-1
channel, i.e. becomes all ones; MODELS.md §2(f)). Here the pseudo-mask probability ``p``
(``sigmoid`` of the pseudo-mask logits on the token grid) really weights attention:

- token -> image: ``softmax(q k^T / sqrt(d) + log p_k)`` = attention probabilities times ``p`` of
  the key (image) token, renormalised over the keys (``renormalise=False``: multiplied only);
- image -> token: each image token's update is scaled by its own ``p``.

Layout (released order): per block cross-attention token -> image (dropout 0.2 on the update),
token self-attention, MLP, cross-attention image -> token; a final token -> image attention;
SAM-style upscaling with the high-resolution features; a skip that concatenates the pseudo
decoder's upscaled embedding; two more transposed convolutions to 4x the low-res size
(= the input size); 5-layer hypernetwork MLPs. Parameter names follow SAM's decoder where the
shapes agree, so it can be initialised from SAM2's mask decoder.

``code_compat=True`` reproduces the released, degenerate behaviour for comparison: the pseudo-mask
and the token mixer's map go through a softmax over their size-1 channel (all ones), so the
pseudo-mask changes nothing, the embedding is doubled (``src + src * 1``) and the token mixer gets
no gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from sam2.modeling.sam2_utils import MLP, LayerNorm2d
from torch import Tensor, nn

__all__ = ["MaskedAttention", "PMADecoder", "TokenMixer"]


class MaskedAttention(nn.Module):
    """SAM attention (names ``q_proj``/``k_proj``/``v_proj``/``out_proj``) with optional
    key weights and per-query output scales (see :meth:`forward`)."""

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.internal_dim, self.num_heads = dim // downsample_rate, num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide dim / downsample_rate")
        self.q_proj = nn.Linear(dim, self.internal_dim)
        self.k_proj = nn.Linear(dim, self.internal_dim)
        self.v_proj = nn.Linear(dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, dim)

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        key_weight: Tensor | None = None,
        renormalise: bool = True,
        query_scale: Tensor | None = None,
    ) -> Tensor:
        """``key_weight`` ``(B, 1, 1, Nk)`` in [0, 1] multiplies the attention probabilities
        (then renormalised over the keys, or not); ``query_scale`` ``(B, Nq, 1)`` scales the
        output per query."""
        b = q.shape[0]
        h = self.num_heads
        q, k, v = (
            p(x).view(b, x.shape[1], h, -1).transpose(1, 2)
            for p, x in ((self.q_proj, q), (self.k_proj, k), (self.v_proj, v))
        )
        if key_weight is None or renormalise:
            bias = None
            if key_weight is not None:  # same dtype as q: fused SDPA kernels insist
                bias = torch.log(key_weight.float().clamp_min(1e-6)).to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:
            attn = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(-1)
            out = (attn * key_weight.to(attn.dtype)) @ v
        out = self.out_proj(out.transpose(1, 2).reshape(b, -1, self.internal_dim))
        return out if query_scale is None else out * query_scale


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, skip_first_pe: bool) -> None:
        super().__init__()
        self.cross_attn_token_to_image = MaskedAttention(dim, heads, 2)
        self.norm1 = nn.LayerNorm(dim)
        self.self_attn = MaskedAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_dim, dim, 2, activation=nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = MaskedAttention(dim, heads, 2)
        self.norm4 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(0.2)
        self.skip_first_pe = skip_first_pe

    def forward(self, queries, keys, query_pe, key_pe, p, renormalise):
        """``p``: pseudo-mask probability per image token ``(B, HW, 1)``."""
        q, k = queries + query_pe, keys + key_pe
        weight = p.transpose(1, 2)[:, None]  # (B, 1, 1, HW)
        upd = self.cross_attn_token_to_image(q, k, keys, weight, renormalise)
        queries = self.norm1(queries + self.drop(upd))
        q = queries if self.skip_first_pe else queries + query_pe
        queries = self.norm2(queries + self.self_attn(q, q, queries))
        queries = self.norm3(queries + self.mlp(queries))
        q, k = queries + query_pe, keys + key_pe
        upd = self.cross_attn_image_to_token(k, q, queries, query_scale=p)
        return queries, self.norm4(keys + upd)


class TokenMixer(nn.Module):
    """Optional released "msk_feat" mixer: self-attention + MLP over the mask tokens' image
    responses (feature size ``N`` = tokens of the grid), then Linear(tokens -> 1) + ReLU ->
    a gating map; the image embedding becomes ``src * (1 + sigmoid(map))`` (the release's
    channel softmax is replaced by a sigmoid, see FIDELITY.md). ``(B, T, N)`` -> ``(B, 1, N)``.
    At 1024 px ``N = 4096`` and this module has ~201 M parameters (released size)."""

    def __init__(self, num_tokens: int, grid_tokens: int, heads: int = 8) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(grid_tokens, heads, batch_first=True)
        self.attn2 = nn.MultiheadAttention(grid_tokens, heads, batch_first=True)
        self.norm = nn.LayerNorm(grid_tokens)
        self.mlp = MLP(grid_tokens, 2 * grid_tokens, grid_tokens, 2)
        self.reduce = nn.Linear(num_tokens, 1)

    def forward(self, feat: Tensor) -> Tensor:
        x = feat + self.attn(feat, feat, feat, need_weights=False)[0]
        x = x + self.attn2(x, x, x, need_weights=False)[0]
        x = x + self.mlp(self.norm(x))
        return torch.relu(self.reduce(x.transpose(1, 2))).transpose(1, 2)


class PMADecoder(nn.Module):
    """Box-prompted mask decoder whose attention is weighted by the pseudo-mask.

    Args:
        dim: transformer width ``C`` (SAM2: 256). num_heads / mlp_dim / depth: two-way transformer.
        num_mask_tokens: mask tokens (released: 4; the first one gives the mask).
        final_dim: channels after the two extra transposed convolutions (released: 16).
        renormalise: renormalise token -> image attention after weighting.
        token_mixer_tokens: ``N`` for the optional :class:`TokenMixer`; 0 = off (default).
        code_compat: the released, inert PMA (module docstring); default off.

    ``forward(image_embeddings (B, C, g, g), image_pe (1, C, g, g), sparse (B, T, C),
    dense (B, C, g, g), high_res (feat_s0 (B, C/8, 4g, 4g), feat_s1 (B, C/4, 2g, 2g)),
    pseudo_prob (B, 1, g, g) in [0, 1], up_embed (B, C/8, 4g, 4g), msk_feat (B, 4, g*g) | None)``
    -> mask logits ``(B, 1, 16g, 16g)``.
    """

    def __init__(
        self,
        dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        depth: int = 2,
        num_mask_tokens: int = 4,
        final_dim: int = 16,
        renormalise: bool = True,
        token_mixer_tokens: int = 0,
        code_compat: bool = False,
    ) -> None:
        super().__init__()
        self.renormalise, self.code_compat = renormalise, code_compat
        self.mask_tokens = nn.Embedding(num_mask_tokens, dim)
        self.layers = nn.ModuleList(_Block(dim, num_heads, mlp_dim, i == 0) for i in range(depth))
        self.final_attn_token_to_image = MaskedAttention(dim, num_heads, 2)
        self.norm_final_attn = nn.LayerNorm(dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, 2, 2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, 2, 2),
            nn.GELU(),
        )
        self.skip_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim // 4, 2 * final_dim, 2, 2),
            LayerNorm2d(2 * final_dim),
            nn.GELU(),
            nn.ConvTranspose2d(2 * final_dim, final_dim, 2, 2),
            nn.GELU(),
        )
        self.output_hypernetwork_mlp = MLP(dim, dim, final_dim, 5)
        self.token_mixer = (
            TokenMixer(num_mask_tokens, token_mixer_tokens) if token_mixer_tokens else None
        )

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse: Tensor,
        dense: Tensor,
        high_res: tuple[Tensor, Tensor],
        pseudo_prob: Tensor,
        up_embed: Tensor,
        msk_feat: Tensor | None = None,
    ) -> Tensor:
        b, c, h, w = image_embeddings.shape
        src = image_embeddings + dense
        if self.token_mixer is not None:
            if msk_feat is None or msk_feat.shape[-1] != h * w:
                raise ValueError(f"token mixer needs msk_feat (B, T, {h * w})")
            mixed = self.token_mixer(msk_feat).view(b, 1, h, w)
            gate = torch.softmax(mixed, 1) if self.code_compat else torch.sigmoid(mixed)
            src = src + src * gate
        if self.code_compat:  # the release: softmax over a size-1 channel = all ones
            pseudo_prob = torch.softmax(pseudo_prob, 1)
        tokens = torch.cat([self.mask_tokens.weight.expand(b, -1, -1), sparse], 1)
        keys = src.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2).expand(b, -1, -1)
        p = pseudo_prob.flatten(2).transpose(1, 2)  # (B, HW, 1)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe, p, self.renormalise)
        q, k = queries + tokens, keys + key_pe
        weight = p.transpose(1, 2)[:, None]
        upd = self.final_attn_token_to_image(q, k, keys, weight, self.renormalise)
        queries = self.norm_final_attn(queries + upd)
        src = keys.transpose(1, 2).reshape(b, c, h, w)
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        feat_s0, feat_s1 = high_res
        up = act1(ln1(dc1(src) + feat_s1))
        up = act2(dc2(up) + feat_s0)
        full = self.skip_upscaling(torch.cat([up, up_embed], 1))
        hyper = self.output_hypernetwork_mlp(queries[:, 0])  # (B, final_dim)
        bb, cc, hh, ww = full.shape
        return (hyper[:, None] @ full.view(bb, cc, hh * ww)).view(bb, 1, hh, ww)
