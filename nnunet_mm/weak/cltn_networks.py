"""CLTN's networks (paper 003, §4.2 of methods.md): the attention generator and the CAM discriminators (2D).

Generator (U-GAT-IT light derivative): stem 7×7 → two stride-2 convs → residual blocks; a class-activation-map
(CAM) head re-weights the features by its GAP/GMP classifier weights; the **attention mask** ``a = σ(Conv3×3(x))``
marks where to translate; the decoder trunk fuses, block by block, AdaILN-translated features inside the mask with a
reconstruction branch outside it (**complementary fusion** ``x_d·a + x_r·(1 − a)``); heads give the translation
``Ŷ``, the reconstruction ``X̂`` of the input, the full-resolution mask ``m`` and the **composite**
``Ŷ_c = Ŷ·m + X·(1 − m)``.

Attention resolution: ``a`` lives on the trunk's grid, a quarter of the input side, as in the public code, because the
complementary fusion multiplies trunk features by it; ``m`` is its bilinear upsampling. The resolution that outlines
a lesion therefore comes from the input size: 64×64 cells at the paper's 256 px (the GPU setting), 16×16 at 64 px
(the smallest CPU setting: a lesion of a fifth of the image is 3–4 cells wide). At 32 px the 8×8 map gave blobs much
larger than the lesions; :func:`~nnunet_mm.weak.cltn_gan.train_label_transfer_gan` warns below 64 px.

Discriminators: U-GAT-IT's spectral-norm PatchGAN with a CAM head, global (5 stride-2 convs) and local (3). Deviation:
on images smaller than 256 px the number of stride-2 convs is capped so that at least a 4×4 map is left.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm


@dataclass
class GeneratorOutputs:
    """Outputs of :meth:`CLTNGenerator.forward`; images (B, C, H, W) in [-1, 1].

    Attributes:
        translation: Ŷ, the translated image.
        composite: Ŷ_c = Ŷ·m + X·(1 − m).
        attention_mask: m, (B, 1, H, W) in [0, 1], the lesion mask.
        cam_logit: (B, 2) GAP and GMP logits of the CAM classifier.
        heatmap: (B, 1, H/4, W/4) channel sum of the CAM-weighted features.
        reconstruction: X̂, the input rebuilt by the reconstruction branch.
    """

    translation: torch.Tensor
    composite: torch.Tensor
    attention_mask: torch.Tensor
    cam_logit: torch.Tensor
    heatmap: torch.Tensor
    reconstruction: torch.Tensor


class InstanceLayerNorm(nn.Module):
    """ILN: ``ρ·IN(x) + (1 − ρ)·LN(x)`` with learnt per-channel ρ, γ, β (ρ is clipped to [0, 1] after G steps)."""

    def __init__(self, channels: int, rho_init: float = 0.0, affine: bool = True):
        super().__init__()
        self.rho = nn.Parameter(torch.full((1, channels, 1, 1), rho_init))
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1)) if affine else None
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1)) if affine else None

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        instance = F.instance_norm(x, eps=1e-5)
        layer = F.layer_norm(x, x.shape[1:], eps=1e-5)
        return self.rho * instance + (1.0 - self.rho) * layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalise(x) * self.gamma + self.beta


class AdaptiveInstanceLayerNorm(InstanceLayerNorm):
    """AdaILN: ILN whose γ, β come per sample from the CAM features (ρ starts at 0.9 as in U-GAT-IT)."""

    def __init__(self, channels: int):
        super().__init__(channels, rho_init=0.9, affine=False)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.normalise(x) * gamma[:, :, None, None] + beta[:, :, None, None]


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(kernel // 2), nn.Conv2d(in_channels, out_channels, kernel, stride))


class ResidualBlock(nn.Module):
    """Two 3×3 convs with instance (``norm="in"``) or instance-layer (``"iln"``) normalisation, plus the input."""

    def __init__(self, channels: int, norm: str = "in"):
        super().__init__()
        make_norm = (lambda: nn.InstanceNorm2d(channels)) if norm == "in" else (lambda: InstanceLayerNorm(channels))
        self.body = nn.Sequential(_conv(channels, channels, 3), make_norm(), nn.ReLU(True),
                                  _conv(channels, channels, 3), make_norm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class AdaptiveResidualBlock(nn.Module):
    """Residual block with AdaILN, the translating branch of the decoder trunk."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.norm1 = _conv(channels, channels, 3), AdaptiveInstanceLayerNorm(channels)
        self.conv2, self.norm2 = _conv(channels, channels, 3), AdaptiveInstanceLayerNorm(channels)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x), gamma, beta))
        return x + self.norm2(self.conv2(out), gamma, beta)


def _decoder(channels: int, out_channels: int, last_kernel: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(2):
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), _conv(channels, channels // 2, 3),
                   InstanceLayerNorm(channels // 2), nn.ReLU(True)]
        channels //= 2
    layers += [_conv(channels, out_channels, last_kernel), nn.Tanh()]
    return nn.Sequential(*layers)


class CLTNGenerator(nn.Module):
    """Attention generator with complementary fusion (see the module docstring).

    Args:
        in_channels: image channels C (3 for RGB, 1 for FLAIR).
        base_channels: channels of the stem (the paper: 54); the trunk has 4× as many.
        num_res_blocks: residual blocks in the encoder and in the decoder trunk (the paper: 4).
    """

    def __init__(self, in_channels: int, base_channels: int = 54, num_res_blocks: int = 4):
        super().__init__()
        trunk = base_channels * 4
        self.encoder = nn.Sequential(
            _conv(in_channels, base_channels, 7), nn.InstanceNorm2d(base_channels), nn.ReLU(True),
            _conv(base_channels, base_channels * 2, 3, 2), nn.InstanceNorm2d(base_channels * 2), nn.ReLU(True),
            _conv(base_channels * 2, trunk, 3, 2), nn.InstanceNorm2d(trunk), nn.ReLU(True),
            *[ResidualBlock(trunk) for _ in range(num_res_blocks)])
        self.split = nn.Sequential(nn.Conv2d(trunk, trunk, 1), InstanceLayerNorm(trunk), nn.ReLU(True),
                                   nn.Conv2d(trunk, trunk, 1), InstanceLayerNorm(trunk), nn.ReLU(True))
        self.gap_classifier = nn.Linear(trunk, 1, bias=False)
        self.gmp_classifier = nn.Linear(trunk, 1, bias=False)
        self.cam_fusion = nn.Sequential(nn.Conv2d(trunk * 2, trunk, 1), nn.ReLU(True))
        self.attention = nn.Conv2d(trunk, 1, 3, padding=1)
        self.style = nn.Sequential(nn.Linear(trunk, trunk), nn.ReLU(True), nn.Linear(trunk, trunk), nn.ReLU(True))
        self.gamma, self.beta = nn.Linear(trunk, trunk), nn.Linear(trunk, trunk)
        self.translate_blocks = nn.ModuleList(AdaptiveResidualBlock(trunk) for _ in range(num_res_blocks))
        self.reconstruct_blocks = nn.ModuleList(ResidualBlock(trunk, norm="iln") for _ in range(num_res_blocks))
        self.translation_head = _decoder(trunk, in_channels, 3)
        self.reconstruction_head = _decoder(trunk, in_channels, 7)

    def forward(self, x: torch.Tensor) -> GeneratorOutputs:
        """Translate ``x`` (B, C, H, W) in [-1, 1], H and W multiples of 4."""
        features = self.encoder(x)
        preserved = features  # x_r, the reconstruction branch
        features = self.split(features)
        gap_logit = self.gap_classifier(features.mean((2, 3)))
        gmp_logit = self.gmp_classifier(features.amax((2, 3)))
        weighted = torch.cat((features * self.gap_classifier.weight[:, :, None, None],
                              features * self.gmp_classifier.weight[:, :, None, None]), dim=1)
        features = self.cam_fusion(weighted)
        heatmap = features.sum(dim=1, keepdim=True)
        attention = torch.sigmoid(self.attention(features))  # a, (B, 1, H/4, W/4)
        style = self.style(features.mean((2, 3)))
        gamma, beta = self.gamma(style), self.beta(style)
        translated = features
        for translate, reconstruct in zip(self.translate_blocks, self.reconstruct_blocks):
            preserved = reconstruct(preserved)
            translated = translate(translated, gamma, beta) * attention + preserved * (1.0 - attention)
        translation = self.translation_head(translated)
        mask = F.interpolate(attention, size=x.shape[2:], mode="bilinear", align_corners=False)
        return GeneratorOutputs(translation=translation, composite=translation * mask + x * (1.0 - mask),
                                attention_mask=mask, cam_logit=torch.cat((gap_logit, gmp_logit), dim=1),
                                heatmap=heatmap, reconstruction=self.reconstruction_head(preserved))

    def clip_rho(self) -> None:
        """Keep every ILN/AdaILN ρ in [0, 1] (done after each generator step)."""
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, InstanceLayerNorm):
                    module.rho.clamp_(0.0, 1.0)


class CLTNDiscriminator(nn.Module):
    """Spectral-norm PatchGAN with a CAM head; ``forward`` gives (patch logits (B, 1, h, w), CAM logits (B, 2)).

    Args:
        in_channels: image channels.
        image_size: side of the square input, used to cap the downsampling.
        num_layers: 7 for the global discriminator (5 stride-2 convs), 5 for the local one (3).
        base_channels: channels of the first conv (the paper: 64).
    """

    def __init__(self, in_channels: int, image_size: int, num_layers: int = 7, base_channels: int = 64):
        super().__init__()
        num_down = min(num_layers - 2, max(1, (image_size // 4).bit_length() - 1))
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(in_channels, base_channels, 4, 2)),
                                   nn.LeakyReLU(0.2, True)]
        channels = base_channels
        for _ in range(num_down - 1):
            layers += [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(channels, channels * 2, 4, 2)),
                       nn.LeakyReLU(0.2, True)]
            channels *= 2
        layers += [nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(channels, channels * 2, 4, 1)),
                   nn.LeakyReLU(0.2, True)]
        channels *= 2
        self.features = nn.Sequential(*layers)
        self.gap_classifier = spectral_norm(nn.Linear(channels, 1, bias=False))
        self.gmp_classifier = spectral_norm(nn.Linear(channels, 1, bias=False))
        self.cam_fusion = nn.Sequential(nn.Conv2d(channels * 2, channels, 1), nn.LeakyReLU(0.2, True))
        self.head = nn.Sequential(nn.ReflectionPad2d(1), spectral_norm(nn.Conv2d(channels, 1, 4, 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        gap_logit = self.gap_classifier(features.mean((2, 3)))
        gmp_logit = self.gmp_classifier(features.amax((2, 3)))
        weighted = torch.cat((features * self.gap_classifier.weight[:, :, None, None],
                              features * self.gmp_classifier.weight[:, :, None, None]), dim=1)
        return self.head(self.cam_fusion(weighted)), torch.cat((gap_logit, gmp_logit), dim=1)
