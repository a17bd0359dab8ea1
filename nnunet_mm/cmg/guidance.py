"""Cross-Modal Guidance (CMG) block of paper 000: guide each phase's decoder with prototypes pooled from the *other*
phases, so that residual misregistration matters little.

Per phase p at one decoder level (``m_p`` = the merged upsampled + skip features, ``s_p`` = the encoder skip):

1. ``g_p = DoubleConv(Conv1×1(m_p))`` and side logits ``z_p = Conv1×1(g_p)`` (one per class);
2. an embedding of the skip, ``e_p = Conv1×1(s_p)`` with half the channels;
3. a region mask ``M_{p,c}`` per foreground class c: the ground truth of that phase (teacher forcing) or the
   one-hot argmax of ``z_p`` (what inference uses);
4. prototypes by masked average pooling, ``v_{p,c} = Σ_x e_p(x) M_{p,c}(x) / (Σ_x M_{p,c}(x) + 1e-4)``;
5. the guidance map ``S_{p,c}(x) = cos(e_p(x), v̄_{¬p,c})`` against the mean prototype of the *other* phases (only
   phases whose mask is non-empty count; with none, ``S = 0``). The prototype is pooled over space, so where the
   other phase's lesion sits does not matter: that is the robustness to misregistration;
6. modulation ``g_{p,c} = g_p · (1 + S_{p,c})``; with several foreground classes the modulated maps are
   concatenated and fused by 1×1 conv back to the width of ``g_p``.

With N > 2 phases every phase is guided by the mean of the others' prototypes (the paper has two phases).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_mm.networks.layers import ConvSpec, conv_norm_act
from nnunet_mm.networks.precision import float32_compute

PROTOTYPE_EPS = 1e-4


@float32_compute
def masked_average_prototypes(embedding: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Prototype per sample and class by masked average pooling.

    Args:
        embedding: (B, E, *spatial).
        masks: (B, K, *spatial) in [0, 1], one channel per foreground class.

    Returns:
        prototypes (B, K, E) in float32 (sums over many voxels overflow float16, so autocast is off here: see
        :mod:`nnunet_mm.networks.precision`) and presence (B, K) — True where the mask is non-empty.
    """
    area = masks.flatten(2).sum(-1)  # (B, K)
    summed = torch.einsum("bk...,be...->bke", masks, embedding)
    return summed / (area.unsqueeze(-1) + PROTOTYPE_EPS), area > 0


def cross_phase_prototypes(prototypes: Sequence[torch.Tensor], presence: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """For each phase, the mean prototype of the *other* phases whose masks are non-empty (zeros if none).

    Args:
        prototypes: per phase (B, K, E).
        presence: per phase (B, K) bool.
    """
    stacked = torch.stack(list(prototypes))  # (P, B, K, E)
    weights = torch.stack(list(presence)).to(stacked.dtype).unsqueeze(-1)  # (P, B, K, 1)
    total, count = (stacked * weights).sum(0), weights.sum(0)
    others = []
    for p in range(stacked.shape[0]):
        other_count = count - weights[p]
        others.append((total - stacked[p] * weights[p]) / other_count.clamp_min(1.0))
    return others


@float32_compute
def guidance_map(embedding: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every voxel's embedding with each class prototype.

    Args:
        embedding: (B, E, *spatial).
        prototypes: (B, K, E).

    Returns:
        (B, K, *spatial) in [-1, 1]; 0 where the prototype is zero.
    """
    spatial = embedding.shape[2:]
    e = F.normalize(embedding.flatten(2), dim=1)  # (B, E, N)
    v = F.normalize(prototypes, dim=-1)  # zero vectors stay zero
    return torch.einsum("bke,ben->bkn", v, e).reshape(embedding.shape[0], prototypes.shape[1], *spatial)


def region_masks_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """One-hot argmax of (B, K+1, ...) logits without the background channel: (B, K, ...)."""
    num_classes = logits.shape[1]
    one_hot = F.one_hot(logits.argmax(1), num_classes).movedim(-1, 1)
    return one_hot[:, 1:].to(logits.dtype)


class CrossModalGuidance(nn.Module):
    """The CMG block for ``num_phases`` decoder streams at one level."""

    def __init__(self, spec: ConvSpec, num_phases: int, merged_channels: int, skip_channels: int, channels: int,
                 num_classes: int, kernel_size: Sequence[int], modulate: bool = True):
        super().__init__()
        self.modulate = modulate  # False: an ablation without guidance (g passes unmodulated; side heads stay)
        if num_phases < 2:
            raise ValueError(f"cross-modal guidance needs at least 2 phases, got {num_phases}.")
        if num_classes < 2:
            raise ValueError(f"num_classes counts the background, so it must be >= 2; got {num_classes}.")
        self.num_foreground = num_classes - 1
        embed = max(channels // 2, 1)
        self.reduce = nn.ModuleList(conv_norm_act(spec, merged_channels, channels, 1) for _ in range(num_phases))
        self.refine = nn.ModuleList(
            nn.Sequential(conv_norm_act(spec, channels, channels, kernel_size),
                          conv_norm_act(spec, channels, channels, kernel_size)) for _ in range(num_phases))
        self.side_heads = nn.ModuleList(spec.conv_op(channels, num_classes, 1, bias=True) for _ in range(num_phases))
        self.embed = nn.ModuleList(spec.conv_op(skip_channels, embed, 1, bias=True) for _ in range(num_phases))
        self.combine = None
        if self.num_foreground > 1:
            self.combine = nn.ModuleList(conv_norm_act(spec, channels * self.num_foreground, channels, 1)
                                         for _ in range(num_phases))

    def forward(self, merged: Sequence[torch.Tensor], skips: Sequence[torch.Tensor],
                region_masks: Sequence[torch.Tensor | None] | None = None,
                use_prediction: torch.Tensor | None = None) -> dict[str, list[torch.Tensor]]:
        """Guide every phase.

        Args:
            merged: per phase, the decoder's merged features (upsampled lower level + skip).
            skips: per phase, the encoder skip at this level.
            region_masks: per phase, (B, K, ...) masks for the prototypes, or None to use the phase's own side
                prediction (inference).
            use_prediction: (B,) bool; where True, the sample uses its own side prediction even if a mask is given.

        Returns:
            ``guided`` (per phase, modulated features), ``side_logits`` (per phase), ``guidance`` (per phase,
            (B, K, ...) cosine maps) and ``masks`` (the region masks used).
        """
        refined = [refine(reduce(m)) for m, reduce, refine in zip(merged, self.reduce, self.refine)]
        side_logits = [head(g) for g, head in zip(refined, self.side_heads)]
        if not self.modulate:
            return {"guided": refined, "side_logits": side_logits,
                    "guidance": [torch.zeros_like(z[:, 1:]) for z in side_logits], "masks": []}
        embeddings = [embed(s) for s, embed in zip(skips, self.embed)]
        masks = []
        for p, logits in enumerate(side_logits):
            given = None if region_masks is None else region_masks[p]
            predicted = region_masks_from_logits(logits.detach())
            if given is None:
                masks.append(predicted)
            elif use_prediction is None:
                masks.append(given.to(logits.dtype))
            else:
                choose = use_prediction.view(-1, *([1] * (logits.ndim - 1)))
                masks.append(torch.where(choose, predicted, given.to(logits.dtype)))
        pooled = [masked_average_prototypes(e, m) for e, m in zip(embeddings, masks)]
        others = cross_phase_prototypes([v for v, _ in pooled], [present for _, present in pooled])
        guidance = [guidance_map(e, v) for e, v in zip(embeddings, others)]
        guided = []
        for p, (g, s) in enumerate(zip(refined, guidance)):
            modulated = [g * (1 + s[:, c:c + 1].to(g.dtype)) for c in range(self.num_foreground)]
            guided.append(modulated[0] if self.combine is None else self.combine[p](torch.cat(modulated, dim=1)))
        return {"guided": guided, "side_logits": side_logits, "guidance": guidance, "masks": masks}
