"""WeakLabelTrainer's settings from the dataset.json block."""
import pytest

from nnunet_mm.settings import read_settings
from nnunet_mm.weak.settings import WEAK_SUPERVISION_KEY, WeakTrainingSettings


def _dataset_json(block: dict | None) -> dict:
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1}}
    if block is not None:
        dataset_json["nnunet_mm"] = {"weak_supervision": block}
    return dataset_json


def test_defaults_are_the_method_values():
    settings = read_settings(_dataset_json(None)).method(WEAK_SUPERVISION_KEY)
    assert settings == WeakTrainingSettings()
    assert (settings.ema_decay, settings.consistency_weight, settings.refinement_interval) == (0.99, 1.0, 100)
    assert (settings.confident_threshold, settings.uncertain_threshold) == (0.9, 0.6)


def test_values_are_read_and_the_rest_of_the_block_keeps_its_defaults():
    dataset_json = _dataset_json({"ema_decay": 0.95, "refinement_interval": 20, "uncertain_threshold": 0.5})
    dataset_settings = read_settings(dataset_json)
    settings = dataset_settings.method(WEAK_SUPERVISION_KEY)
    assert (settings.ema_decay, settings.refinement_interval, settings.uncertain_threshold) == (0.95, 20, 0.5)
    assert dataset_settings.is_set(WEAK_SUPERVISION_KEY) and dataset_settings.multimodal.reference_channel == 0


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
        read_settings(_dataset_json(block), "Dataset508/dataset.json")
    assert message in str(error.value)
    assert "Dataset508/dataset.json: 'nnunet_mm'.weak_supervision" in str(error.value)
