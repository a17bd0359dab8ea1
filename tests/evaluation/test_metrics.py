"""The one Dice of nnunet_mm: nnU-Net's counts, NaN for two empty masks, and its helpers for reports."""
from __future__ import annotations

import math

import numpy as np
import pytest

from nnunet_mm.evaluation.metrics import defined_or_none, dice, mean_of_defined


def test_dice_counts_overlap_as_two_tp_over_both_sizes():
    reference = np.zeros((4, 4), bool)
    prediction = np.zeros((4, 4), bool)
    reference[:2] = True  # 8 voxels
    prediction[1:3] = True  # 8 voxels, 4 shared
    assert dice(reference, prediction) == pytest.approx(2 * 4 / (8 + 8))


def test_dice_of_two_empty_masks_is_nan_as_in_nnunet_evaluation():
    empty = np.zeros((3, 3), bool)
    assert math.isnan(dice(empty, empty))


def test_dice_of_one_empty_mask_is_zero():
    full = np.ones((3, 3), bool)
    assert dice(full, np.zeros_like(full)) == 0.0 and dice(np.zeros_like(full), full) == 0.0


def test_dice_treats_any_non_zero_label_value_as_foreground():
    labels = np.array([[0, 1], [2, 0]])
    assert dice(labels, labels > 0) == 1.0


def test_dice_leaves_ignored_voxels_out():
    reference = np.array([1, 1, 0, 0], bool)
    prediction = np.array([1, 0, 1, 0], bool)
    assert dice(reference, prediction) == pytest.approx(0.5)
    assert dice(reference, prediction, ignore_mask=np.array([0, 1, 1, 0], bool)) == 1.0


def test_dice_refuses_masks_of_different_shapes_instead_of_broadcasting():
    with pytest.raises(ValueError, match=r"reference \(2, 3\), prediction \(3,\)"):
        dice(np.ones((2, 3), bool), np.ones(3, bool))


def test_reports_write_undefined_dice_as_null_and_leave_it_out_of_means():
    assert defined_or_none(math.nan) is None and defined_or_none(0.25) == 0.25
    assert mean_of_defined([0.5, None, math.nan, 1.0]) == pytest.approx(0.75)
    assert math.isnan(mean_of_defined([None, math.nan]))
