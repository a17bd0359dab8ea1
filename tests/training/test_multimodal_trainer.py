"""MultiModalTrainer, built the nnU-Net way on the session's planned phantom: the multimodal augmentation, the
one training step every method shares (nnU-Net's update, the method's hook, extra logs), splits and the log file."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_mm.training.multimodal_trainer import MultiModalTrainer, StepLoss, reference_target
from nnunet_mm.training.refusal import TrainingRefused

ALWAYS_MISALIGN = {"misalignment": {"probability": 1.0}, "modality_dropout": {"probability": 0.0}, "seed": 0}
NO_AUGMENTATION = {"misalignment": {"probability": 0.0}, "modality_dropout": {"probability": 0.0}, "seed": 0}


def _trainer_with_channels(kit, block: dict, num_channels: int) -> MultiModalTrainer:
    dataset_json = kit.dataset_json(block, channel_names={str(c): "CT" for c in range(num_channels)})
    del dataset_json["nnunet_mm"]["phase_names"]  # the phantom names its two phases
    return kit.trainer(MultiModalTrainer, dataset_json=dataset_json)


def test_reference_channel_is_bit_identical_and_others_move(trainer_kit):
    trainer = _trainer_with_channels(trainer_kit, ALWAYS_MISALIGN, num_channels=3)
    data = torch.randn(2, 3, 48, 48)
    augmented, draw = trainer.augment_multimodal(data.clone())
    assert torch.equal(augmented[:, 0], data[:, 0])
    assert not torch.allclose(augmented[:, 1:], data[:, 1:])
    assert draw.misalignment is not None and not draw.misalignment.active[:, 0].any()


def test_cascade_channels_beyond_the_images_are_left_alone(trainer_kit):
    trainer = trainer_kit.trainer(MultiModalTrainer, block=ALWAYS_MISALIGN)  # 2 phases
    data = torch.randn(2, 4, 48, 48)  # 2 image channels + 2 one-hot channels of a previous stage
    augmented, _ = trainer.augment_multimodal(data.clone())
    assert augmented.shape == data.shape
    assert torch.equal(augmented[:, 2:], data[:, 2:])
    assert not torch.allclose(augmented[:, 1], data[:, 1])


def test_single_channel_dataset_is_untouched(trainer_kit):
    trainer = _trainer_with_channels(trainer_kit, ALWAYS_MISALIGN, num_channels=1)
    data = torch.randn(2, 1, 48, 48)
    augmented, draw = trainer.augment_multimodal(data.clone())
    assert torch.equal(augmented, data) and draw.misalignment is None and draw.dropout is None


def test_dropout_duplicates_a_present_channel(trainer_kit):
    block = {"misalignment": {"probability": 0.0}, "modality_dropout": {"probability": 1.0, "mode": "duplicate"}}
    trainer = trainer_kit.trainer(MultiModalTrainer, block=block)
    data = torch.randn(2, 2, 16, 16)
    augmented, _ = trainer.augment_multimodal(data.clone())
    assert torch.equal(augmented[:, 1], data[:, 0])


def _trainer_declaring(kit, acquisition: str | None, **block) -> MultiModalTrainer:
    """A trainer on the 2-phase phantom whose block declares ``acquisition`` (None: undeclared) and only the
    augmentation objects in ``block``, whatever the phantom writer declares."""
    dataset_json = kit.dataset_json()
    for key in ("channel_acquisition", "misalignment", "modality_dropout"):
        dataset_json["nnunet_mm"].pop(key, None)
    dataset_json["nnunet_mm"].update({"seed": 0, **block})
    if acquisition is not None:
        dataset_json["nnunet_mm"]["channel_acquisition"] = acquisition
    return kit.trainer(MultiModalTrainer, dataset_json=dataset_json)


def _log_text(trainer) -> str:
    return open(trainer.log_file, encoding="utf-8").read()


@pytest.mark.parametrize("acquisition", [None, "co_registered", "colour_planes"])
def test_without_separate_acquisition_the_batch_is_untouched_and_nothing_is_drawn(trainer_kit, acquisition):
    trainer = _trainer_declaring(trainer_kit, acquisition)
    data = torch.randn(4, 2, 32, 32)
    augmented, draw = trainer.augment_multimodal(data.clone())
    assert torch.equal(augmented, data) and draw.misalignment is None and draw.dropout is None
    assert "nnunet_mm: misalignment OFF, modality dropout OFF (channel_acquisition " in _log_text(trainer)


def test_the_log_says_how_to_turn_the_augmentation_on_when_the_acquisition_is_undeclared(trainer_kit):
    log = _log_text(_trainer_declaring(trainer_kit, None))
    assert ("misalignment OFF, modality dropout OFF (channel_acquisition not declared in dataset.json; set "
            "\"channel_acquisition\": \"separate\" in the 'nnunet_mm' block") in log


def test_separate_acquisition_moves_and_drops_non_reference_channels_only(trainer_kit):
    trainer = _trainer_declaring(trainer_kit, "separate")
    data = torch.randn(8, 2, 32, 32)
    augmented, draw = trainer.augment_multimodal(data.clone())
    assert draw.misalignment is not None and draw.dropout is not None
    assert torch.equal(augmented[:, 0], data[:, 0])
    moved = draw.misalignment.active[:, 1] | draw.dropout.dropped[:, 1]
    assert moved.any() and not torch.allclose(augmented[moved, 1], data[moved, 1])
    assert "nnunet_mm: misalignment ON, modality dropout ON (channel_acquisition 'separate')" in _log_text(trainer)


def test_explicit_modality_dropout_on_co_registered_channels_drops_without_moving(trainer_kit):
    trainer = _trainer_declaring(trainer_kit, "co_registered", modality_dropout={"probability": 1.0})
    data = torch.randn(2, 2, 16, 16)
    augmented, draw = trainer.augment_multimodal(data.clone())
    assert draw.misalignment is None and draw.dropout is not None
    assert torch.equal(augmented[:, 1], data[:, 0]) and torch.equal(augmented[:, 0], data[:, 0])
    assert "misalignment OFF, modality dropout ON" in _log_text(trainer)


def test_misalignment_requested_on_colour_planes_stops_the_trainer_naming_the_dataset_json(trainer_kit):
    with pytest.raises(ValueError, match=re.escape(f"{trainer_kit.preprocessed}/dataset.json") + ".*colour_planes"):
        _trainer_declaring(trainer_kit, "colour_planes", misalignment={"probability": 0.5})


def test_settings_come_from_the_preprocessed_dataset_json_and_name_it(trainer_kit):
    trainer = trainer_kit.trainer(MultiModalTrainer, block={"reference_channel": 1}, initialize=False)
    assert trainer.mm_settings.reference_channel == 1 and trainer.mm_settings.phase_names == ("pv", "art")
    assert trainer.dataset_settings.source.startswith(f"{trainer.preprocessed_dataset_folder_base}/dataset.json")
    with pytest.raises(ValueError, match=re.escape(f"{trainer_kit.preprocessed}/dataset.json")):
        trainer_kit.trainer(MultiModalTrainer, block={"reference_channel": 5}, initialize=False)


@pytest.mark.parametrize("value", ['"0.5"', "true", "1.5"])
def test_nnunetv2_train_refuses_a_bad_setting_with_one_error_line_saying_which_file_to_edit(trainer_kit, value):
    """Through nnU-Net's own command: exit 1, an error line naming the preprocessed copy and the key, no traceback;
    the raw dataset.json (unchanged) is named as differing, so the user knows editing it alone changes nothing."""
    copy = trainer_kit.preprocessed / "dataset.json"
    dataset_json = json.loads(copy.read_text(encoding="utf-8"))
    dataset_json["nnunet_mm"]["misalignment"] = {"probability": json.loads(value)}
    copy.write_text(json.dumps(dataset_json), encoding="utf-8")
    result = subprocess.run([os.path.join(os.path.dirname(sys.executable), "nnUNetv2_train"), "931", "2d", "0", "-tr",
                             "MultiModalTrainer_debug", "-device", "cpu"], capture_output=True, text=True,
                            timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    [line] = [line for line in output.splitlines() if line.startswith("error: ")]
    assert str(copy) in line and "misalignment" in line and "probability" in line
    assert "DIFFERS" in line and str(trainer_kit.raw / "dataset.json") in line


# ----------------------------------------------------------------------------------------------------------------
# the step


def _batch(trainer) -> dict:
    loader, _ = trainer.get_dataloaders()
    return next(loader)


def test_without_augmentation_the_step_is_nnunets_step(trainer_kit):
    """Same weights, same batches: MultiModalTrainer's steps compute nnU-Net's losses and make nnU-Net's updates."""
    ours = trainer_kit.trainer(MultiModalTrainer, block=NO_AUGMENTATION)
    nnunet = trainer_kit.trainer(nnUNetTrainer)
    nnunet.network.load_state_dict(ours.network.state_dict())
    loader, _ = ours.get_dataloaders()
    for batch in (next(loader), next(loader)):
        assert ours.train_step(batch)["loss"] == pytest.approx(nnunet.train_step(batch)["loss"], rel=1e-6)
    for (name, a), b in zip(ours.network.named_parameters(), nnunet.network.parameters()):
        torch.testing.assert_close(a, b, msg=name)


class MeanLogitTrainer(MultiModalTrainer):
    """nnU-Net's loss, logging the mean full-resolution logit as an extra value."""

    extra_log_keys = ("mean_logit",)

    def compute_loss(self, data, target, draw, batch) -> StepLoss:
        output = self.network(data)
        return StepLoss(self.loss(output, reference_target(target)), {"mean_logit": output[0].mean()})


def test_the_method_hook_runs_once_per_step_and_its_logs_reach_nnunets_logger(trainer_kit, monkeypatch):
    trainer = trainer_kit.trainer(MeanLogitTrainer)
    calls = []
    hook = MeanLogitTrainer.compute_loss
    monkeypatch.setattr(MeanLogitTrainer, "compute_loss", lambda self, *args: calls.append(1) or hook(self, *args))
    batch = _batch(trainer)
    outputs = [trainer.train_step(batch) for _ in range(3)]
    assert len(calls) == 3
    assert all(set(o) == {"loss", "mean_logit"} and np.isfinite(o["mean_logit"]) for o in outputs)

    trainer.on_train_epoch_end(outputs)
    logged = trainer.logger.local_logger.my_fantastic_logging
    assert logged["mean_logit"] == [pytest.approx(float(np.mean([o["mean_logit"] for o in outputs])))]
    assert logged["train_losses"] == [pytest.approx(float(np.mean([o["loss"] for o in outputs])))]
    log = open(trainer.log_file, encoding="utf-8").read()
    assert log.count("nnunet_mm: mean_logit ") == 1


def test_an_extra_log_key_missing_from_a_checkpoint_is_padded_per_epoch(trainer_kit):
    """Resuming from a checkpoint written before a key existed keeps one entry per epoch."""
    trainer = trainer_kit.trainer(MeanLogitTrainer)
    trainer.current_epoch = 2
    trainer.on_train_epoch_end([{"loss": np.float32(1.0), "mean_logit": np.float32(0.5)}])
    values = trainer.logger.local_logger.my_fantastic_logging["mean_logit"]
    assert len(values) == 3 and np.isnan(values[:2]).all() and values[2] == 0.5


class UndeclaredLogTrainer(MultiModalTrainer):
    def compute_loss(self, data, target, draw, batch) -> StepLoss:
        step = super().compute_loss(data, target, draw, batch)
        return StepLoss(step.loss, {"undeclared": step.loss})


def test_a_log_value_not_declared_in_extra_log_keys_is_refused(trainer_kit):
    trainer = trainer_kit.trainer(UndeclaredLogTrainer)
    with pytest.raises(RuntimeError, match="undeclared"):
        trainer.train_step(_batch(trainer))


class HugeLossTrainer(MultiModalTrainer):
    def compute_loss(self, data, target, draw, batch) -> StepLoss:
        return StepLoss(1e6 * super().compute_loss(data, target, draw, batch).loss)


def test_the_step_clips_the_gradient_norm_at_12_as_nnunet_does(trainer_kit):
    trainer = trainer_kit.trainer(HugeLossTrainer)
    trainer.train_step(_batch(trainer))
    gradients = [p.grad for p in trainer.network.parameters() if p.grad is not None]
    assert gradients and float(torch.linalg.vector_norm(torch.stack([g.norm() for g in gradients]))) <= 12 * 1.001


# ----------------------------------------------------------------------------------------------------------------
# splits and the log file


def test_a_converter_split_in_the_raw_folder_is_adopted(trainer_kit):
    cases = trainer_kit.case_ids
    shipped = [{"train": cases[:3], "val": cases[3:]}]
    (trainer_kit.raw / "splits_final.json").write_text(json.dumps(shipped), encoding="utf-8")
    trainer = trainer_kit.trainer(MultiModalTrainer, fold=0, initialize=False)
    assert trainer.do_split() == (cases[:3], cases[3:])
    assert json.loads((trainer_kit.preprocessed / "splits_final.json").read_text(encoding="utf-8")) == shipped


def test_an_existing_preprocessed_split_wins(trainer_kit):
    cases = trainer_kit.case_ids
    (trainer_kit.raw / "splits_final.json").write_text(json.dumps([{"train": cases[:3], "val": cases[3:]}]), encoding="utf-8")
    (trainer_kit.preprocessed / "splits_final.json").write_text(json.dumps([{"train": cases[1:], "val": cases[:1]}]), encoding="utf-8")
    trainer = trainer_kit.trainer(MultiModalTrainer, fold=0, initialize=False)
    assert trainer.do_split() == (cases[1:], cases[:1])


def _add_normal_twins(kit, originals: list[str]) -> list[str]:
    """Preprocessed ``<case>_normal`` copies of ``originals`` (as ``nnunet_mm make-normal`` would add); returns all
    case ids, sorted."""
    folder = kit.preprocessed / "nnUNetPlans_2d"
    for case in originals:
        for path in folder.glob(f"{case}[._]*"):
            shutil.copyfile(path, folder / path.name.replace(case, f"{case}_normal", 1))
    return sorted(kit.case_ids + [f"{case}_normal" for case in originals])


def test_a_split_that_separates_normal_twins_is_refused(trainer_kit):
    cases = _add_normal_twins(trainer_kit, ["phantom_000", "phantom_003"])
    separated = [{"train": [c for c in cases if c != "phantom_000_normal"], "val": ["phantom_000_normal"]}]
    (trainer_kit.raw / "splits_final.json").write_text(json.dumps(separated), encoding="utf-8")
    trainer = trainer_kit.trainer(MultiModalTrainer, fold=0, initialize=False)
    with pytest.raises(TrainingRefused, match=r"splits_final\.json: fold 0 trains on 'phantom_000' but validates on "
                                              r"its twin 'phantom_000_normal'.*make-normal.*delete") as refused:
        trainer.do_split()
    assert isinstance(refused.value, SystemExit) and str(trainer_kit.raw) in str(refused.value)
    assert not (trainer_kit.preprocessed / "splits_final.json").exists()  # the leaking split is not adopted
    (trainer_kit.preprocessed / "splits_final.json").write_text(json.dumps(separated), encoding="utf-8")  # e.g. nnU-Net's own folds
    with pytest.raises(TrainingRefused, match=str(trainer_kit.preprocessed)):
        trainer_kit.trainer(MultiModalTrainer, fold=0, initialize=False).do_split()


def test_without_a_split_normal_twins_get_grouped_folds(trainer_kit):
    cases = _add_normal_twins(trainer_kit, ["phantom_000", "phantom_003"])
    trainer = trainer_kit.trainer(MultiModalTrainer, fold=0, initialize=False)
    train, val = trainer.do_split()
    splits = json.loads((trainer_kit.preprocessed / "splits_final.json").read_text(encoding="utf-8"))
    assert len(splits) == 5 and sorted(c for fold in splits for c in fold["val"]) == cases
    for fold in splits:
        for original in ("phantom_000", "phantom_003"):
            assert (original in fold["val"]) == (f"{original}_normal" in fold["val"])
    assert (list(train), list(val)) == (splits[0]["train"], splits[0]["val"])


LOG_UNDER_ASCII_LOCALE = """
import json, sys
import torch
from nnunet_mm.training.multimodal_trainer import MultiModalTrainer
plans = json.loads(open(sys.argv[1], encoding="utf-8").read())
plans["continue_training"] = False
dataset_json = json.loads(open(sys.argv[2], encoding="utf-8").read())
trainer = MultiModalTrainer(plans, "2d", "all", dataset_json, torch.device("cpu"))
trainer.print_to_log_file("channel T1\\u03c1 \\u2192 ok", also_print_to_console=False)
print(open(trainer.log_file, "rb").read().decode("ascii"))
"""


def test_log_lines_survive_an_ascii_locale(trainer_kit):
    """nnU-Net opens its log in the locale's encoding; a non-ASCII message must not crash training there."""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONIOENCODING": "ascii"}
    result = subprocess.run([sys.executable, "-c", LOG_UNDER_ASCII_LOCALE,
                             str(trainer_kit.preprocessed / "nnUNetPlans.json"),
                             str(trainer_kit.preprocessed / "dataset.json")], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "channel T1\\u03c1 \\u2192 ok" in result.stdout
