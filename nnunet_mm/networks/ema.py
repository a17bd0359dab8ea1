"""Exponential moving average (EMA) of a network's weights: the mean teacher of weak supervision and the averaged
denoiser of latent diffusion.

The update is PyTorch's own EMA step (``torch.optim.swa_utils.get_ema_multi_avg_fn``). The averaged network is a
plain copy of the model rather than an ``AveragedModel`` wrapper, so its ``state_dict`` has the model's own keys:
nnU-Net's predictor runs it directly and the checkpoints written so far still load.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn


def frozen_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode without gradients, to be updated by :func:`ema_update`."""
    average = copy.deepcopy(model)
    average.eval()
    average.requires_grad_(False)
    return average


@torch.no_grad()
def ema_update(average: nn.Module, model: nn.Module, decay: float) -> None:
    """``θ_average ← decay·θ_average + (1 − decay)·θ_model`` for parameters; buffers (e.g. norm statistics) are
    copied, as ``AveragedModel(use_buffers=False)`` does.

    Args:
        average: the averaged copy (from :func:`frozen_copy`), on the same device as ``model``.
        model: the trained network (unwrapped from DDP / ``torch.compile``), same architecture as ``average``.
        decay: weight of the old average, in [0, 1].

    Raises:
        ValueError: ``decay`` outside [0, 1].
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}.")
    averaged_parameters = list(average.parameters())
    if averaged_parameters:
        get_ema_multi_avg_fn(decay)(averaged_parameters, [p.detach() for p in model.parameters()], None)
    for averaged_buffer, buffer in zip(average.buffers(), model.buffers()):
        averaged_buffer.copy_(buffer)
