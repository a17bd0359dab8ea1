"""CMGTrainer, built the nnU-Net way on the session's planned phantom: per-phase targets, the network from plans,
the prototype schedule, and its loss inside the shared training step."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from nnunet_mm.cmg.network import CMGUNet
from nnunet_mm.cmg.trainer import CMGTrainer, cmg_unet_from_plans
from nnunet_mm.networks.from_plans import stream_width_factor
from nnunet_mm.training.multimodal_trainer import labels_following_channels


def _three_phase_trainer(kit, block: dict) -> CMGTrainer:
    dataset_json = kit.dataset_json({**block, "phase_names": ["pv", "art", "del"], "seed": 0},
                                    channel_names={"0": "CT", "1": "CT", "2": "CT"})
    return kit.trainer(CMGTrainer, dataset_json=dataset_json)


def _blob_label() -> torch.Tensor:
    label = torch.zeros(2, 1, 32, 32)
    label[:, :, 8:20, 10:22] = 1
    label[:, :, 12:16, 13:17] = 2
    return label


def test_each_phase_label_moves_with_its_phase(trainer_kit):
    trainer = _three_phase_trainer(trainer_kit, {"misalignment": {"probability": 1.0, "max_translation_mm": [6, 6]},
                                                 "modality_dropout": {"probability": 0.0}})
    label = _blob_label()
    images = label.expand(-1, 3, -1, -1).clone()  # every phase "shows" the label: its warp is visible
    augmented, draw = trainer.augment_multimodal(images)
    phase_labels = trainer._phase_labels(label, draw)
    assert torch.equal(phase_labels[:, 0:1], label)  # the reference label is untouched
    assert (phase_labels[:, 1:] != label).any()  # the other phases' labels moved ...
    agreement = (phase_labels[:, 1:] == augmented[:, 1:].round()).float().mean()
    assert agreement > 0.97  # ... exactly where their images went


def test_a_dropped_phase_takes_the_label_of_the_phase_it_copies(trainer_kit):
    trainer = trainer_kit.trainer(CMGTrainer, block={"misalignment": {"probability": 1.0},
                                                     "modality_dropout": {"probability": 1.0}, "seed": 0})
    label = _blob_label()
    _, draw = trainer.augment_multimodal(torch.randn(2, 2, 32, 32))
    phase_labels = labels_following_channels(label, draw, 3, trainer.configuration_manager.spacing, "duplicate")
    assert torch.equal(phase_labels[:, 1:2], label)  # channel 1 was replaced by a copy of the reference


def test_network_from_default_plans_is_a_slimmer_cmg_unet():
    configuration = SimpleNamespace(
        network_arch_class_name="dynamic_network_architectures.architectures.unet.PlainConvUNet",
        network_arch_init_kwargs={"n_stages": 4, "features_per_stage": [32, 64, 128, 256],
                                  "conv_op": "torch.nn.modules.conv.Conv2d", "kernel_sizes": [[3, 3]] * 4,
                                  "strides": [[1, 1], [2, 2], [2, 2], [2, 2]], "n_conv_per_stage": [2] * 4,
                                  "n_conv_per_stage_decoder": [2] * 3, "conv_bias": True,
                                  "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
                                  "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None,
                                  "dropout_op_kwargs": None, "nonlin": "torch.nn.LeakyReLU",
                                  "nonlin_kwargs": {"inplace": True}},
        network_arch_init_kwargs_req_import=["conv_op", "norm_op", "dropout_op", "nonlin"])
    network = cmg_unet_from_plans(configuration, 2, 3, deep_supervision=True)
    assert isinstance(network, CMGUNet)
    assert network.encoders[0].output_channels == [20, 40, 76, 152]  # × 0.6, multiples of 4
    assert stream_width_factor(4) < stream_width_factor(2)
    outputs = network(torch.randn(1, 2, 64, 64))
    assert [o.shape[-1] for o in outputs] == [64, 32, 16]


def test_prototype_source_moves_from_ground_truth_to_predictions(trainer_kit):
    trainer = trainer_kit.trainer(CMGTrainer, initialize=False)
    trainer.num_epochs = 11
    fractions = []
    for epoch in (0, 5, 10):
        trainer.current_epoch = epoch
        fractions.append(trainer.predicted_prototype_fraction())
    assert fractions == [0.0, 0.25, 0.5]


def test_the_reference_channel_of_the_block_is_stored_in_the_weights(trainer_kit):
    trainer = trainer_kit.trainer(CMGTrainer, block={"reference_channel": 1})
    assert trainer.unwrapped_network.reference_channel == 1
    assert int(trainer.network.state_dict()["reference_index"]) == 1


def test_the_cmg_loss_runs_in_the_shared_step_and_trains_every_phase(trainer_kit, monkeypatch):
    """One step through MultiModalTrainer's step: the CMG loss is computed once, and the parts that only the
    other phase's loss and the side losses train receive gradients (at epoch 0 prototypes come from the labels,
    so nothing else reaches them)."""
    trainer = trainer_kit.trainer(CMGTrainer, block={"seed": 0})
    calls = []
    hook = CMGTrainer.compute_loss
    monkeypatch.setattr(CMGTrainer, "compute_loss", lambda self, *args: calls.append(1) or hook(self, *args))
    loader, _ = trainer.get_dataloaders()
    result = trainer.train_step(next(loader))
    assert len(calls) == 1 and np.isfinite(result["loss"]) and set(result) == {"loss"}
    network = trainer.unwrapped_network
    parts = {"phase 1 output heads (phase term)": list(network.decoders[1].seg_layers.parameters()),
             "side heads (side terms)": [p for level in network.guidance for p in level.side_heads.parameters()]}
    for name, parameters in parts.items():
        assert sum(float(p.grad.abs().sum()) for p in parameters if p.grad is not None) > 0, name
