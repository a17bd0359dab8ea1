"""MASPriorTrainer's augmentation hooks, the trainer built the nnU-Net way on the session's planned phantom (its
channel 1 declared an atlas prior); its CLI cycle is in tests/cli/test_mas_cycle.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_mm.atlas.prior_augmentation import ImageChannelsOnly
from nnunet_mm.atlas.trainer import MASPriorTrainer


def _prior_trainer(kit, **block) -> MASPriorTrainer:
    """Channel 0 the image, channel 1 the liver's atlas prior (named ``noNorm``, marked in ``modalities``)."""
    dataset_json = kit.dataset_json({"modalities": {"0": "CT", "1": "atlas_prior:liver"}, **block},
                                    channel_names={"0": "CT", "1": "noNorm"})
    return kit.trainer(MASPriorTrainer, dataset_json=dataset_json)


def test_device_augmentation_drops_priors_and_keeps_the_image(trainer_kit):
    trainer = _prior_trainer(trainer_kit, prior_dropout={"probability": 1.0}, seed=0)
    assert trainer.prior_channels == [1] and trainer.mm_settings.num_channels == 1
    data = torch.rand(2, 2, 16, 16) + 0.1
    out, _ = trainer.augment_multimodal(data)
    assert torch.equal(out[:, 0], data[:, 0]) and torch.all(out[:, 1:] == 0)


def test_prior_dropout_defaults_to_0_3_and_the_trainer_refuses_a_dataset_without_priors(trainer_kit):
    assert _prior_trainer(trainer_kit).prior_dropout_probability == 0.3
    with pytest.raises(ValueError, match="marks no atlas prior channels"):
        trainer_kit.trainer(MASPriorTrainer, initialize=False)


def test_training_transforms_restrict_intensity_transforms_to_the_image(trainer_kit):
    trainer = _prior_trainer(trainer_kit)
    pipeline = trainer.get_training_transforms((32, 32), (-np.pi, np.pi), None, (0, 1), False,
                                               use_mask_for_norm=[False] * 2, foreground_labels=[1, 2])
    assert sum(isinstance(t, ImageChannelsOnly) for t in pipeline.transforms) == 7


def _log(trainer) -> str:
    return open(trainer.log_file, encoding="utf-8").read()


def test_the_log_names_image_and_prior_channels_and_says_misalignment_leaves_the_priors_alone(trainer_kit):
    """One image channel: the augmentations are off, said once, and the channel count includes the prior."""
    log = _log(_prior_trainer(trainer_kit, seed=0))
    assert ("nnunet_mm: 2 channel(s): image channel(s) 0 (pv); atlas prior channel(s) 1 (atlas_prior:liver); "
            "reference channel 0 (pv); seed 0") in log
    assert ("nnunet_mm: image channels: misalignment OFF, modality dropout OFF (one image channel: nothing to "
            "misalign or drop). Prior channels [1]: never misaligned or replaced") in log
    assert "no intensity augmentation; prior dropout p=0.3 (all prior channels of a sample zeroed together)" in log
    assert log.count("misalignment O") == 1 and "1 channel(s)" not in log


def test_with_two_image_channels_the_log_says_misalignment_is_on_for_the_images_only(trainer_kit):
    """The phantom's phases are declared separately acquired: misalignment on, for the images only."""
    dataset_json = trainer_kit.dataset_json(
        {"modalities": {"0": "CT", "1": "CT", "2": "atlas_prior:liver"}, "phase_names": ["pv", "art", "prior"]},
        channel_names={"0": "CT", "1": "CT", "2": "noNorm"})
    log = _log(trainer_kit.trainer(MASPriorTrainer, dataset_json=dataset_json))
    assert "3 channel(s): image channel(s) 0 (pv), 1 (art); atlas prior channel(s) 2 (atlas_prior:liver)" in log
    assert ("image channels: misalignment ON, modality dropout ON (channel_acquisition 'separate'); misalignment "
            in log)
    assert "Prior channels [2]: never misaligned or replaced" in log
    assert log.count("misalignment ON") == 1 and "misalignment OFF" not in log


def _recipe_block(learned_training_cases):
    return {"atlas_dataset": "/atlases", "atlas_channel": 0, "atlas_files": {}, "target_channel": 0, "num_atlases": 1,
            "fusion": "simnet", "local_sigma_voxels": 2.0, "local_power": 2.0, "num_classes": 3,
            "prior_classes": {"liver": 1}, "registration": {"backend": "learned", "model": "/m", "weights_sha256": "x"},
            "simnet_model": "/m", "learned_training_cases": learned_training_cases}


def test_a_fold_whose_validation_cases_trained_the_learned_priors_is_refused(trainer_kit):
    def dataset_json(learned_training_cases):
        return trainer_kit.dataset_json({"modalities": {"0": "CT", "1": "atlas_prior:liver"},
                                         "mas_priors": _recipe_block(learned_training_cases)},
                                        channel_names={"0": "CT", "1": "noNorm"})

    # not recorded (an older model): nothing to check
    train_keys, val_keys = trainer_kit.trainer(MASPriorTrainer, dataset_json=dataset_json(None), fold=0).do_split()
    fine = trainer_kit.trainer(MASPriorTrainer, dataset_json=dataset_json(sorted(train_keys)), fold=0)
    assert fine.do_split() == (train_keys, val_keys)
    leaking = dataset_json(trainer_kit.case_ids)
    with pytest.raises(ValueError, match=rf"fold 0 validates on \['{val_keys[0]}'.*which the learned registration"
                                         rf"/fusion networks of its priors were trained on.*mas-train --fold 0"):
        trainer_kit.trainer(MASPriorTrainer, dataset_json=leaking, fold=0).do_split()
    # fold 'all' has no held-out validation to protect
    trainer_kit.trainer(MASPriorTrainer, dataset_json=leaking, fold="all").do_split()
