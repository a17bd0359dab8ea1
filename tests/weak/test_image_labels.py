"""Image-level labels from the dataset.json block: inline, from a file, and the errors."""
import json

import pytest

from nnunet_mm.settings import read_settings
from nnunet_mm.weak.image_labels import IMAGE_LABELS_KEY, normal_cases, read_image_labels


def _image_labels(block: dict | None) -> object:
    """The typed "image_labels" value of a dataset.json with ``block``, as the settings reader gives it."""
    dataset_json = {"channel_names": {"0": "CT"}, **({"nnunet_mm": block} if block is not None else {})}
    return read_settings(dataset_json, "ds/dataset.json").method(IMAGE_LABELS_KEY)


def test_inline_labels_are_read_and_normal_cases_listed():
    labels = read_image_labels(_image_labels({"image_labels": {"a": "diseased", "b": "normal"}}), None)
    assert labels == {"a": "diseased", "b": "normal"}
    assert normal_cases(labels) == {"b"}


def test_labels_file_is_resolved_against_the_dataset_folder(tmp_path):
    (tmp_path / "image_labels.json").write_text(json.dumps({"x": "normal"}), encoding="utf-8")
    assert read_image_labels(_image_labels({"image_labels": "image_labels.json"}), tmp_path) == {"x": "normal"}


def test_missing_block_gives_none():
    assert read_image_labels(_image_labels(None), None) is None
    assert read_image_labels(_image_labels({"seed": 1}), None) is None


def test_wrong_value_is_refused_naming_the_file_and_case(tmp_path):
    (tmp_path / "image_labels.json").write_text(json.dumps({"x": "sick"}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"image_labels\.json.*'x': 'sick'"):
        read_image_labels(_image_labels({"image_labels": "image_labels.json"}), tmp_path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"labels.json: image-label file named in ds/dataset.json "
                                                r"\('nnunet_mm'.'image_labels'\) does not exist"):
        read_image_labels(_image_labels({"image_labels": "labels.json"}), tmp_path, "ds/dataset.json")
    with pytest.raises(FileNotFoundError, match="ds/dataset.json names the image-label file 'labels.json', but the "
                                                "raw dataset folder is unknown"):
        read_image_labels(_image_labels({"image_labels": "labels.json"}), None, "ds/dataset.json")


def test_wrong_inline_value_is_refused_by_the_reader_naming_the_file_and_key():
    with pytest.raises(ValueError, match=r"ds/dataset.json: 'nnunet_mm'.image_labels: image labels must be one of "
                                         r"\['diseased', 'normal'\]; got \{'a': 'ill'\}"):
        _image_labels({"image_labels": {"a": "ill", "b": "normal"}})
