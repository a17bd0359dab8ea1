"""CMC's consistency terms: NT-Xent against a hand computation, CAC values, the ramps."""
from __future__ import annotations

import math

import pytest
import torch

from nnunet_mm.cmc.losses import cac_loss, csc_loss
from nnunet_mm.training.schedules import cosine_rampdown, sigmoid_rampup


def test_channel_nt_xent_equals_a_hand_computed_value():
    torch.manual_seed(0)
    a, b = torch.randn(1, 2, 3), torch.randn(1, 2, 3)  # C = 2 channels, N = 3 voxels
    tau = 0.5
    embeddings = [a[0, 0], a[0, 1], b[0, 0], b[0, 1]]
    positive = {0: 2, 1: 3, 2: 0, 3: 1}

    def cos(x, y):
        return float(torch.dot(x, y) / (x.norm() * y.norm()))

    total = 0.0
    for i in range(4):
        denominator = sum(math.exp(cos(embeddings[i], embeddings[k]) / tau) for k in range(4) if k != i)
        total += -math.log(math.exp(cos(embeddings[i], embeddings[positive[i]]) / tau) / denominator)
    assert csc_loss(a, b, tau).item() == pytest.approx(total / 4, rel=1e-5)


def test_matching_channels_give_a_lower_loss_than_shuffled_ones():
    torch.manual_seed(1)
    a = torch.randn(2, 8, 4, 4)
    assert csc_loss(a, a + 0.05 * torch.randn_like(a)) < csc_loss(a, a[:, torch.randperm(8)])


def test_anatomical_consistency_voxelwise_and_pooled():
    p = torch.zeros(1, 3, 8, 8)
    p[:, 0] = 1
    p[:, 0, 2:5, 2:5], p[:, 1, 2:5, 2:5] = 0, 1
    moved = torch.roll(p, 3, dims=3)
    assert cac_loss(p, p, paired=True).item() == pytest.approx(0, abs=1e-4)
    assert cac_loss(p, moved, paired=True).item() > 0.3  # misaligned: voxelwise disagreement
    assert cac_loss(p, moved, paired=False).item() == pytest.approx(0, abs=1e-4)  # same volumes


def test_ramps_follow_the_paper_rescaled_to_the_schedule():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(99, 100) == pytest.approx(1.0)
    assert cosine_rampdown(0, 100) == pytest.approx(1.0) and cosine_rampdown(99, 100) == pytest.approx(0.0)
    assert sigmoid_rampup(69, 100, start_epoch=70) == 0.0 == cosine_rampdown(69, 100, start_epoch=70)
    assert sigmoid_rampup(70, 100, start_epoch=70) == pytest.approx(math.exp(-5))


def test_a_class_neither_prediction_shows_counts_as_agreement():
    """Identical liver masks whose absent tumour class carries independent residual probabilities (≤ 1e-3): CAC
    must be ~0 (with a vanishing smooth the scale-invariant soft Dice compared the noise patterns: CAC 0.12)."""
    generator = torch.Generator().manual_seed(0)
    liver = (torch.rand(2, 1, 64, 64, generator=generator) > 0.5).float()

    def prediction() -> torch.Tensor:
        tumour = 1e-3 * torch.rand(2, 1, 64, 64, generator=generator)
        return torch.cat((1 - liver - tumour, liver, tumour), 1)

    first, second = prediction(), prediction()
    assert float(cac_loss(first, second, paired=True)) < 0.005
    assert float(cac_loss(first, second, paired=False)) < 0.005
    shifted = torch.cat((1 - liver.roll(8, -1), liver.roll(8, -1), torch.zeros_like(liver)), 1)
    assert float(cac_loss(first, shifted, paired=True)) > 0.2  # a real disagreement still counts
