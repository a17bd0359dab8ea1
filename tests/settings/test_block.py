"""The one reader of the dataset.json block (nnunet_mm.settings.read_settings) and the sub-block registry."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nnunet_mm.settings import (BLOCK_KEY, DatasetDescription, block_of, model_folder_dataset_json_source,
                                preprocessed_dataset_json_source, read_settings, register_sub_block,
                                registered_sub_blocks)
from nnunet_mm.settings import block as block_module

TWO_CHANNELS = {"channel_names": {"0": "CT", "1": "CT"}, "labels": {"background": 0, "liver": 1}}


def _with_block(**block: object) -> dict:
    return {**TWO_CHANNELS, BLOCK_KEY: block}


@pytest.fixture
def private_registry(monkeypatch):
    """A copy of the registry (entry points loaded), so registrations made by a test do not outlive it."""
    registered_sub_blocks()
    monkeypatch.setattr(block_module, "_registry", dict(block_module._registry))


def test_method_keys_are_known_through_the_entry_points_without_importing_the_method_packages():
    script = """
import sys
from nnunet_mm.settings import read_settings
assert not any(name.startswith("nnunet_mm.synthesis") for name in sys.modules), "imported too early"
settings = read_settings({"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "tumour": 2},
                          "nnunet_mm": {"synthesis": {"probability": 0.25}}}, "ds/dataset.json")
print(type(settings.method("synthesis")).__name__, settings.method("synthesis").probability)
try:
    read_settings({"channel_names": {"0": "CT"}, "nnunet_mm": {"synthesys": {}}}, "ds/dataset.json")
except KeyError as error:
    print(error.args[0])
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    parsed, message = result.stdout.splitlines()
    assert parsed == "SynthesisSettings 0.25"
    assert message.startswith("ds/dataset.json: 'nnunet_mm': unknown key(s) ['synthesys']; known keys are [")
    for key in ("reference_channel", "modalities", "phase_labels_dir", "unlabeled_dir", "synthesis",
                "weak_supervision", "image_labels", "prior_dropout"):
        assert repr(key) in message


def test_unknown_key_is_refused_with_the_known_keys_in_process():
    with pytest.raises(KeyError, match=r"ds/dataset.json: 'nnunet_mm': unknown key\(s\) \['unlabelled_dir'\]; "
                                       r"known keys are \[.*'unlabeled_dir'"):
        read_settings(_with_block(unlabelled_dir="imagesUnl"), "ds/dataset.json")


@pytest.mark.parametrize("block, error, message", [
    ({"synthesis": {"probability": 2}}, ValueError, r"'nnunet_mm'\.synthesis\.probability must be in \[0, 1\]"),
    ({"synthesis": {"probabilty": 0.5}}, KeyError, r"'nnunet_mm'\.synthesis: unknown key\(s\) \['probabilty'\]"),
    ({"weak_supervision": {"ema_decay": 1.0}}, ValueError, r"'nnunet_mm'\.weak_supervision\.ema_decay must be < 1"),
    ({"prior_dropout": {"probability": -0.1}}, ValueError, r"'nnunet_mm'\.prior_dropout\.probability must be in"),
    ({"unlabeled_dir": "../elsewhere"}, ValueError, r"'nnunet_mm'\.unlabeled_dir must stay inside the dataset"),
    ({"phase_labels_dir": 3}, ValueError, r"'nnunet_mm'\.phase_labels_dir must be a folder name"),
    ({"image_labels": {"a": "sick"}}, ValueError, r"'nnunet_mm'\.image_labels: image labels must be one of"),
])
def test_a_sub_block_error_names_the_file_and_the_key(block, error, message):
    with pytest.raises(error, match=rf"^.?Dataset7/dataset\.json: {message}"):
        read_settings(_with_block(**block), "Dataset7/dataset.json")


def test_registered_keys_get_their_default_when_absent_or_null():
    settings = read_settings(TWO_CHANNELS)
    assert settings.source == "dataset.json"
    assert settings.method("unlabeled_dir") == "imagesUnl" and not settings.is_set("unlabeled_dir")
    assert settings.method("prior_dropout") == 0.3
    assert settings.method("phase_labels_dir") is None and settings.method("image_labels") is None
    assert settings.method("synthesis").probability == 0.5
    assert settings.method("weak_supervision").refinement_interval.fraction == 0.2
    null = read_settings(_with_block(unlabeled_dir=None, prior_dropout=None))
    assert null.method("unlabeled_dir") == "imagesUnl" and not null.is_set("unlabeled_dir")
    assert null.method("prior_dropout") == 0.3
    given = read_settings(_with_block(unlabeled_dir="imagesExtra", prior_dropout={"probability": 0}))
    assert given.method("unlabeled_dir") == "imagesExtra" and given.is_set("unlabeled_dir")
    assert given.method("prior_dropout") == 0.0


def test_asking_for_a_key_no_package_registered_is_a_key_error():
    with pytest.raises(KeyError, match=r"'nnunet_mm'\.guidance is not a registered sub-block; registered: \["):
        read_settings(TWO_CHANNELS).method("guidance")


def test_a_block_that_is_not_an_object_is_refused_and_a_missing_one_is_empty():
    with pytest.raises(ValueError, match=r"ds/dataset.json: 'nnunet_mm' must be an object, got list"):
        read_settings({**TWO_CHANNELS, BLOCK_KEY: []}, "ds/dataset.json")
    assert block_of(TWO_CHANNELS) == {}
    assert block_of(_with_block(seed=3)) == {"seed": 3}


def test_register_sub_block_refuses_a_core_key(private_registry):
    with pytest.raises(ValueError, match=r"'nnunet_mm'\.phase_names is a core key of nnunet_mm.settings; "
                                         r"my_plugin.settings cannot register it"):
        register_sub_block("phase_names", lambda value, where: value, lambda: None, owner="my_plugin.settings")


def test_register_sub_block_refuses_a_key_registered_by_another_owner(private_registry):
    with pytest.raises(ValueError, match=r"'nnunet_mm'\.synthesis is registered twice: by "
                                         r"nnunet_mm.synthesis.settings and by my_plugin.settings"):
        register_sub_block("synthesis", lambda value, where: value, lambda: None, owner="my_plugin.settings")


def test_a_newly_registered_key_is_validated_and_parsed(private_registry):
    def parse(value: object, where: str) -> int:
        if not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}.")
        return value

    register_sub_block("tile_count", parse, lambda: 1, owner="my_plugin.settings")
    register_sub_block("tile_count", parse, lambda: 1, owner="my_plugin.settings")  # re-import: same owner
    assert read_settings(TWO_CHANNELS).method("tile_count") == 1
    assert read_settings(_with_block(tile_count=4)).method("tile_count") == 4
    with pytest.raises(ValueError, match=r"ds/dataset.json: 'nnunet_mm'\.tile_count must be an integer, got 'x'"):
        read_settings(_with_block(tile_count="x"), "ds/dataset.json")


def test_description_keys_are_read_and_typed():
    settings = read_settings(_with_block(
        modalities={"0": "CT", "1": "atlas_prior:liver"}, per_case_modality={"a": "CT", "b": "MR"},
        source="/data/in", converter="Dataset504_AMOS", registration={"method": "rigid"}, notes="one note"))
    description = settings.description
    assert description.modalities == {0: "CT", 1: "atlas_prior:liver"}
    assert description.per_case_modality == {"a": "CT", "b": "MR"}
    assert (description.source, description.converter) == ("/data/in", "Dataset504_AMOS")
    assert description.registration == {"method": "rigid"} and description.notes == ("one note",)
    as_strings = read_settings(_with_block(source={"train": "/a", "test": None}, registration="rigid")).description
    assert as_strings.source == {"train": "/a", "test": None} and as_strings.registration == "rigid"
    assert read_settings(_with_block(modalities=["MR", "MR"])).description.modalities == {0: "MR", 1: "MR"}
    assert description.channels_with_modality_prefix("atlas_prior:") == [1]
    assert read_settings(TWO_CHANNELS).description == DatasetDescription()


@pytest.mark.parametrize("block, message", [
    ({"modalities": {"2": "CT"}}, r"modalities: entry '2': 'CT' must map a channel index in \[0, 1\]"),
    ({"modalities": {"x": "CT"}}, r"modalities: entry 'x'"),
    ({"modalities": ["CT"]}, r"modalities as a list needs one entry per channel \(2\), got \['CT'\]"),
    ({"modalities": "CT"}, r"modalities must be an object"),
    ({"modalities": ["CT", 3]}, r"modalities: entry 1: 3 must map a channel index"),
    ({"per_case_modality": {"a": 1}}, r"per_case_modality must be an object"),
    ({"source": 5}, r"source must be a string or an object, got 5"),
    ({"converter": ["x"]}, r"converter must be a string"),
    ({"registration": 1}, r"registration must be a string or an object, got 1"),
    ({"notes": ["ok", 3]}, r"notes must be a string or a list of strings"),
])
def test_description_errors_name_the_file_and_the_key(block, message):
    with pytest.raises(ValueError, match=rf"ds/dataset.json: 'nnunet_mm'\.{message}"):
        read_settings(_with_block(**block), "ds/dataset.json")


def test_sources_of_copies_say_which_copy_was_read():
    assert "nnU-Net's copy of the raw dataset.json" in preprocessed_dataset_json_source("/pre/Dataset7_X")
    assert preprocessed_dataset_json_source("/pre/Dataset7_X").startswith("/pre/Dataset7_X/dataset.json")
    assert model_folder_dataset_json_source("/results/M").startswith("/results/M/dataset.json (the copy nnU-Net")
    with pytest.raises(ValueError, match=r"/pre/Dataset7_X/dataset.json \(nnU-Net's copy.*'nnunet_mm'\.seed"):
        read_settings(_with_block(seed="x"), preprocessed_dataset_json_source("/pre/Dataset7_X"))


def test_the_block_round_trips_through_json():
    block = {"reference_channel": 1, "phase_names": ["pv", "art"], "unlabeled_dir": "imagesUnl",
             "synthesis": {"probability": 0.2}, "notes": ["a"]}
    assert read_settings(json.loads(json.dumps(_with_block(**block)))) == read_settings(_with_block(**block))
