"""WeakLabelTrainer, built the nnU-Net way on the session's planned phantom (its labels standing in for pseudo
masks): the mean-teacher loss inside the shared training step, the EMA update after every optimizer step, image
labels, the teacher beside the checkpoint, and refinement (the whole weak-label cycle through the commands is in
tests/cli/test_weak_cycle.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nnunet_mm.weak.trainer import WeakLabelTrainer, WeakLabelTrainer_debug


def _gradient(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_the_consistency_term_trains_the_student_in_the_shared_step(trainer_kit, monkeypatch):
    """With nnU-Net's supervised loss zeroed, the student still gets gradients: from the consistency with the
    teacher, which gets none (it is not trained by back-propagation)."""
    trainer = trainer_kit.trainer(WeakLabelTrainer, block={"seed": 0})
    calls = []
    hook = WeakLabelTrainer.compute_loss
    monkeypatch.setattr(WeakLabelTrainer, "compute_loss", lambda self, *args: calls.append(1) or hook(self, *args))
    monkeypatch.setattr(trainer, "loss", lambda output, target: 0.0 * sum(o.sum() for o in output))
    loader, _ = trainer.get_dataloaders()
    result = trainer.train_step(next(loader))
    assert len(calls) == 1 and set(result) == {"loss", "consistency_loss"} and result["consistency_loss"] > 0
    assert _gradient(trainer.network) > 0
    assert all(p.grad is None for p in trainer.teacher.parameters())


def test_the_teacher_follows_the_student_after_every_optimizer_step(trainer_kit):
    trainer = trainer_kit.trainer(WeakLabelTrainer, block={"seed": 0, "weak_supervision": {"ema_decay": 0.9}})
    before = [p.detach().clone() for p in trainer.teacher.parameters()]
    loader, _ = trainer.get_dataloaders()
    trainer.train_step(next(loader))
    for teacher_before, teacher, student in zip(before, trainer.teacher.parameters(),
                                                trainer.student_network.parameters()):
        torch.testing.assert_close(teacher, 0.9 * teacher_before + 0.1 * student.detach())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.teacher.parameters()))


def test_the_consistency_is_logged_once_per_epoch_and_refinement_follows(trainer_kit):
    """The debug schedule refines after the first epoch: the teacher relabels every diseased training case."""
    normal = trainer_kit.case_ids[0]
    trainer = trainer_kit.trainer(WeakLabelTrainer_debug, block={"image_labels": {normal: "normal"}})
    trainer.on_train_epoch_end([{"loss": np.float32(1.0), "consistency_loss": np.float32(0.125)}])
    assert trainer.logger.local_logger.my_fantastic_logging["consistency_loss"] == [0.125]
    log = open(trainer.log_file, encoding="utf-8").read()
    assert log.count("nnunet_mm: consistency 0.12500 (weight ") == 1
    assert "1 normal case(s) trained as all background" in log
    refined = sorted(p.stem for p in trainer.refined_label_folder.glob("*.npy"))
    assert refined == trainer_kit.case_ids[1:]  # every case but the normal one


def test_the_log_states_targets_teacher_refinement_and_what_validation_dice_means(trainer_kit):
    normal = trainer_kit.case_ids[0]
    trainer = trainer_kit.trainer(WeakLabelTrainer_debug, block={"image_labels": {normal: "normal"}})
    log = open(trainer.log_file, encoding="utf-8").read()
    assert (f"nnunet_mm Weak: targets are pseudo masks: the dataset's {trainer_kit.raw / 'labelsTr'}, preprocessed "
            f"in {trainer_kit.preprocessed / 'nnUNetPlans_2d'} (dataset.json does not say they are pseudo masks") in log
    assert "1 normal case(s) trained as all background (image labels inline in the block)" in log
    assert ("nnunet_mm Weak: student = nnU-Net's network (what nnUNetv2_predict loads); teacher = EMA of the student, "
            "decay 0.99, updated after every optimizer step; consistency MSE(student, teacher on an "
            "intensity-perturbed view) weighted 1.0 x sigmoid ramp-up over the first 1 of 2 epochs") in log
    assert ("nnunet_mm Weak: refinement at the end of epoch(s) 0 (every 1: refinement_interval 1 epoch): the "
            "teacher relabels the diseased training cases, voxels with p >= 0.9 take its label") in log
    assert ("nnunet_mm Weak: validation Dice (the pseudo Dice of every epoch, its EMA that picks checkpoint_best, "
            "and the final validation's summary.json) is measured against the pseudo masks as exported, not against "
            "true masks") in log


def test_the_log_gives_the_refinement_epochs_of_a_long_run_and_the_pseudo_mask_note(trainer_kit):
    note = "labelsTr are CLTN pseudo masks (otsu); normal cases are all background"
    trainer = trainer_kit.trainer(WeakLabelTrainer, block={"notes": [note]})
    log = open(trainer.log_file, encoding="utf-8").read()
    assert f"(dataset.json notes: {note!r})" in log
    assert ("refinement at the end of epoch(s) 199, 399, 599, 799 (every 200: refinement_interval 20% of the "
            "epochs)") in log


def test_a_resumed_run_says_which_refined_labels_replace_the_pseudo_masks(trainer_kit):
    trainer = trainer_kit.trainer(WeakLabelTrainer)
    trainer.refined_label_folder.mkdir(parents=True)
    for case in trainer_kit.case_ids[:2]:
        np.save(trainer.refined_label_folder / f"{case}.npy", np.zeros((1, 2, 2), np.int16))
    trainer.current_epoch = 100  # as load_checkpoint sets it for --c
    trainer.on_train_start()
    assert (f"nnunet_mm Weak: resuming at epoch 100: 2 refined label(s) in {trainer.refined_label_folder} replace "
            f"their pseudo masks") in open(trainer.log_file, encoding="utf-8").read()


def test_image_labels_are_read_from_the_file_the_block_names(trainer_kit):
    normal = trainer_kit.case_ids[-1]
    (trainer_kit.raw / "image_labels.json").write_text(json.dumps({normal: "normal"}), encoding="utf-8")
    trainer = trainer_kit.trainer(WeakLabelTrainer, block={"image_labels": "image_labels.json"})
    assert trainer.normal_cases == {normal}
    with pytest.raises(FileNotFoundError, match="missing.json"):
        trainer_kit.trainer(WeakLabelTrainer, block={"image_labels": "missing.json"})


def test_the_teacher_is_restored_from_beside_the_checkpoint(trainer_kit, tmp_path):
    """What ``nnUNetv2_train ... --c`` does: a new trainer loads the checkpoint and the teacher saved beside it."""
    trainer = trainer_kit.trainer(WeakLabelTrainer, block={"seed": 0})
    loader, _ = trainer.get_dataloaders()
    trainer.train_step(next(loader))
    checkpoint = str(tmp_path / "checkpoint_latest.pth")
    trainer.save_checkpoint(checkpoint)
    resumed = WeakLabelTrainer({**trainer_kit.plans(), "continue_training": True}, "2d", "all",
                               trainer_kit.dataset_json(), torch.device("cpu"))
    resumed.load_checkpoint(checkpoint)
    for key, value in trainer.teacher.state_dict().items():
        torch.testing.assert_close(resumed.teacher.state_dict()[key], value)
    student = resumed.student_network.state_dict()
    assert any(not torch.equal(student[k], v) for k, v in trainer.teacher.state_dict().items()
               if v.is_floating_point())


# ----------------------------------------------------------------------------------------------------------------
# the schedule scales with num_epochs; refinement changes what training is served

def _refinement_calls(trainer, monkeypatch) -> list[int]:
    """Run on_train_epoch_end for every epoch of the run and return the epochs after which refine_labels ran."""
    calls = []
    monkeypatch.setattr(trainer, "refine_labels", lambda: calls.append(trainer.current_epoch))
    for epoch in range(trainer.num_epochs):
        trainer.current_epoch = epoch
        trainer.on_train_epoch_end([{"loss": np.float32(1.0), "consistency_loss": np.float32(0.1)}])
    return calls


def test_a_ten_epoch_run_refines_with_the_default_interval(trainer_kit, monkeypatch):
    """The interval is 20 % of num_epochs, resolved when training runs (benchmarks set num_epochs after the
    constructor): a 10-epoch run refines 4 times; the old absolute 100 epochs never fired in one."""
    trainer = trainer_kit.trainer(WeakLabelTrainer, initialize=False)
    trainer.num_epochs = 10
    assert _refinement_calls(trainer, monkeypatch) == [1, 3, 5, 7]
    assert trainer.consistency_rampup_epochs == 4  # the ramp is a fraction too (40 %)
    trainer.num_epochs = 1000
    assert trainer.refinement_epochs() == [199, 399, 599, 799]
    absolute = trainer_kit.trainer(WeakLabelTrainer, block={"weak_supervision": {"refinement_interval": 3,
                                                                                  "consistency_rampup": 2}},
                                   initialize=False)
    absolute.num_epochs = 10
    assert _refinement_calls(absolute, monkeypatch) == [2, 5, 8] and absolute.consistency_rampup_epochs == 2


def _make_teacher_confident(teacher: torch.nn.Module, label: int) -> None:
    """Make every output of the teacher's segmentation heads ``label`` with p ≈ 1."""
    with torch.no_grad():
        for layer in teacher.decoder.seg_layers:
            layer.weight.zero_()
            layer.bias.fill_(-20.0)
            layer.bias[label] = 20.0


def test_refinement_changes_the_labels_the_training_data_serves(trainer_kit):
    """After a refinement epoch, the training dataset (what nnU-Net's data loader reads) serves the teacher's
    confident labels for diseased cases instead of the pseudo masks; normal cases stay all background."""
    normal = trainer_kit.case_ids[0]
    trainer = trainer_kit.trainer(WeakLabelTrainer, block={"image_labels": {normal: "normal"}})
    trainer.num_epochs = 10
    dataset, _ = trainer.get_tr_and_val_datasets()
    diseased = trainer_kit.case_ids[1]
    before = np.asarray(dataset.load_case(diseased)[1]).copy()
    assert set(np.unique(before)) >= {0, 1, 2}  # the phantom's pseudo labels: background, liver, tumour
    _make_teacher_confident(trainer.teacher, label=1)
    trainer.current_epoch = trainer.refinement_epochs()[0]
    trainer.on_train_epoch_end([{"loss": np.float32(1.0), "consistency_loss": np.float32(0.1)}])
    served = np.asarray(dataset.load_case(diseased)[1])
    inside = before >= 0
    assert np.all(served[inside] == 1) and np.array_equal(served[~inside], before[~inside])
    assert not np.asarray(dataset.load_case(normal)[1]).clip(0).any()
    # a new epoch's data loader reads the same refined labels
    loader_dataset, _ = trainer.get_tr_and_val_datasets()
    assert np.array_equal(np.asarray(loader_dataset.load_case(diseased)[1]), served)


@pytest.mark.parametrize("acquisition, expected", [
    ("colour_planes", False),   # RGB (ISIC, converter 508)
    ("co_registered", False),   # BraTS sequences
    (None, False),              # not declared
    ("separate", True),         # CT phases of different breath-holds
])
def test_weak_label_training_misaligns_and_drops_channels_only_for_separately_acquired_channels(
        trainer_kit, acquisition, expected):
    dataset_json = trainer_kit.dataset_json({"seed": 0})
    dataset_json["nnunet_mm"].pop("channel_acquisition", None)
    if acquisition is not None:
        dataset_json["nnunet_mm"]["channel_acquisition"] = acquisition
    trainer = trainer_kit.trainer(WeakLabelTrainer, dataset_json=dataset_json)
    batch = torch.rand(8, 2, 32, 32)
    augmented, draw = trainer.augment_multimodal(batch.clone())
    assert (not torch.equal(augmented, batch)) is expected
    assert (draw.misalignment is not None, draw.dropout is not None) == (expected, expected)
    switch = "ON" if expected else "OFF"
    log = open(trainer.log_file, encoding="utf-8").read()
    assert f"nnunet_mm: misalignment {switch}, modality dropout {switch} (" in log
