"""Grouped cross-validation splits: a case and its ``_normal`` twin share every fold's side, ungrouped datasets keep
nnU-Net's split, separated twins are found, and a dataset's splits are extended with its twins."""
from __future__ import annotations

import json

import pytest

from nnunet_mm.io.splits import (cross_validation_splits, grouped_cross_validation_splits, normal_twin_groups,
                                 read_splits, separated_twins, with_twins)


def _twinned(num_cases: int) -> list[str]:
    """``num_cases`` originals, every other one with a ``_normal`` twin."""
    originals = [f"case_{i:03d}" for i in range(num_cases)]
    return originals + [f"{case}_normal" for case in originals[::2]]


@pytest.mark.parametrize("num_cases", range(2, 13))
def test_grouped_splits_keep_every_twin_on_its_originals_side(num_cases):
    cases = _twinned(num_cases)
    splits = grouped_cross_validation_splits(normal_twin_groups(cases))
    assert len(splits) == min(5, num_cases)  # folds count groups, not cases
    assert sorted(c for fold in splits for c in fold["val"]) == sorted(cases)  # each case validated once
    for fold in splits:
        assert set(fold["train"]).isdisjoint(fold["val"]) and set(fold["train"]) | set(fold["val"]) == set(cases)
        for original in cases[:num_cases:2]:
            side = "train" if original in fold["train"] else "val"
            assert f"{original}_normal" in fold[side]
    assert separated_twins(splits, cases) == []


def test_ungrouped_cases_get_nnunets_split_and_plain_random_folds_separate_twins():
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    cases = _twinned(6)
    singletons = grouped_cross_validation_splits({case: [case] for case in cases})
    assert singletons == cross_validation_splits(cases) == [
        {"train": list(f["train"]), "val": list(f["val"])}
        for f in generate_crossval_split(sorted(cases), seed=12345, n_splits=5)]
    assert separated_twins(singletons, cases)  # what nnU-Net's own folds do to make-normal's datasets


def test_a_single_group_trains_and_validates_on_itself():
    assert grouped_cross_validation_splits({"a": ["a_normal", "a"]}) == [{"train": ["a", "a_normal"],
                                                                         "val": ["a", "a_normal"]}]
    assert separated_twins([{"train": ["a", "a_normal"], "val": ["a", "a_normal"]}], ["a", "a_normal"]) == []


def test_separated_twins_name_fold_and_sides_and_ignore_unpaired_names():
    cases = ["a", "a_normal", "b", "b_normal", "c_normal"]  # c_normal has no original: not a twin
    splits = [{"train": ["a", "b", "b_normal"], "val": ["a_normal", "c_normal"]},
              {"train": ["a", "a_normal", "b_normal"], "val": ["b"]}]
    assert separated_twins(splits, cases) == [(0, "a", "a_normal"), (1, "b_normal", "b")]
    assert normal_twin_groups(cases) == {"a": ["a", "a_normal"], "b": ["b", "b_normal"], "c_normal": ["c_normal"]}


def test_twins_join_their_originals_fold_and_dropped_originals_leave():
    source = [{"train": ["a", "b"], "val": ["c"]}, {"train": ["c"], "val": ["a", "b"]}]
    twins = {"a": "a_normal", "c": "c_normal"}
    assert with_twins(source, twins, keep=["a", "b", "c"]) == [
        {"train": ["a", "a_normal", "b"], "val": ["c", "c_normal"]},
        {"train": ["c", "c_normal"], "val": ["a", "a_normal", "b"]}]
    assert with_twins(source, twins, keep=[]) == [{"train": ["a_normal"], "val": ["c_normal"]},
                                                   {"train": ["c_normal"], "val": ["a_normal"]}]


def test_a_malformed_splits_file_is_named(tmp_path):
    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps({"train": []}), encoding="utf-8")
    with pytest.raises(ValueError, match="splits_final.json"):
        read_splits(path)
