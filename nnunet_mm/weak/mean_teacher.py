"""Mean teacher: an exponential moving average (EMA) of a student network, and the student–teacher consistency.

Arrays and modules in and out; nothing here knows nnU-Net's trainer.
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of ``student`` (eval mode, no gradients) to be updated by :func:`ema_update`."""
    teacher = copy.deepcopy(student)
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``θ_teacher ← decay·θ_teacher + (1 − decay)·θ_student`` for parameters; buffers (e.g. norm statistics) are
    copied.

    Raises:
        ValueError: ``decay`` outside [0, 1].
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}.")
    for teacher_parameter, student_parameter in zip(teacher.parameters(), student.parameters()):
        teacher_parameter.mul_(decay).add_(student_parameter.detach(), alpha=1.0 - decay)
    for teacher_buffer, student_buffer in zip(teacher.buffers(), student.buffers()):
        teacher_buffer.copy_(student_buffer)


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
