"""CMCTrainer pieces that need no nnU-Net run: pairing across modalities, self-pairs, the consistency schedule."""
from __future__ import annotations

import torch

from nnunet_mm.training.cmc_trainer import CMCTrainer


def _trainer(modalities: dict[str, str]) -> CMCTrainer:
    trainer = CMCTrainer.__new__(CMCTrainer)
    trainer.case_modality = modalities
    trainer.paired = False
    trainer.augmentation_generator = torch.Generator().manual_seed(0)
    return trainer


def test_pairs_mix_modalities_when_the_batch_has_both():
    trainer = _trainer({"ct1": "CT", "ct2": "CT", "mr1": "MR", "mr2": "MR"})
    order = trainer._pair_order(["ct1", "mr1", "ct2", "mr2"]).tolist()
    keys = ["ct1", "mr1", "ct2", "mr2"]
    pairs = [(keys[a], keys[b]) for a, b in zip(order[:2], order[2:])]
    assert all(trainer.case_modality[a] != trainer.case_modality[b] for a, b in pairs)


def test_self_pairs_copy_the_first_stream_and_respect_the_probability():
    trainer = _trainer({})
    trainer.self_pairing_probability = 1.0
    data = torch.randn(4, 1, 8, 8)
    first, second = trainer._streams(data, torch.arange(4))
    assert torch.equal(first, second)
    trainer.self_pairing_probability = 0.0
    first, second = trainer._streams(data, torch.arange(4))
    assert torch.equal(first, data[:2]) and torch.equal(second, data[2:])


def test_consistency_terms_start_at_the_configured_epoch():
    trainer = _trainer({})
    trainer.num_epochs, trainer.semi_start_fraction = 10, 0.7
    trainer.current_epoch = 6
    assert trainer.consistency_weights() == (0.0, 0.0)
    trainer.current_epoch = 7
    w_csc, w_cac = trainer.consistency_weights()
    assert 0 < w_csc < 0.01 and w_cac == 1.0
