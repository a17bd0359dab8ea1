"""CLTN's losses (methods.md §4.3): least-squares adversarial terms on patch and CAM logits, cycle, identity, CAM
and reconstruction terms, with the public code's per-dataset weights."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class CLTNLossWeights:
    """λ per term (``start_train.sh`` of the public code)."""

    adversarial: float = 1.0
    cycle: float = 10.0
    identity: float = 10.0
    cam: float = 1000.0
    reconstruction: float = 10.0


LOSS_WEIGHT_PRESETS: dict[str, CLTNLossWeights] = {
    "brats": CLTNLossWeights(adversarial=1.0, cycle=10.0, identity=10.0, cam=1000.0, reconstruction=10.0),
    "isic": CLTNLossWeights(adversarial=1.0, cycle=5.0, identity=50.0, cam=1400.0, reconstruction=10.0),
}


def loss_weights_preset(name: str) -> CLTNLossWeights:
    """The preset called ``name`` (``"brats"`` or ``"isic"``).

    Raises:
        KeyError: an unknown name (the message lists the presets).
    """
    if name not in LOSS_WEIGHT_PRESETS:
        raise KeyError(f"unknown loss-weight preset {name!r}; choose one of {sorted(LOSS_WEIGHT_PRESETS)}.")
    return LOSS_WEIGHT_PRESETS[name]


def least_squares(logits: torch.Tensor, target: float) -> torch.Tensor:
    """LSGAN term ``mean((logits − target)²)``."""
    return F.mse_loss(logits, torch.full_like(logits, target))


def discriminator_terms(real: tuple[torch.Tensor, torch.Tensor],
                        fakes: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """One discriminator's LSGAN loss: real patch and CAM logits → 1, every fake's → 0.

    Args:
        real: (patch logits, CAM logits) of real images of the discriminator's domain.
        fakes: the same for each kind of fake (raw translation and composite).
    """
    loss = least_squares(real[0], 1.0) + least_squares(real[1], 1.0)
    for patch, cam in fakes:
        loss = loss + least_squares(patch, 0.0) + least_squares(cam, 0.0)
    return loss


def generator_adversarial_terms(fakes: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The generator's LSGAN loss: every fake's patch and CAM logits → 1."""
    return sum(least_squares(patch, 1.0) + least_squares(cam, 1.0) for patch, cam in fakes)


def cam_classification(cam_logit_other_domain: torch.Tensor, cam_logit_own_domain: torch.Tensor) -> torch.Tensor:
    """The generator's CAM loss: logits on images of the other domain → 1 (to be translated), own domain → 0."""
    return (F.binary_cross_entropy_with_logits(cam_logit_other_domain, torch.ones_like(cam_logit_other_domain))
            + F.binary_cross_entropy_with_logits(cam_logit_own_domain, torch.zeros_like(cam_logit_own_domain)))
