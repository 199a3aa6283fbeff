"""Frozen 3D ResNet-10 feature extractor for DISGAN's feature (perceptual) loss.

MedicalNet layout (Chen et al. 2019, ``resnet_10``), as used by the released DISGAN script:
conv7 s2 -> BN -> ReLU -> maxpool3 s2 -> four stages of one BasicBlock each (stage 2 stride 2,
stages 3 and 4 stride 1 with dilations 2 and 4; 1x1 conv + BN shortcut where the shape changes).
Module names match MedicalNet state dicts (``conv1``, ``bn1``, ``layer1.0.conv1``, ...), so a
local ``resnet_10.pth`` loads directly; the segmentation head (``conv_seg``) is not built.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor, nn

from medseg.errors import ModelError
from medseg.models.weights import read_state_dict

__all__ = ["ResNet10Features"]


class ResNet10Features(nn.Module):
    """Frozen 3D ResNet-10 trunk returning its last feature map.

    Every parameter has ``requires_grad=False`` and the module stays in eval mode
    (``.train(True)`` is ignored), so BatchNorm uses its running statistics and never updates
    them. Gradients still flow *through* it to its input.

    Args:
        in_channels: image channels.
        widths: the four stage widths (MedicalNet: 64, 128, 256, 512).
        weights: optional local path to a MedicalNet-style state dict (plain, or under
            ``"state_dict"``; ``module.`` prefixes stripped; keys that do not exist here, such as
            ``conv_seg.*``, ignored), read by :func:`medseg.models.weights.read_state_dict`.
            ``None`` keeps the random (Kaiming) init, as the released DISGAN script does.

    Shapes:
        x: ``(B, C, D, H, W)`` float -> ``(B, widths[-1], ~D/8, ~H/8, ~W/8)``.

    Raises:
        ModelError: the weights file is missing, not a regular file, unreadable or corrupt,
            no conv weight of it matches, or a matching key has the wrong shape.
    """

    spatial_dims = 3

    def __init__(
        self,
        in_channels: int = 1,
        widths: Sequence[int] = (64, 128, 256, 512),
        weights: str | None = None,
    ) -> None:
        super().__init__()
        widths = tuple(widths)
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"widths must be 4 positive stage widths, got {widths}")
        self.conv1 = nn.Conv3d(in_channels, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(widths[0])
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        strides, dilations = (1, 2, 1, 1), (1, 1, 2, 4)
        stages, in_w = [], widths[0]
        for width, stride, dilation in zip(widths, strides, dilations, strict=True):
            stages.append(nn.Sequential(BasicBlock3d(in_w, width, stride, dilation)))
            in_w = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
        if weights is not None:
            self._load(Path(weights))
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> ResNet10Features:
        """Stay in eval mode whatever ``mode`` says (the extractor is frozen)."""
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def _load(self, path: Path) -> None:
        payload = read_state_dict(path, what="feature-extractor weights")
        own = self.state_dict()
        found = {k.removeprefix("module."): v for k, v in payload.items()}
        matched = {k: v for k, v in found.items() if k in own}
        for key, value in matched.items():  # read_state_dict: every value is a tensor
            if value.shape != own[key].shape:
                raise ModelError(
                    "checkpoint_mismatch",
                    f"{key}: shape {tuple(value.shape)} != expected {tuple(own[key].shape)}",
                    path=str(path),
                )
        if not any(k.endswith("weight") and own[k].ndim == 5 for k in matched):
            raise ModelError(
                "checkpoint_mismatch",
                "no conv weight matches a ResNet-10 key (conv1.weight, layer1.0.conv1.weight, ...)",
                path=str(path),
            )
        self.load_state_dict(matched, strict=False)


class BasicBlock3d(nn.Module):
    """ResNet basic block in 3D with dilation; 1x1 conv + BN shortcut when the shape changes.

    Shapes: ``(B, in_channels, D, H, W) -> (B, channels, D/stride, H/stride, W/stride)``.
    """

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv3d(
            in_channels, channels, 3, stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn1 = nn.BatchNorm3d(channels)
        self.conv2 = nn.Conv3d(
            channels, channels, 3, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm3d(channels)
        self.relu = nn.ReLU()
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv3d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm3d(channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + residual)
