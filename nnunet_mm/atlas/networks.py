"""BiRegNet and SimNet (paper 004, cross-modality multi-atlas segmentation), 2D or 3D, in PyTorch.

**BiRegNet**: a residual encoder over ``cat(I_atlas, I_target)``; an attention-gated decoder in which coarse
information reaches finer levels only through the gates ``g = σ(W_g(ReLU(½[W_c(up(h_coarse)) + W_s(skip)])))``;
two independent sets of displacement heads, one per level (zero-initialised, resized to full resolution and summed):
``φ_{a→t}`` (atlas onto target) and ``φ_{t→a}`` (target onto atlas), in voxels, axis order of the array.
``forward(x)`` returns ``φ_{a→t}`` only (inference); :meth:`BiRegNet.forward_train` returns both.

**SimNet**: the same encoder and a plain (ungated) decoder over ``cat(I_target, L_atlas∘φ)`` with multi-scale
one-channel heads; ``forward(x)`` returns the logit of the voxelwise similarity ``s = σ(o)`` used as fusion weight.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _ops(spatial_dims: int):
    if spatial_dims == 3:
        return nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d
    if spatial_dims == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}.")


class _DownBlock(nn.Module):
    """conv-BN-ReLU (the skip h0), conv-BN-ReLU, conv-BN, + h0, ReLU."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        conv, norm, _ = _ops(spatial_dims)
        self.entry = nn.Sequential(conv(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
                                   norm(out_channels), nn.ReLU(inplace=True))
        self.body = nn.Sequential(conv(out_channels, out_channels, 3, padding=1), norm(out_channels),
                                  nn.ReLU(inplace=True), conv(out_channels, out_channels, 3, padding=1),
                                  norm(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = self.entry(x)
        return F.relu(self.body(h0) + h0)


class _UpBlock(nn.Module):
    """Decoder level: attention-gated (BiRegNet) or plain concatenation (SimNet) of the skip and the coarse input."""

    def __init__(self, spatial_dims: int, coarse_channels: int, skip_channels: int, gated: bool):
        super().__init__()
        conv, norm, _ = _ops(spatial_dims)
        self.gated = gated
        if gated:
            self.from_coarse = conv(coarse_channels, skip_channels, 1)
            self.from_skip = conv(skip_channels, skip_channels, 1)
            self.gate = conv(skip_channels, 1, 1)
            in_channels = skip_channels
        else:
            in_channels = coarse_channels + skip_channels
        self.body = nn.Sequential(conv(in_channels, skip_channels, 3, padding=1), norm(skip_channels),
                                  nn.ReLU(inplace=True), conv(skip_channels, skip_channels, 3, padding=1),
                                  norm(skip_channels))
        self.shortcut = conv(in_channels, skip_channels, 1) if in_channels != skip_channels else nn.Identity()

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(coarse, size=skip.shape[2:], mode="nearest")
        if self.gated:
            gate = torch.sigmoid(self.gate(F.relu(0.5 * (self.from_coarse(up) + self.from_skip(skip)))))
            x = gate * skip
        else:
            x = torch.cat((up, skip), dim=1)
        return F.relu(self.body(x) + self.shortcut(x))


class _EncoderDecoder(nn.Module):
    def __init__(self, spatial_dims: int, in_channels: int, base_channels: int, num_levels: int, gated: bool):
        super().__init__()
        _, _, pool = _ops(spatial_dims)
        widths = [base_channels * 2 ** i for i in range(num_levels + 1)]
        self.down = nn.ModuleList([_DownBlock(spatial_dims, in_channels if i == 0 else widths[i - 1], widths[i],
                                              7 if i == 0 else 3) for i in range(num_levels)])
        self.pool = pool(2)
        self.bottleneck = _DownBlock(spatial_dims, widths[num_levels - 1], widths[num_levels], 3)
        self.up = nn.ModuleList([_UpBlock(spatial_dims, widths[i + 1], widths[i], gated)
                                 for i in reversed(range(num_levels))])
        self.widths = widths

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Decoder features from coarse (bottleneck) to fine (full resolution)."""
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        levels = [self.bottleneck(x)]
        for block, skip in zip(self.up, reversed(skips)):
            levels.append(block(levels[-1], skip))
        return levels


def _heads(spatial_dims: int, widths: list[int], out_channels: int) -> nn.ModuleList:
    conv, _, _ = _ops(spatial_dims)
    heads = nn.ModuleList([conv(w, out_channels, 3, padding=1) for w in reversed(widths)])
    for head in heads:
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    return heads


def _summed_heads(heads: nn.ModuleList, levels: list[torch.Tensor], size: torch.Size) -> torch.Tensor:
    mode = "trilinear" if len(size) == 3 else "bilinear"
    return sum(F.interpolate(head(h), size=size, mode=mode, align_corners=False) for head, h in zip(heads, levels))


class BiRegNet(nn.Module):
    """Bi-directional registration network.

    Args:
        spatial_dims: 2 or 3.
        base_channels: c; level widths c, 2c, 4c, ... (journal version c = 4).
        num_levels: down-sampling levels (the input size must be divisible by ``2**num_levels``).
    """

    def __init__(self, spatial_dims: int = 3, base_channels: int = 4, num_levels: int = 4):
        super().__init__()
        self.spatial_dims = spatial_dims
        self.body = _EncoderDecoder(spatial_dims, 2, base_channels, num_levels, gated=True)
        self.heads_atlas_to_target = _heads(spatial_dims, self.body.widths, spatial_dims)
        self.heads_target_to_atlas = _heads(spatial_dims, self.body.widths, spatial_dims)

    def forward_train(self, pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``pair``: (B, 2, *spatial) = (atlas, target). Returns (φ_{a→t}, φ_{t→a}), each (B, D, *spatial) voxels."""
        levels = self.body.features(pair)
        size = pair.shape[2:]
        return (_summed_heads(self.heads_atlas_to_target, levels, size),
                _summed_heads(self.heads_target_to_atlas, levels, size))

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        """φ_{a→t} (B, D, *spatial): the displacement that pulls the atlas onto the target grid."""
        levels = self.body.features(pair)
        return _summed_heads(self.heads_atlas_to_target, levels, pair.shape[2:])


class SimNet(nn.Module):
    """Similarity network for label fusion; input (B, 1 + C_fg, *spatial) = (target image, warped atlas label).

    Args:
        spatial_dims: 2 or 3.
        num_label_channels: foreground class probability channels of the warped atlas label.
        base_channels / num_levels: as in :class:`BiRegNet` (paper: c = 16).
    """

    def __init__(self, spatial_dims: int = 3, num_label_channels: int = 1, base_channels: int = 8,
                 num_levels: int = 4):
        super().__init__()
        self.body = _EncoderDecoder(spatial_dims, 1 + num_label_channels, base_channels, num_levels, gated=False)
        self.heads = _heads(spatial_dims, self.body.widths, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Similarity logit o (B, 1, *spatial); the fusion weight is ``sigmoid(o)``."""
        return _summed_heads(self.heads, self.body.features(x), x.shape[2:])
