"""MultiModalTrainer's device-side augmentation hook, without building a whole nnU-Net run."""
from types import SimpleNamespace

import torch

from nnunet_mm.settings.multimodal import MultiModalSettings
from nnunet_mm.training.multimodal_trainer import MultiModalTrainer


def _trainer_with(block: dict, num_channels: int) -> MultiModalTrainer:
    trainer = MultiModalTrainer.__new__(MultiModalTrainer)  # the hook only needs these attributes
    dataset_json = {"channel_names": {str(c): "CT" for c in range(num_channels)}, "nnunet_mm": block}
    trainer.mm_settings = MultiModalSettings.from_dataset_json(dataset_json)
    trainer.configuration_manager = SimpleNamespace(spacing=[3.0, 1.5, 1.5])
    trainer.augmentation_generator = torch.Generator().manual_seed(0)
    return trainer


ALWAYS = {"misalignment": {"probability": 1.0}, "modality_dropout": {"probability": 0.0}}


def test_reference_channel_is_bit_identical_and_others_move():
    trainer = _trainer_with(ALWAYS, num_channels=3)
    data = torch.randn(2, 3, 16, 24, 24)
    augmented = trainer.augment_multimodal(data.clone())
    assert torch.equal(augmented[:, 0], data[:, 0])
    assert not torch.allclose(augmented[:, 1:], data[:, 1:])


def test_cascade_channels_beyond_the_images_are_left_alone():
    trainer = _trainer_with(ALWAYS, num_channels=2)
    data = torch.randn(2, 4, 16, 24, 24)  # 2 image channels + 2 one-hot channels of a previous stage
    augmented = trainer.augment_multimodal(data.clone())
    assert augmented.shape == data.shape
    assert torch.equal(augmented[:, 2:], data[:, 2:])
    assert not torch.allclose(augmented[:, 1], data[:, 1])


def test_single_channel_dataset_is_untouched():
    trainer = _trainer_with(ALWAYS, num_channels=1)
    data = torch.randn(2, 1, 16, 24, 24)
    assert torch.equal(trainer.augment_multimodal(data.clone()), data)


def test_dropout_duplicates_a_present_channel():
    block = {"misalignment": {"probability": 0.0}, "modality_dropout": {"probability": 1.0, "mode": "duplicate"}}
    trainer = _trainer_with(block, num_channels=2)
    data = torch.randn(2, 2, 8, 8, 8)
    augmented = trainer.augment_multimodal(data.clone())
    assert torch.equal(augmented[:, 1], data[:, 0])



def _split_trainer(tmp_path, monkeypatch, fold=0) -> MultiModalTrainer:
    import nnunetv2.paths

    monkeypatch.setattr(nnunetv2.paths, "nnUNet_raw", str(tmp_path / "raw"))
    trainer = MultiModalTrainer.__new__(MultiModalTrainer)
    trainer.fold, trainer.local_rank = fold, 0
    trainer.preprocessed_dataset_folder_base = str(tmp_path / "pre" / "Dataset777_X")
    trainer.plans_manager = SimpleNamespace(dataset_name="Dataset777_X")
    trainer.print_to_log_file = lambda *args, **kwargs: None
    (tmp_path / "raw" / "Dataset777_X").mkdir(parents=True)
    (tmp_path / "pre" / "Dataset777_X").mkdir(parents=True)
    return trainer


def test_a_converter_split_in_the_raw_folder_is_adopted(tmp_path, monkeypatch):
    trainer = _split_trainer(tmp_path, monkeypatch)
    shipped = '[{"train": ["a", "b"], "val": ["c"]}]'
    (tmp_path / "raw" / "Dataset777_X" / "splits_final.json").write_text(shipped)
    trainer._adopt_raw_splits()
    assert (tmp_path / "pre" / "Dataset777_X" / "splits_final.json").read_text() == shipped


def test_an_existing_preprocessed_split_wins(tmp_path, monkeypatch):
    trainer = _split_trainer(tmp_path, monkeypatch)
    (tmp_path / "raw" / "Dataset777_X" / "splits_final.json").write_text("[1]")
    (tmp_path / "pre" / "Dataset777_X" / "splits_final.json").write_text("[2]")
    trainer._adopt_raw_splits()
    assert (tmp_path / "pre" / "Dataset777_X" / "splits_final.json").read_text() == "[2]"


LOG_UNDER_ASCII_LOCALE = """
import sys
from nnunet_mm.training.multimodal_trainer import MultiModalTrainer
trainer = MultiModalTrainer.__new__(MultiModalTrainer)
trainer.local_rank, trainer.log_file = 0, sys.argv[1]
trainer.print_to_log_file("channel T1\\u03c1 \\u2192 ok", also_print_to_console=False)
print(open(sys.argv[1], "rb").read().decode("ascii"))
"""


def test_log_lines_survive_an_ascii_locale(tmp_path):
    """nnU-Net opens its log in the locale's encoding; a non-ASCII message must not crash training there."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONIOENCODING": "ascii"}
    log_file = tmp_path / "training_log.txt"
    result = subprocess.run([sys.executable, "-c", LOG_UNDER_ASCII_LOCALE, str(log_file)], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "channel T1\\u03c1 \\u2192 ok" in result.stdout
