"""WeakLabelTrainer's settings from the dataset.json block."""
import pytest

from nnunet_mm.settings import read_settings
from nnunet_mm.weak.settings import WEAK_SUPERVISION_KEY, EpochSpan, WeakTrainingSettings, parse_epoch_span


def _dataset_json(block: dict | None) -> dict:
    dataset_json = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1}}
    if block is not None:
        dataset_json["nnunet_mm"] = {"weak_supervision": block}
    return dataset_json


def test_defaults_are_the_method_values():
    settings = read_settings(_dataset_json(None)).method(WEAK_SUPERVISION_KEY)
    assert settings == WeakTrainingSettings()
    assert (settings.ema_decay, settings.consistency_weight) == (0.99, 1.0)
    assert settings.refinement_interval == EpochSpan(fraction=0.2)
    assert settings.consistency_rampup == EpochSpan(fraction=0.4)
    assert (settings.confident_threshold, settings.uncertain_threshold) == (0.9, 0.6)


def test_values_are_read_and_the_rest_of_the_block_keeps_its_defaults():
    dataset_json = _dataset_json({"ema_decay": 0.95, "refinement_interval": 20, "uncertain_threshold": 0.5})
    dataset_settings = read_settings(dataset_json)
    settings = dataset_settings.method(WEAK_SUPERVISION_KEY)
    assert (settings.ema_decay, settings.refinement_interval, settings.uncertain_threshold) == \
        (0.95, EpochSpan(epochs=20), 0.5)
    assert dataset_settings.is_set(WEAK_SUPERVISION_KEY) and dataset_settings.multimodal.reference_channel == 0


@pytest.mark.parametrize("block, message", [
    ({"ema": 0.9}, "unknown key"),
    ({"ema_decay": 1.0}, "ema_decay must be < 1"),
    ({"refinement_interval": 0}, "refinement_interval must be an integer >= 1 (epochs), a number between 0 and 1"),
    ({"refinement_interval": 2.5}, "refinement_interval must be an integer >= 1 (epochs)"),
    ({"refinement_interval": 1.0}, "ambiguous: write 1 for one epoch or \"100%\" for the whole run"),
    ({"refinement_interval": 100.0}, "(write 100 for 100 epochs)"),
    ({"refinement_interval": "120%"}, "refinement_interval must be an integer >= 1"),
    ({"refinement_interval": "often"}, "refinement_interval must be an integer >= 1"),
    ({"consistency_rampup": -0.2}, "consistency_rampup must be an integer >= 1"),
    ({"consistency_rampup": True}, "consistency_rampup must be an integer >= 1"),
    ({"consistency_rampup": 0.3, "consistency_rampup_fraction": 0.3}, "not both"),
    ({"confident_threshold": 0}, "confident_threshold must be in (0.0, 1.0]"),
    ({"consistency_weight": "high"}, "consistency_weight must be a number"),
    ({"confident_threshold": 0.7, "uncertain_threshold": 0.8}, "must not exceed confident_threshold"),
])
def test_bad_values_are_refused_naming_file_and_key(block, message):
    with pytest.raises((KeyError, ValueError)) as error:
        read_settings(_dataset_json(block), "Dataset508/dataset.json")
    assert message in str(error.value)
    assert "Dataset508/dataset.json: 'nnunet_mm'.weak_supervision" in str(error.value)


@pytest.mark.parametrize("value, span, epochs_in_10, epochs_in_1000", [
    (0.2, EpochSpan(fraction=0.2), 2, 200),
    ("20%", EpochSpan(fraction=0.2), 2, 200),
    (" 2.5 %", EpochSpan(fraction=0.025), 1, 25),  # a fraction is at least one epoch
    ("100%", EpochSpan(fraction=1.0), 10, 1000),
    (100, EpochSpan(epochs=100), 100, 100),
    (1, EpochSpan(epochs=1), 1, 1),
])
def test_a_span_is_a_fraction_of_num_epochs_below_one_or_as_a_percentage_and_epochs_as_an_integer(
        value, span, epochs_in_10, epochs_in_1000):
    parsed = parse_epoch_span(value, "refinement_interval")
    assert parsed == span
    assert (parsed.resolve(10), parsed.resolve(1000)) == (epochs_in_10, epochs_in_1000)


def test_the_old_ramp_key_is_still_read_as_a_fraction():
    settings = read_settings(_dataset_json({"consistency_rampup_fraction": 0.25})).method(WEAK_SUPERVISION_KEY)
    assert settings.consistency_rampup == EpochSpan(fraction=0.25)
    zero = read_settings(_dataset_json({"consistency_rampup_fraction": 0})).method(WEAK_SUPERVISION_KEY)
    assert zero.consistency_rampup.resolve(1000) == 1  # as before: the ramp took at least one epoch
