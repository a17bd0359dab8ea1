"""CMC's semi-supervised terms (paper 001), implemented as the paper intends, with gradients.

* :func:`csc_loss` — channel-wise semantic consistency (CSC): every bottleneck channel is an embedding;
  channel c of modality a and channel c of modality b are positives, every other channel of either modality a
  negative; NT-Xent with temperature τ. [BUG in the public code: it reshapes without transposing, so its
  "embeddings" are arbitrary 512-value chunks, and it runs under ``no_grad`` after ``eval()``; here the channels are
  the embeddings and the loss back-propagates.]
* :func:`cac_loss` — contrastive anatomical consistency (CAC): ``1 − soft Dice`` between the two
  predictions [BUG in the public code: it adds the Dice *similarity*]. Voxelwise when the pair is co-registered;
  for unpaired or misaligned pairs, per-class soft volume fractions are compared instead (voxelwise agreement of
  two different patients means nothing).

The weights of the two terms follow :mod:`nnunet_mm.training.schedules`. Both are computed in float32 with autocast off
(:func:`~nnunet_mm.networks.precision.float32_compute`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from nnunet_mm.networks.precision import float32_compute


@float32_compute
def csc_loss(features_a: torch.Tensor, features_b: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent over channels as embeddings, averaged over the batch.

    Args:
        features_a, features_b: (B, C, *spatial) bottleneck features of the two modalities (same shape).
        temperature: τ (the paper: 0.5).

    Returns:
        ``(1/2C) Σ_c [ℓ(u_c, w_c) + ℓ(w_c, u_c)]`` with ``ℓ(a, b) = −log(exp(cos(a,b)/τ) / Σ_{k≠a} exp(cos(a,k)/τ))``
        over the 2C embeddings of a sample, then the mean over samples.
    """
    if features_a.shape != features_b.shape:
        raise ValueError(f"CSC compares features of equal shape, got {tuple(features_a.shape)} and "
                         f"{tuple(features_b.shape)}.")
    b, c = features_a.shape[:2]
    embeddings = torch.cat((features_a.reshape(b, c, -1), features_b.reshape(b, c, -1)), dim=1)
    embeddings = F.normalize(embeddings, dim=-1)  # (B, 2C, N)
    logits = torch.bmm(embeddings, embeddings.transpose(1, 2)) / temperature  # (B, 2C, 2C)
    self_mask = torch.eye(2 * c, dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = torch.cat((torch.arange(c, 2 * c), torch.arange(0, c))).to(logits.device)
    return F.cross_entropy(logits.reshape(b * 2 * c, 2 * c), positives.repeat(b))


@float32_compute
def cac_loss(probabilities_a: torch.Tensor, probabilities_b: torch.Tensor, *, paired: bool,
             smooth: float = 1.0) -> torch.Tensor:
    """``1 − mean_k soft Dice`` between two softmax predictions (B, K, *spatial), over the foreground classes.

    Args:
        paired: True for co-registered pairs (voxelwise Dice per class); False for unpaired/misaligned pairs (the
            Dice of the per-class soft volumes, which does not depend on where the anatomy lies).
        smooth: in voxels. A class that neither prediction shows (summed probability well below one voxel) counts
            as agreement. With a vanishing smooth the squared-denominator Dice is scale-invariant, so the residual
            probabilities of an absent class (e.g. 1e-3 noise) had to match in *pattern*: two identical
            segmentations scored CAC 0.12, as much as real phase differences, and the gradient fought the
            supervised loss.
    """
    if probabilities_a.shape != probabilities_b.shape:
        raise ValueError(f"CAC compares predictions of equal shape, got {tuple(probabilities_a.shape)} and "
                         f"{tuple(probabilities_b.shape)}.")
    a, b = probabilities_a[:, 1:], probabilities_b[:, 1:]
    if paired:
        axes = tuple(range(2, a.ndim))
        dice = (2 * (a * b).sum(axes) + smooth) / ((a * a).sum(axes) + (b * b).sum(axes) + smooth)
    else:
        volume_a, volume_b = a.flatten(2).sum(-1), b.flatten(2).sum(-1)  # (B, K-1), in voxels
        dice = (2 * volume_a * volume_b + smooth) / (volume_a ** 2 + volume_b ** 2 + smooth)
    return 1 - dice.mean()

