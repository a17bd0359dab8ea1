"""Image-level labels from the "nnunet_mm" block: inline, from a file, and the errors."""
import json

import pytest

from nnunet_mm.weak.image_labels import normal_cases, read_image_labels


def test_inline_labels_are_read_and_normal_cases_listed():
    labels = read_image_labels({"nnunet_mm": {"image_labels": {"a": "diseased", "b": "normal"}}}, None)
    assert labels == {"a": "diseased", "b": "normal"}
    assert normal_cases(labels) == {"b"}


def test_labels_file_is_resolved_against_the_dataset_folder(tmp_path):
    (tmp_path / "image_labels.json").write_text(json.dumps({"x": "normal"}))
    assert read_image_labels({"nnunet_mm": {"image_labels": "image_labels.json"}}, tmp_path) == {"x": "normal"}


def test_missing_block_gives_none():
    assert read_image_labels({"channel_names": {"0": "CT"}}, None) is None


def test_wrong_value_is_refused_naming_the_file_and_case(tmp_path):
    (tmp_path / "image_labels.json").write_text(json.dumps({"x": "sick"}))
    with pytest.raises(ValueError, match=r"image_labels\.json.*'x': 'sick'"):
        read_image_labels({"nnunet_mm": {"image_labels": "image_labels.json"}}, tmp_path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="labels.json: image-label file"):
        read_image_labels({"nnunet_mm": {"image_labels": "labels.json"}}, tmp_path)
