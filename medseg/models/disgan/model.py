"""DISGAN (ICCV 2023 Workshops, arXiv 2308.12084): 3D MRI x2 super-resolution GAN whose
discriminator is a U-Net with Haar-wavelet units.

Wang, Mahler, Steiglechner, Birk, Scheffler, Lohmann, "DISGAN: Wavelet-informed Discriminator
Guides GAN to MRI Super-resolution with Noise Cleaning". Released code: github wqlevi/DISGAN.
:class:`DISGAN` only holds the three networks; the adversarial task (losses, the alternating
G/D optimisation, instance noise) lives in the engine. FIDELITY.md lists every choice.
"""

from __future__ import annotations

from torch import Tensor, nn

from .discriminator import DWTUNetDiscriminator
from .features import ResNet10Features
from .generator import RRDBGenerator

__all__ = ["DISGAN", "disgan", "tiny"]

_PREFIXES = {"generator_": "generator", "discriminator_": "discriminator", "feature_": "feature"}
_SHARED = {"in_channels"}  # goes to all three networks


class DISGAN(nn.Module):
    """Container of the generator, the discriminator and the (optional) frozen feature
    extractor. Calling it runs the generator only.

    Args:
        generator: ``(B, C, d, h, w) -> (B, C, s*d, s*h, s*w)``; must expose ``scale`` and
            ``spatial_dims``.
        discriminator: ``(B, C, D, H, W) -> (B, 1, D, H, W)`` logits.
        feature_extractor: frozen network for the feature loss, or ``None`` (no feature term).

    Shapes:
        x: ``(B, C, d, h, w)`` float (z-scored LR patch) -> ``(B, C, s*d, s*h, s*w)``.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        feature_extractor: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.feature_extractor = feature_extractor
        self.scale: int = generator.scale
        self.spatial_dims: int = generator.spatial_dims

    def forward(self, x: Tensor) -> Tensor:
        return self.generator(x)


def disgan(**overrides: object) -> DISGAN:
    """The released configuration (random init): G filters 64, 3 RRDBs, growth 64 (16.04 M
    parameters); D ``nf=16`` on 64³ patches, 6 levels (42.65 M); frozen random ResNet-10 FE
    64/128/256/512 (14.36 M).

    Overrides: ``generator_<arg>``, ``discriminator_<arg>``, ``feature_<arg>`` go to that
    network's constructor (e.g. ``feature_weights="resnet_10.pth"``,
    ``discriminator_released_init=True``); ``in_channels`` goes to all three; ``scale`` to the
    generator. Anything else raises ``TypeError``.
    """
    return _build({}, {}, {}, overrides)


def tiny(**overrides: object) -> DISGAN:
    """CPU-sized DISGAN: G filters 16, growth 16, 1 RRDB (0.381 M, maps 16³ -> 32³); D ``nf=8``
    on 32³ patches with a 4³ bottleneck (3 levels, 0.85 M); FE widths 8/16/32/64 (0.22 M).
    Same overrides as :func:`disgan`."""
    return _build(
        {"filters": 16, "num_res_blocks": 1, "growth": 16},
        {"nf": 8, "patch_size": 32, "min_size": 4},
        {"widths": (8, 16, 32, 64)},
        overrides,
    )


def _build(g: dict, d: dict, f: dict, overrides: dict[str, object]) -> DISGAN:
    parts = {"generator": dict(g), "discriminator": dict(d), "feature": dict(f)}
    for key, value in overrides.items():
        if key in _SHARED:
            for config in parts.values():
                config[key] = value
        elif key == "scale":
            parts["generator"]["scale"] = value
        else:
            prefix = next((p for p in _PREFIXES if key.startswith(p)), None)
            if prefix is None:
                raise TypeError(
                    f"unknown DISGAN override {key!r}: use in_channels, scale, or a "
                    f"generator_/discriminator_/feature_ prefix"
                )
            parts[_PREFIXES[prefix]][key.removeprefix(prefix)] = value
    return DISGAN(
        RRDBGenerator(**parts["generator"]),
        DWTUNetDiscriminator(**parts["discriminator"]),
        ResNet10Features(**parts["feature"]),
    )
