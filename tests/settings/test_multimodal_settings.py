"""The core keys of the dataset.json block (read_settings(...).multimodal): defaults, validation, round trip."""
import pytest

from nnunet_mm.settings import read_settings

FOUR_PHASES = {"channel_names": {"0": "CT", "1": "CT", "2": "CT", "3": "CT"}, "labels": {"background": 0}}


def test_missing_block_gives_defaults():
    settings = read_settings(FOUR_PHASES).multimodal
    assert settings.num_channels == 4
    assert settings.reference_channel == 0
    assert settings.misalignment.enabled and settings.modality_dropout.enabled
    assert settings.modality_dropout.mode == "duplicate"


def test_block_values_are_read():
    dataset_json = {**FOUR_PHASES, "nnunet_mm": {
        "reference_channel": 1, "phase_names": ["pv", "art", "del", "nc"], "seed": 7,
        "misalignment": {"probability": 1.0, "max_translation_mm": [5, 2, 2], "elastic_std_mm": 0},
        "modality_dropout": {"probability": 0.3, "mode": "zeros"}}}
    settings = read_settings(dataset_json).multimodal
    assert settings.reference_channel == 1
    assert settings.channel_name(1) == "1 (art)"
    assert settings.misalignment.max_translation_mm == (5.0, 2.0, 2.0)
    assert settings.misalignment.elastic_std_mm == 0.0
    assert settings.modality_dropout.mode == "zeros"
    assert read_settings({**FOUR_PHASES, "nnunet_mm": settings.to_dict()}).multimodal == settings


def test_unknown_key_is_refused_with_the_known_keys():
    with pytest.raises(KeyError, match=r"unknown key\(s\) \['refernce_channel'\].*reference_channel"):
        read_settings({**FOUR_PHASES, "nnunet_mm": {"refernce_channel": 0}})


def test_unknown_nested_key_is_refused():
    with pytest.raises(KeyError, match="misalignment.*max_shift"):
        read_settings({**FOUR_PHASES, "nnunet_mm": {"misalignment": {"max_shift": 3}}})


@pytest.mark.parametrize("block, message", [
    ({"reference_channel": 4}, r"reference_channel must be an integer in \[0, 3\]"),
    ({"modality_dropout": {"mode": "copy"}}, r"mode must be one of \['duplicate', 'zeros'\]"),
    ({"modality_dropout": {"probability": 1.5}}, r"probability must be in \[0, 1\]"),
    ({"misalignment": {"max_translation_mm": [1, 2, 3, 4]}}, "list of 2 or 3 numbers"),
    ({"misalignment": {"elastic_control_points": 1}}, "integer >= 2"),
    ({"phase_names": ["pv", "art"]}, "list of 4 strings"),
    ({"seed": "abc"}, "seed must be an integer"),
])
def test_bad_values_name_the_key(block, message):
    with pytest.raises(ValueError, match=message):
        read_settings({**FOUR_PHASES, "nnunet_mm": block}, "ds/dataset.json")


def test_error_names_the_source_file():
    with pytest.raises(ValueError, match="ds/dataset.json"):
        read_settings({**FOUR_PHASES, "nnunet_mm": {"reference_channel": -1}}, "ds/dataset.json")


def test_display_names_are_the_phase_names_else_the_channel_names():
    channel_names = {"1": "T2", "0": "CT", "2": "MR", "3": "MR"}
    assert read_settings({**FOUR_PHASES, "channel_names": channel_names}).multimodal.display_names(channel_names) == \
        ("CT", "T2", "MR", "MR")
    named = read_settings({**FOUR_PHASES, "nnunet_mm": {"phase_names": ["pv", "art", "del", "nc"]}}).multimodal
    assert named.display_names(FOUR_PHASES["channel_names"]) == ("pv", "art", "del", "nc")
