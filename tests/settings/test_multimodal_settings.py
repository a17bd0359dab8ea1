"""The core keys of the dataset.json block (read_settings(...).multimodal): defaults, validation, round trip."""
import pytest

from nnunet_mm.settings import read_settings

FOUR_PHASES = {"channel_names": {"0": "CT", "1": "CT", "2": "CT", "3": "CT"}, "labels": {"background": 0}}


def test_missing_block_gives_defaults():
    settings = read_settings(FOUR_PHASES).multimodal
    assert settings.num_channels == 4
    assert settings.reference_channel == 0
    assert settings.misalignment.enabled and settings.modality_dropout.enabled  # the settings, if turned on
    assert settings.modality_dropout.mode == "duplicate"
    assert settings.channel_acquisition is None and not settings.misalignment_explicit


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
    ({"misalignment": {"elastic_control_points": 1}}, r"integer in \[2, 32\]"),
    ({"misalignment": {"elastic_control_points": 100000}}, r"integer in \[2, 32\], got 100000"),
    ({"misalignment": {"probability": "0.5"}}, r"misalignment.probability must be a number, got '0.5'"),
    ({"modality_dropout": {"probability": True}}, r"modality_dropout.probability must be a number, got True"),
    ({"misalignment": {"max_translation_mm": 1e308}}, r"max_translation_mm\[0\] must be in \[0, 200\], got 1e\+308"),
    ({"misalignment": {"max_rotation_deg": float("nan")}}, r"max_rotation_deg must be a number, got nan"),
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


# ----------------------------------------------------------------------------------------------------------------
# channel_acquisition: which augmentations the trainer applies


def _decision(block: dict, channel_names: dict | None = None):
    dataset_json = {**FOUR_PHASES, "nnunet_mm": block}
    if channel_names is not None:
        dataset_json["channel_names"] = channel_names
    return read_settings(dataset_json, "ds/dataset.json").multimodal.augmentation_decision()


EXPLICIT_MISALIGNMENT = {"misalignment": {"probability": 0.5}}
EXPLICIT_DROPOUT = {"modality_dropout": {"probability": 0.1}}


@pytest.mark.parametrize("acquisition, explicit, misalignment, dropout", [
    ("separate", {}, True, True),
    ("separate", EXPLICIT_MISALIGNMENT, True, True),
    ("separate", {"modality_dropout": {"probability": 0.0}}, True, False),
    ("co_registered", {}, False, False),
    ("co_registered", EXPLICIT_MISALIGNMENT, True, False),
    ("co_registered", EXPLICIT_DROPOUT, False, True),
    ("co_registered", {**EXPLICIT_MISALIGNMENT, **EXPLICIT_DROPOUT}, True, True),
    ("colour_planes", {}, False, False),
    ("colour_planes", EXPLICIT_DROPOUT, False, True),
    ("colour_planes", {"misalignment": {"probability": 0.0}}, False, False),
    (None, {}, False, False),
    (None, EXPLICIT_MISALIGNMENT, True, False),
    (None, EXPLICIT_DROPOUT, False, True),
    (None, {"modality_dropout": {}}, False, True),  # an empty object: on, with the default settings
])
def test_channel_acquisition_decides_the_augmentation_and_explicit_objects_win(acquisition, explicit, misalignment,
                                                                                dropout):
    block = {**explicit, **({} if acquisition is None else {"channel_acquisition": acquisition})}
    decision = _decision(block)
    assert (decision.misalignment, decision.modality_dropout) == (misalignment, dropout)
    assert ("set explicitly in the block" in decision.reason) == bool(explicit)
    assert all(f"'{key}'" in decision.reason for key in explicit)


def test_undeclared_acquisition_turns_both_off_and_says_how_to_turn_them_on():
    settings = read_settings(FOUR_PHASES).multimodal
    decision = settings.augmentation_decision()
    assert settings.channel_acquisition is None
    assert not decision.misalignment and not decision.modality_dropout
    assert decision.describe().startswith("misalignment OFF, modality dropout OFF (channel_acquisition not declared")
    assert '"channel_acquisition": "separate"' in decision.reason


def test_separate_turns_both_on_and_names_the_value():
    assert _decision({"channel_acquisition": "separate"}).describe() == \
        "misalignment ON, modality dropout ON (channel_acquisition 'separate')"


@pytest.mark.parametrize("acquisition", ["separate", None])
def test_a_single_channel_dataset_gets_neither_augmentation(acquisition):
    block = {**EXPLICIT_MISALIGNMENT, **EXPLICIT_DROPOUT}
    if acquisition is not None:
        block["channel_acquisition"] = acquisition
    decision = _decision(block, channel_names={"0": "CT"})
    assert not decision.misalignment and not decision.modality_dropout and "one image channel" in decision.reason


@pytest.mark.parametrize("value", ["rgb", "Separate", 1, ["separate"]])
def test_an_unknown_channel_acquisition_is_refused_with_the_allowed_values(value):
    with pytest.raises(ValueError, match=r"ds/dataset.json: 'nnunet_mm'.channel_acquisition must be one of "
                                         r"\['separate', 'co_registered', 'colour_planes'\]"):
        _decision({"channel_acquisition": value})


def test_null_channel_acquisition_counts_as_undeclared():
    settings = read_settings({**FOUR_PHASES, "nnunet_mm": {"channel_acquisition": None}}).multimodal
    assert settings.channel_acquisition is None and not settings.augmentation_decision().misalignment


def test_misalignment_requested_on_colour_planes_is_refused_naming_the_file():
    with pytest.raises(ValueError, match=r"ds/dataset.json: 'nnunet_mm'.misalignment: channel_acquisition "
                                         r"'colour_planes'.*planes of one image"):
        _decision({"channel_acquisition": "colour_planes", "misalignment": {"probability": 0.2}})


def test_settings_built_in_code_are_checked_too():
    from nnunet_mm.settings import MultiModalSettings

    with pytest.raises(ValueError, match="channel_acquisition must be one of"):
        MultiModalSettings(num_channels=3, channel_acquisition="rgb")
    with pytest.raises(ValueError, match="colour_planes"):
        MultiModalSettings(num_channels=3, channel_acquisition="colour_planes", misalignment_explicit=True)


@pytest.mark.parametrize("block", [
    {},
    {"channel_acquisition": "separate"},
    {"channel_acquisition": "co_registered", "modality_dropout": {"probability": 0.2, "mode": "zeros"}},
    {"channel_acquisition": "colour_planes", "misalignment": {"probability": 0.0}},
    {"misalignment": {"probability": 1.0, "max_translation_mm": [5, 2]}, "seed": 3},
])
def test_to_dict_round_trips_the_acquisition_and_which_objects_were_explicit(block):
    settings = read_settings({**FOUR_PHASES, "nnunet_mm": block}).multimodal
    written = settings.to_dict()
    assert written.get("channel_acquisition") == block.get("channel_acquisition")
    assert ("misalignment" in written, "modality_dropout" in written) == \
        ("misalignment" in block, "modality_dropout" in block)
    again = read_settings({**FOUR_PHASES, "nnunet_mm": written}).multimodal
    assert again == settings and again.augmentation_decision() == settings.augmentation_decision()
