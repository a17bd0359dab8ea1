"""Mean teacher: an exponential moving average (EMA) of a student network, and the student–teacher consistency
(used by CLTN's weak supervision and by CMC's mean-teacher baseline).

The teacher is :func:`make_teacher` (a frozen copy of the student) updated by :func:`ema_update` after each
optimiser step; both come from the shared EMA helper in :mod:`nnunet_mm.networks.ema`.

Arrays and modules in and out; nothing here knows nnU-Net's trainer.
"""
from __future__ import annotations

import torch

from nnunet_mm.networks.ema import ema_update
from nnunet_mm.networks.ema import frozen_copy as make_teacher

__all__ = ["consistency_loss", "ema_update", "make_teacher", "perturb_intensities"]


def perturb_intensities(images: torch.Tensor, generator: torch.Generator, noise_std: float = 0.1,
                        max_scale_change: float = 0.1) -> torch.Tensor:
    """The teacher's view (aug₂) of a batch: per-sample intensity scaling in ``1 ± max_scale_change`` plus Gaussian
    noise. Intensity only, so student and teacher predictions stay voxel-aligned.

    Args:
        images: (B, C, *spatial) float.
        generator: the caller's per-rank generator (on the images' device type).
    """
    shape = (images.shape[0],) + (1,) * (images.ndim - 1)
    scale = 1.0 + max_scale_change * (2.0 * torch.rand(shape, generator=generator, device=generator.device) - 1.0)
    noise = torch.randn(images.shape, generator=generator, device=generator.device) * noise_std
    return images * scale.to(images.device) + noise.to(images.device)


def consistency_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the softmax probabilities (gradient only through the student)."""
    return torch.mean((torch.softmax(student_logits.float(), 1) - torch.softmax(teacher_logits.float(), 1).detach())
                      ** 2)
