"""Multi-Scale Fusion (MSF) block of CMG (paper 000): a fused multi-scale map of all phases, injected back into
every phase's encoder stream as a residual.

For one encoder level with per-phase width ``n``: concatenate the phases' features (and the previous level's fusion
map, brought to this resolution by a strided conv), run four parallel branches of ``n/2`` channels (1×1 then a
3×3 conv with dilation 1, 2 and 3, and a stride-1 3×3 max-pool then 1×1), concatenate them, 1×1 to ``n`` channels:
the fusion map ``F``. Each phase then gets ``f_p ← act(f_p + bottleneck_p(F))`` with its own bottleneck (1×1 to
``n/4``, depthwise 3×3, 1×1 back to ``n``). ``F`` is passed on to the next level.

Deviation, on purpose: the paper's branches use k×k kernels with k = 3, 5, 7. In 3D a 7³ kernel on the deepest
features costs hundreds of times a 3³ one, so the branches here use 3-kernels with dilation 1/2/3, which cover the
same 3/5/7 receptive fields. Anisotropic stages (a kernel of 1 along an axis in the plans) keep 1 along that axis.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from nnunet_mm.networks.layers import ConvSpec, conv_norm_act, max_pool

BRANCH_DILATIONS = (1, 2, 3)


class MultiScaleFusion(nn.Module):
    """MSF for ``num_phases`` streams of ``channels`` features at one encoder level."""

    def __init__(self, spec: ConvSpec, num_phases: int, channels: int, kernel_size: Sequence[int], *,
                 previous_channels: int | None = None, previous_stride: Sequence[int] | None = None):
        super().__init__()
        half, quarter = max(channels // 2, 1), max(channels // 4, 1)
        self.from_previous = None
        if previous_channels is not None:
            self.from_previous = conv_norm_act(spec, previous_channels, channels,
                                               [3 if s > 1 else 1 for s in previous_stride], stride=previous_stride)
        in_channels = channels * (num_phases + (previous_channels is not None))
        self.branches = nn.ModuleList(
            nn.Sequential(conv_norm_act(spec, in_channels, half, 1),
                          conv_norm_act(spec, half, half, kernel_size, dilation=[d if k > 1 else 1 for k in
                                                                                  kernel_size]))
            for d in BRANCH_DILATIONS)
        self.branches.append(nn.Sequential(max_pool(spec, kernel_size), conv_norm_act(spec, in_channels, half, 1)))
        self.fuse = conv_norm_act(spec, half * len(self.branches), channels, 1)
        self.bottlenecks = nn.ModuleList(
            nn.Sequential(conv_norm_act(spec, channels, quarter, 1),
                          conv_norm_act(spec, quarter, quarter, kernel_size, groups=quarter),
                          conv_norm_act(spec, quarter, channels, 1, activation=False))
            for _ in range(num_phases))
        self.activation = spec.nonlin(**(spec.nonlin_kwargs or {})) if spec.nonlin is not None else nn.Identity()

    def forward(self, phase_features: Sequence[torch.Tensor],
                previous_fusion: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Return the phases' updated features and this level's fusion map."""
        inputs = list(phase_features)
        if self.from_previous is not None:
            if previous_fusion is None:
                raise ValueError("this MSF block chains from the previous level; pass previous_fusion.")
            inputs.append(self.from_previous(previous_fusion))
        stacked = torch.cat(inputs, dim=1)
        fusion = self.fuse(torch.cat([branch(stacked) for branch in self.branches], dim=1))
        updated = [self.activation(f + bottleneck(fusion)) for f, bottleneck in zip(phase_features, self.bottlenecks)]
        return updated, fusion
