"""The one listing of nnU-Net image folders (CASE_XXXX<file_ending>) and the raw dataset built on it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnunet_mm.io.raw_dataset import available_channel_files, case_channel_files, open_raw_dataset


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_files_are_grouped_by_case_and_channel_skipping_hidden_and_other_files(tmp_path):
    _touch(tmp_path, "b_0001.nii.gz", "b_0000.nii.gz", "a_0002.nii.gz", "a_0000.nii.gz", ".hidden_0000.nii.gz",
           "notes.txt")
    cases = available_channel_files(tmp_path, ".nii.gz", 3)
    assert list(cases) == ["a", "b"]
    assert cases["a"] == {0: tmp_path / "a_0000.nii.gz", 2: tmp_path / "a_0002.nii.gz"}
    assert list(cases["b"]) == [0, 1]


def test_case_ids_may_contain_underscores_and_digits(tmp_path):
    _touch(tmp_path, "liver_0001_0000.nii.gz", "liver_0001_0001.nii.gz")
    assert case_channel_files(tmp_path, ".nii.gz", 2) == {"liver_0001": [tmp_path / "liver_0001_0000.nii.gz",
                                                                         tmp_path / "liver_0001_0001.nii.gz"]}


def test_every_problem_is_listed_with_its_file(tmp_path):
    _touch(tmp_path, "a_0000.nii.gz", "a_0001.nii.gz", "b_0000.nii.gz", "c.nii.gz", "d_0002.nii.gz", "e.nii")
    with pytest.raises(ValueError) as error:
        case_channel_files(tmp_path, ".nii.gz", 2, source="my/dataset.json", phase_names=("pv", "art"))
    message = str(error.value)
    assert "3 problem(s)" in message
    assert f"{tmp_path / 'c.nii.gz'}: not an image named CASE_XXXX.nii.gz" in message
    assert f"{tmp_path / 'd_0002.nii.gz'}: channel 2, but my/dataset.json has 2 channel(s) (_0000 .. _0001)" in message
    assert f"{tmp_path / 'b_0001.nii.gz'}: missing channel 1 (art) of case 'b'" in message


def test_files_without_the_ending_are_refused_only_when_asked(tmp_path):
    _touch(tmp_path, "a_0000.nii.gz", "a.nii")
    assert list(case_channel_files(tmp_path, ".nii.gz", 1)) == ["a"]
    with pytest.raises(ValueError, match=r"a.nii: not an image named CASE_XXXX.nii.gz"):
        case_channel_files(tmp_path, ".nii.gz", 1, refuse_other_files=True)


def test_without_a_channel_count_each_case_needs_channels_from_zero_without_gaps(tmp_path):
    _touch(tmp_path, "rgb_0000.png", "two_0000.png", "two_0001.png")
    assert {case: len(files) for case, files in case_channel_files(tmp_path, ".png", None).items()} == \
        {"rgb": 1, "two": 2}
    _touch(tmp_path, "gap_0000.png", "gap_0002.png")
    with pytest.raises(ValueError, match=r"gap_0001.png: missing channel 1 of case 'gap'"):
        case_channel_files(tmp_path, ".png", None)


def test_an_empty_folder_has_no_cases_and_a_missing_one_is_named(tmp_path):
    assert case_channel_files(tmp_path, ".nii.gz", 1) == {}
    with pytest.raises(FileNotFoundError, match="absent: image folder not found"):
        available_channel_files(tmp_path / "absent", ".nii.gz", 1)


def test_open_raw_dataset_lists_complete_training_and_test_cases(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT", "1": "CT"},
                                                       "file_ending": ".nii.gz", "labels": {"background": 0}}), encoding="utf-8")
    _touch(tmp_path / "imagesTr", "a_0000.nii.gz", "a_0001.nii.gz")
    _touch(tmp_path / "imagesTs", "t_0000.nii.gz", "t_0001.nii.gz")
    raw = open_raw_dataset(tmp_path)
    assert (raw.training_cases, raw.test_cases, raw.num_channels) == (["a"], ["t"], 2)
    assert raw.image_file("t", 1, "Ts") == tmp_path / "imagesTs" / "t_0001.nii.gz"
    assert raw.label_file("a") == tmp_path / "labelsTr" / "a.nii.gz"
    (tmp_path / "imagesTr" / "a_0001.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"a_0001.nii.gz: missing channel 1 of case 'a'"):
        open_raw_dataset(tmp_path)


def test_open_raw_dataset_names_a_missing_or_broken_dataset_json(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset.json: not found"):
        open_raw_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match=r"dataset.json: not valid JSON"):
        open_raw_dataset(tmp_path)
