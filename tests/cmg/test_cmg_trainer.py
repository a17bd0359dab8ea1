"""CMGTrainer, built the nnU-Net way on the session's planned phantom: per-phase targets, the network from plans,
the prototype schedule, and its loss inside the shared training step."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nnunet_mm.cmg.network import CMGUNet
from nnunet_mm.cmg.trainer import CMGTrainer, cmg_unet_from_plans, pooled_class_masks, side_target
from nnunet_mm.networks.from_plans import stream_width_factor
from nnunet_mm.training.multimodal_trainer import labels_following_channels, resize_label


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


def test_side_targets_are_the_phase_labels_max_pooled_like_the_prototype_masks():
    """A lesion smaller than a side-head cell stays in the side target (the paper's maxpool_s(Y)), in the same cell as
    in the prototype mask; nearest-neighbour downsampling would lose it."""
    label = torch.zeros(1, 1, 32, 32)
    label[:, :, 4:28, 4:28] = 1
    label[:, :, 13, 21] = 2  # one tumour voxel
    masks = pooled_class_masks(label, [(4, 4), (8, 8)], num_classes=3)
    for level_masks, shape in zip(masks, [(4, 4), (8, 8)]):
        target = side_target(level_masks)
        expected = torch.nn.functional.adaptive_max_pool2d(label, shape)  # highest class under each cell
        torch.testing.assert_close(target, expected)
        assert torch.equal(target == 2, level_masks[:, 1:2] > 0)  # tumour cells of target and mask coincide
    assert (resize_label(label, (4, 4)) == 2).sum() == 0  # what nearest downsampling would have kept


def test_the_step_trains_side_heads_on_their_own_phase_pooled_label(trainer_kit, monkeypatch):
    """compute_loss hands cmg_loss, per phase and guidance level, the max-pooled label of *that* phase as it was
    moved by the augmentation; cmg_loss scores each side head against exactly that target."""
    trainer = trainer_kit.trainer(CMGTrainer, block={"misalignment": {"probability": 1.0, "max_translation_mm": [6, 6]},
                                                     "modality_dropout": {"probability": 0.0}, "seed": 0})
    seen = {}
    original = CMGTrainer.cmg_loss

    def record(self, result, target, phase_labels, side_targets):
        seen.update(result=result, phase_labels=phase_labels, side_targets=side_targets)
        return original(self, result, target, phase_labels, side_targets)

    monkeypatch.setattr(CMGTrainer, "cmg_loss", record)
    side_calls = []
    side_loss = trainer.side_loss
    trainer.side_loss = lambda logits, target: side_calls.append(target) or side_loss(logits, target)
    loader, _ = trainer.get_dataloaders()
    trainer.train_step(next(loader))
    phase_labels, side_targets = seen["phase_labels"], seen["side_targets"]
    assert (phase_labels[:, 1:] != phase_labels[:, :1]).any()  # the phases' labels moved apart
    expected_order = []
    for p, per_level in enumerate(seen["result"]["side_logits"]):
        for level, logits in enumerate(per_level):
            pooled = torch.nn.functional.adaptive_max_pool2d(phase_labels[:, p:p + 1].float(), logits.shape[2:])
            torch.testing.assert_close(side_targets[p][level].float(), pooled)
            expected_order.append(side_targets[p][level])
    assert len(side_calls) == len(expected_order)
    for called, expected in zip(side_calls, expected_order):
        assert called is expected


@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("phase_weight,side_weight", [(1.0, 1.0), (0.5, 0.25)])
def test_the_loss_is_the_reference_head_plus_the_weighted_auxiliary_heads(trainer_kit, phase_weight, side_weight,
                                                                          reduction):
    """L = DS(reference) + A, A = λ_phase Σ_{p≠ref} DS(p) + λ_side Σ_{p,level} side(p, level) ("sum": every head
    weighs 1) or A divided by the number of auxiliary heads ("mean"): with three phases and two guidance levels,
    2 other-phase heads and 6 side heads (each loss 1 here); the reference head on the reference output and target."""
    trainer = _three_phase_trainer(trainer_kit, {"reference_channel": 1})
    trainer.phase_loss_weight, trainer.side_loss_weight = phase_weight, side_weight
    trainer.auxiliary_reduction = reduction
    outputs = [[torch.full((1, 3, 8, 8), float(p)), torch.full((1, 3, 4, 4), float(p))] for p in range(3)]
    side_logits = [[torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 4, 4)] for _ in range(3)]
    target = [torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 4, 4)]
    phase_labels = torch.zeros(1, 3, 8, 8)
    side_targets = [[torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 4, 4)] for _ in range(3)]
    calls = []
    trainer.loss = lambda out, tgt: calls.append(("ds", out, tgt)) or torch.tensor(1.0)
    trainer.side_loss = lambda out, tgt: calls.append(("side", out, tgt)) or torch.tensor(1.0)
    loss = trainer.cmg_loss({"outputs": outputs, "side_logits": side_logits}, target, phase_labels, side_targets)
    auxiliary = 2 * phase_weight + 6 * side_weight
    assert float(loss) == pytest.approx(1 + (auxiliary / 8 if reduction == "mean" else auxiliary))
    kind, first_output, first_target = calls[0]
    assert kind == "ds" and first_output is outputs[1] and first_target is target  # the reference head
    assert sum(kind == "ds" for kind, _, _ in calls) == 3 and sum(kind == "side" for kind, _, _ in calls) == 6


def test_the_trainer_passes_its_prototype_schedule_to_the_network(trainer_kit):
    """Epoch 0: prototypes from the labels for every sample; last epoch with the end fraction 1: from the
    network's predictions for every sample."""
    trainer = trainer_kit.trainer(CMGTrainer, block={"seed": 0})
    trainer.predicted_prototypes_end = 1.0
    network = trainer.unwrapped_network
    seen = []
    forward = network.forward
    network.forward = lambda *args, **kwargs: seen.append(kwargs.get("use_prediction")) or forward(*args, **kwargs)
    loader, _ = trainer.get_dataloaders()
    batch = next(loader)
    for epoch in (0, trainer.num_epochs - 1):
        trainer.current_epoch = epoch
        trainer.train_step(batch)
    assert not seen[0].any() and seen[1].all()


def test_the_log_says_when_other_phases_fall_back_to_the_reference_label(trainer_kit):
    trainer = trainer_kit.trainer(CMGTrainer, block={"seed": 0})
    log = open(trainer.log_file, encoding="utf-8").read()
    assert "no per-phase labels" in log and "reference label" in log


def test_the_log_states_the_feature_widths_fusion_guidance_and_prototype_schedule(trainer_kit):
    """The phantom's 2d plans: PlainConvUNet (32, 64, 128, 256), two phases, nnU-Net's 1000 epochs."""
    log = open(trainer_kit.trainer(CMGTrainer, block={"seed": 0}).log_file, encoding="utf-8").read()
    assert ("nnunet_mm CMG: CMGUNet, one encoder per phase (2 phases), features per stage [20, 40, 76, 152] (the "
            "plans' PlainConvUNet [32, 64, 128, 256] x 0.60, so that 2 streams fit where one U-Net did); Multi-Scale "
            "Fusion of the phases at encoder stages [1, 2, 3]; Cross-Modal Guidance at the 2 deepest decoder levels "
            "(modulation on)") in log
    assert ("nnunet_mm CMG: prototypes from each phase's own label (teacher forcing), except a share of the samples "
            "that use the network's side predictions instead, rising linearly from 0% at epoch 0 to 50% at epoch 999 "
            "(teacher forcing 100% -> 50%; inference always uses predictions); loss: reference head + 1.0 x each "
            "other phase's head + 1.0 x each side head (sum over the auxiliary heads)") in log


def test_the_log_names_the_configuration_and_folder_of_per_phase_labels(trainer_kit):
    """A '<c>_phases' configuration (as 'nnunet_mm phase-labels' adds it): the log names its data and raw folder."""
    shutil.copytree(trainer_kit.preprocessed / "nnUNetPlans_2d", trainer_kit.preprocessed / "nnUNetPlans_2d_phases")
    plans = trainer_kit.plans()
    plans["configurations"]["2d_phases"] = {"inherits_from": "2d", "data_identifier": "nnUNetPlans_2d_phases"}
    trainer = CMGTrainer(plans, "2d_phases", "all", trainer_kit.dataset_json({"phase_labels_dir": "labelsTr_phases"}),
                         device=torch.device("cpu"))
    trainer.initialize()
    assert (f"nnunet_mm CMG: every phase is supervised with its own label (configuration '2d_phases', data "
            f"{trainer_kit.preprocessed / 'nnUNetPlans_2d_phases'}, from the raw dataset's labelsTr_phases/, made by "
            f"'nnunet_mm phase-labels').") in open(trainer.log_file, encoding="utf-8").read()
