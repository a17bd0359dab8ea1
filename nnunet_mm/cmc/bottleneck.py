"""The cross-modality bottleneck of CMC (paper 001): channel attention shared by all modalities, a fusion of the
modalities into modality-independent knowledge, and a per-modality projection back to the decoder's width.

For bottleneck features ``F_m`` (C channels) of every modality m:

1. **Channel attention (MIA, DANet's channel attention module)**, one instance for all modalities:
   ``X = F`` flattened to C×N, ``E = X Xᵀ``, ``A = softmax(max_row(E) − E)``, ``F' = γ·(A X) + F`` with a learned
   scalar γ starting at 0 (so training starts from the plain U-Net).
2. **Fusion**: ``Φ = σ(act(norm(conv3(act(norm(conv3(cat_m F'_m)))))))`` — the public code's activation before
   the sigmoid restricts Φ to [0.5, 1); kept, as it is what was trained.
3. **Per-modality projection** (one shared module): ``Z_m = Conv1×1(act(GroupNorm(cat(Φ, F'_m))))`` back to C
   channels, which the shared decoder consumes.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnunet_mm.networks.layers import ConvSpec, conv_norm_act
from nnunet_mm.networks.precision import float32_compute


class ChannelAttention(nn.Module):
    """DANet channel attention with a zero-initialised residual scale γ; the (C, C) energy sums over every voxel, so it
    is computed in float32 with autocast off (the output is float32)."""

    def __init__(self):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    @float32_compute
    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, c = features.shape[:2]
        flat = features.reshape(b, c, -1)
        energy = torch.bmm(flat, flat.transpose(1, 2))  # (B, C, C)
        energy = energy.amax(dim=-1, keepdim=True).expand_as(energy) - energy
        attention = torch.softmax(energy, dim=-1)
        return self.gamma * torch.bmm(attention, flat).reshape_as(features) + features


def _group_count(channels: int, preferred: int = 16) -> int:
    groups = min(preferred, channels)
    while channels % groups:
        groups -= 1
    return groups


class CrossModalityBottleneck(nn.Module):
    """MIA + fusion + per-modality projection for ``num_modalities`` streams of ``channels`` features."""

    def __init__(self, spec: ConvSpec, num_modalities: int, channels: int, kernel_size: Sequence[int]):
        super().__init__()
        self.attention = ChannelAttention()
        self.fusion = nn.Sequential(conv_norm_act(spec, channels * num_modalities, channels, kernel_size),
                                    conv_norm_act(spec, channels, channels, kernel_size), nn.Sigmoid())
        nonlin = spec.nonlin(**(spec.nonlin_kwargs or {})) if spec.nonlin is not None else nn.Identity()
        self.project = nn.Sequential(nn.GroupNorm(_group_count(2 * channels), 2 * channels), nonlin,
                                     spec.conv_op(2 * channels, channels, 1, bias=True))

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        attended = [self.attention(f) for f in features]
        shared = self.fusion(torch.cat(attended, dim=1))
        return [self.project(torch.cat((shared, f), dim=1)) for f in attended]
