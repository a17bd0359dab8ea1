"""Loss-weight schedules over epochs, shared by the trainers (CMC's consistency weights, the weak mean teacher's λ).

:func:`sigmoid_rampup` and :func:`cosine_rampdown` are the weights ``exp(−5(1 − t)²)`` and ``½(cos(π t) + 1)`` of
Laine & Aila's temporal ensembling, as paper 001 uses them, with ``t`` the progress from a start epoch to the last
epoch.
"""
from __future__ import annotations

import math


def _progress(epoch: int, start_epoch: int, num_epochs: int) -> float:
    span = max(num_epochs - 1 - start_epoch, 1)
    return min(max((epoch - start_epoch) / span, 0.0), 1.0)


def sigmoid_rampup(epoch: int, num_epochs: int, start_epoch: int = 0) -> float:
    """``exp(−5(1 − t)²)`` for ``t`` from 0 at ``start_epoch`` to 1 at the last epoch; 0 before the start."""
    if epoch < start_epoch:
        return 0.0
    t = _progress(epoch, start_epoch, num_epochs)
    return math.exp(-5.0 * (1.0 - t) ** 2)


def cosine_rampdown(epoch: int, num_epochs: int, start_epoch: int = 0) -> float:
    """``½(cos(π t) + 1)`` for ``t`` from 0 at ``start_epoch`` to 1 at the last epoch; 0 before the start."""
    if epoch < start_epoch:
        return 0.0
    t = _progress(epoch, start_epoch, num_epochs)
    return 0.5 * (math.cos(math.pi * t) + 1.0)
