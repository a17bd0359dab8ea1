"""WeakLabelTrainer's settings from the dataset.json block."""
import pytest

from nnunet_mm.settings.multimodal import MultiModalSettings
from nnunet_mm.weak.settings import WeakTrainingSettings


def _dataset_json(block: dict | None) -> dict:
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1}}
    if block is not None:
        dataset_json["nnunet_mm"] = {"weak_supervision": block}
    return dataset_json


def test_defaults_are_the_method_values():
    settings = WeakTrainingSettings.from_dataset_json(_dataset_json(None))
    assert (settings.ema_decay, settings.consistency_weight, settings.refinement_interval) == (0.99, 1.0, 100)
    assert (settings.confident_threshold, settings.uncertain_threshold) == (0.9, 0.6)


def test_values_are_read_and_the_block_passes_the_base_settings():
    dataset_json = _dataset_json({"ema_decay": 0.95, "refinement_interval": 20, "uncertain_threshold": 0.5})
    settings = WeakTrainingSettings.from_dataset_json(dataset_json)
    assert (settings.ema_decay, settings.refinement_interval, settings.uncertain_threshold) == (0.95, 20, 0.5)
    assert MultiModalSettings.from_dataset_json(dataset_json).extra["weak_supervision"]["refinement_interval"] == 20


@pytest.mark.parametrize("block, message", [
    ({"ema": 0.9}, "unknown key"),
    ({"ema_decay": 1.0}, "ema_decay must be < 1"),
    ({"refinement_interval": 0}, "refinement_interval must be an integer >= 1"),
    ({"refinement_interval": 2.5}, "refinement_interval must be an integer >= 1"),
    ({"confident_threshold": 0}, "confident_threshold must be in (0.0, 1.0]"),
    ({"consistency_weight": "high"}, "consistency_weight must be a number"),
    ({"confident_threshold": 0.7, "uncertain_threshold": 0.8}, "must not exceed confident_threshold"),
])
def test_bad_values_are_refused_naming_file_and_key(block, message):
    with pytest.raises((KeyError, ValueError)) as error:
        WeakTrainingSettings.from_dataset_json(_dataset_json(block), source="Dataset508/dataset.json")
    assert message in str(error.value) and "Dataset508/dataset.json" in str(error.value)
