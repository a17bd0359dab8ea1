"""The "synthesis" settings block and the keep-tumours-in-liver post-processing."""
from __future__ import annotations

import numpy as np
import pytest

from nnunet_mm.settings import read_settings
from nnunet_mm.synthesis.liver_postprocessing import keep_tumours_in_liver
from nnunet_mm.synthesis.settings import SYNTHESIS_KEY, SynthesisSettings

LABELS = {"background": 0, "liver": 1, "tumor": 2}


def test_defaults_are_the_papers_and_labels_are_found_by_name():
    settings = read_settings({"channel_names": {"0": "CT"}, "labels": LABELS}).method(SYNTHESIS_KEY)
    assert settings == SynthesisSettings()
    assert (settings.synthesizer, settings.probability, settings.dice_weight, settings.ce_weight) == \
        ("handcrafted", 0.5, 1.0, 0.5)
    assert [c.name for c in settings.masks.size_classes] == ["tiny", "small", "medium", "large"]
    assert settings.resolve_labels(LABELS) == (1, 2)
    assert settings.misalign_synthetic is True  # the behaviour before the key existed (issue 19.2)
    assert SynthesisSettings.from_dict({"misalign_synthetic": False}).misalign_synthetic is False
    assert settings.resolve_labels({"background": 0, "Liver": 3, "lesion": 4}) == (3, 4)


def test_custom_classes_probabilities_and_labels_are_read():
    block = {"synthesizer": "diffusion", "probability": 0.9, "ce_weight": 1.0, "tumour_label": 2,
             "size_classes": [{"name": "a", "radius_mm": 5, "count": [1, 2], "elastic_std_mm": [0, 1]},
                              {"name": "b", "radius_mm": 10, "count": [1, 1], "elastic_std_mm": [1, 2]}],
             "class_probabilities": [3, 1]}
    settings = SynthesisSettings.from_dict(block)
    assert settings.synthesizer == "diffusion" and settings.probability == 0.9
    assert settings.masks.probabilities == (0.75, 0.25)
    assert settings.masks.size_classes[1].radius_mm == 10.0 and settings.masks.size_classes[0].count == (1, 2)


@pytest.mark.parametrize("block, error, message", [
    ({"probabilty": 0.5}, KeyError, "unknown key.*probabilty.*known keys"),
    ({"synthesizer": "gan"}, ValueError, r"synthesizer must be one of \['handcrafted', 'diffusion', 'pool'\]"),
    ({"probability": 1.5}, ValueError, "probability must be in"),
    ({"class_probabilities": [1, 1]}, ValueError, "class_probabilities must be a list of 4 numbers"),
    ({"size_classes": [{"name": "a", "radius_mm": 5}]}, ValueError, r"size_classes\[0\] must be an object"),
    ({"dice_weight": 0, "ce_weight": 0}, ValueError, "both 0"),
    ({"misalign_synthetic": "no"}, ValueError, "misalign_synthetic must be true or false, got 'no'"),
])
def test_bad_settings_are_refused_naming_the_key(block, error, message):
    with pytest.raises(error, match=message):
        SynthesisSettings.from_dict(block)


def test_the_block_is_read_through_the_settings_reader_naming_the_file_and_key():
    dataset_json = {"channel_names": {"0": "CT"}, "labels": LABELS, "nnunet_mm": {"synthesis": {"probability": 0.9}}}
    assert read_settings(dataset_json).method(SYNTHESIS_KEY).probability == 0.9
    dataset_json["nnunet_mm"]["synthesis"]["probability"] = 1.5
    with pytest.raises(ValueError, match=r"^ds/dataset.json: 'nnunet_mm'\.synthesis\.probability must be in"):
        read_settings(dataset_json, "ds/dataset.json")


def test_missing_or_wrong_labels_name_the_source():
    with pytest.raises(ValueError, match="my/dataset.json: no tumour label"):
        SynthesisSettings().resolve_labels({"background": 0, "liver": 1, "spleen": 2}, "my/dataset.json")
    with pytest.raises(ValueError, match="liver_label = 7 is not a label value"):
        SynthesisSettings(liver_label=7).resolve_labels(LABELS)


def test_post_processing_removes_only_tumours_away_from_the_liver():
    segmentation = np.zeros((3, 16, 16), np.uint8)
    segmentation[:, 2:10, 2:10] = 1
    segmentation[1, 4:6, 4:6] = 2  # inside the liver
    segmentation[1, 9:12, 9:12] = 2  # overlapping the liver's edge
    segmentation[1, 14, 14] = 2  # outside
    cleaned, removed = keep_tumours_in_liver(segmentation, 1, 2)
    assert removed == 1 and cleaned[1, 14, 14] == 0
    assert (cleaned[1, 4:6, 4:6] == 2).all() and (cleaned[1, 9:12, 9:12] == 2).all()
    assert (cleaned == 1).sum() == (segmentation == 1).sum()
    assert segmentation[1, 14, 14] == 2  # the input is not modified
