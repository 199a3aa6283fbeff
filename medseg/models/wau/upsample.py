"""Window Attention Upsample (WAU): x2 upsampling of a deep map, guided by the skip map.

``out = R + AD(skip, low)`` where ``R = interp(proj(low))`` (bilinear/trilinear) and ``AD`` is a
pre-LN Transformer-decoder layer whose queries come from the high-resolution skip features and
whose keys/values come from the low-resolution deep features, attending within aligned windows
(see FIDELITY.md for which parts are the paper's and which are ours).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from medseg.models.layers import WindowCrossAttention

__all__ = ["WindowAttentionUpsample"]


class WindowAttentionUpsample(nn.Module):
    """Upsample ``low`` by 2 per axis to ``skip``'s grid with window cross-attention.

    The residual stream starts at ``R``, the bilinear (2D) or trilinear (3D) upsampling
    (``align_corners=False``) of ``low`` projected to ``skip_channels`` by a 1x1 conv. Then, pre-LN:

    1. optional window self-attention over the stream (``self_attention=True``);
    2. cross-attention: queries ``LN(skip) + pos_q``, keys ``LN(proj(low)) + pos_kv``, values
       ``LN(proj(low))``; an output window of ``(2 * window_size)^n`` positions attends to the
       ``window_size^n`` low-res window below it;
    3. an MLP (``mlp_ratio``, GELU).

    ``pos_q`` and ``pos_kv`` are learned embeddings of the position inside a window (tiled over
    the windows). With ``zero_init=True`` the output projections of steps 1–3 start at zero, so
    at initialisation the block is exactly ``R``.

    Args:
        spatial_dims: 2 or 3.
        low_channels: channels of the deep (low-resolution) map.
        skip_channels: channels of the skip map; also the output and attention width.
        window_size: low-res window side; the high-res window side is ``2 * window_size``.
        head_dim: channels per head; ``num_heads = max(1, skip_channels // head_dim)``.
        mlp_ratio: MLP hidden width over ``skip_channels``.
        self_attention: add the window self-attention step.
        zero_init: zero the attention and MLP output projections.
        attn_impl: kernel implementation, see :func:`kernels.window_attention`.

    Shapes:
        low: ``(B, C_low, *s)``, skip: ``(B, C_skip, *2s)`` -> ``(B, C_skip, *2s)``.
    """

    def __init__(
        self,
        *,
        spatial_dims: int,
        low_channels: int,
        skip_channels: int,
        window_size: int = 4,
        head_dim: int = 32,
        mlp_ratio: float = 4.0,
        self_attention: bool = False,
        zero_init: bool = True,
        attn_impl: str | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if window_size < 1 or head_dim < 1 or mlp_ratio <= 0:
            raise ValueError("window_size, head_dim and mlp_ratio must be positive")
        dim = skip_channels
        num_heads = max(1, dim // head_dim)
        if dim % num_heads:
            raise ValueError(f"skip_channels ({dim}) does not split into {num_heads} equal heads")
        n, q_window = spatial_dims, 2 * window_size
        self.mode = "bilinear" if n == 2 else "trilinear"
        attn = {"spatial_dims": n, "dim": dim, "num_heads": num_heads, "impl": attn_impl}

        self.proj = (nn.Conv2d if n == 2 else nn.Conv3d)(low_channels, dim, kernel_size=1)
        self.pos_q = nn.Parameter(
            nn.init.trunc_normal_(torch.empty((q_window,) * n + (dim,)), std=0.02)
        )
        self.pos_kv = nn.Parameter(
            nn.init.trunc_normal_(torch.empty((window_size,) * n + (dim,)), std=0.02)
        )
        self.self_attn: WindowCrossAttention | None = None
        if self_attention:
            self.norm_self = nn.LayerNorm(dim)
            self.self_attn = WindowCrossAttention(
                q_dim=dim, kv_dim=dim, q_window=q_window, kv_window=q_window, **attn
            )
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.cross_attn = WindowCrossAttention(
            q_dim=dim, kv_dim=dim, q_window=q_window, kv_window=window_size, **attn
        )
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = max(1, round(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        if zero_init:
            outs = [self.cross_attn.out_proj, self.mlp[2]]
            outs += [self.self_attn.out_proj] if self.self_attn is not None else []
            for layer in outs:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, low: Tensor, skip: Tensor) -> Tensor:
        size = tuple(skip.shape[2:])
        if low.ndim != skip.ndim or size != tuple(2 * s for s in low.shape[2:]):
            raise ValueError(
                f"skip must be twice low's size per axis: low {tuple(low.shape)}, "
                f"skip {tuple(skip.shape)}"
            )
        low = self.proj(low)
        up = F.interpolate(low, size=size, mode=self.mode, align_corners=False)
        x = up.movedim(1, -1)  # channel-last residual stream (B, *2s, C)
        pos_q = _tile(self.pos_q, size)
        if self.self_attn is not None:
            h = self.norm_self(x)
            x = x + self.self_attn(h + pos_q, h + pos_q, h)
        kv = self.norm_kv(low.movedim(1, -1))
        q = self.norm_q(skip.movedim(1, -1)) + pos_q
        x = x + self.cross_attn(q, kv + _tile(self.pos_kv, low.shape[2:]), kv)
        x = x + self.mlp(self.norm_mlp(x))
        return x.movedim(-1, 1)


def _tile(pos: Tensor, size: tuple[int, ...]) -> Tensor:
    """Repeat a ``(*window, C)`` embedding over a map of ``size`` (windows tile from the origin)."""
    reps = [-(-s // w) for s, w in zip(size, pos.shape[:-1], strict=True)]
    return pos.repeat(*reps, 1)[tuple(slice(0, s) for s in size)]
