"""MASPriorTrainer's augmentation hooks without an nnU-Net run (its CLI cycle is in tests/cli/test_mas_cycle.py)."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from nnunet_mm.atlas.prior_augmentation import ImageChannelsOnly
from nnunet_mm.settings.multimodal import MultiModalSettings
from nnunet_mm.atlas.trainer import MASPriorTrainer

PRIOR_DATASET_JSON = {"channel_names": {"0": "MR", "1": "noNorm", "2": "noNorm"},
                      "labels": {"background": 0, "liver": 1, "tumor": 2},
                      "nnunet_mm": {"modalities": {"0": "MR", "1": "atlas_prior:liver", "2": "atlas_prior:tumor"}}}


def _trainer_without_nnunet() -> MASPriorTrainer:
    trainer = MASPriorTrainer.__new__(MASPriorTrainer)
    trainer.prior_channels, trainer.num_image_channels = [1, 2], 1
    trainer.mm_settings = dataclasses.replace(MultiModalSettings.from_dataset_json(PRIOR_DATASET_JSON),
                                              num_channels=1)
    trainer.augmentation_generator = torch.Generator().manual_seed(0)
    trainer.prior_dropout_probability = 1.0
    return trainer


def test_device_augmentation_drops_priors_and_keeps_the_image():
    trainer = _trainer_without_nnunet()
    data = torch.rand(2, 3, 16, 16) + 0.1
    out, _ = trainer.augment_multimodal_with_draw(data)
    assert torch.equal(out[:, 0], data[:, 0]) and torch.all(out[:, 1:] == 0)


def test_training_transforms_restrict_intensity_transforms_to_the_image():
    trainer = _trainer_without_nnunet()
    pipeline = trainer.get_training_transforms((32, 32), (-np.pi, np.pi), None, (0, 1), False,
                                               use_mask_for_norm=[False] * 3, foreground_labels=[1, 2])
    assert sum(isinstance(t, ImageChannelsOnly) for t in pipeline.transforms) == 7
