"""Partial fields of view: the coverage mask, the fill with the reference phase, the fractions and the warning."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mm.conversion.coverage import (PhaseCoverage, coverage_warning, field_of_view, fill_uncovered,
                                           measure_coverage)
from nnunet_mm.io import resample_to_reference

LABELS = {"liver": 1, "tumor": 2}


def _image(array: np.ndarray, *, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def _reference() -> sitk.Image:
    """8 slices of 2 mm (z = 0 ... 14 mm), 6 x 6 voxels of 1 mm, values 100 + 10 * z index."""
    return _image((100 + 10 * np.arange(8)[:, None, None] + np.zeros((8, 6, 6))).astype(np.int16))


def test_field_of_view_is_true_exactly_where_resampling_gives_the_phase_own_values() -> None:
    reference = _reference()
    # the phase: 4 slices of 2 mm from z = 8 mm, i.e. reference slices 4-7 (its extent reaches down to z = 7 mm)
    phase = _image(np.full((4, 6, 6), 50, np.int16), origin=(0.0, 0.0, 8.0))
    covered = field_of_view(phase, reference)
    assert covered.shape == (8, 6, 6)
    assert covered[4:].all() and not covered[:4].any()
    resampled = sitk.GetArrayFromImage(resample_to_reference(phase, reference, default_value=-1024))
    np.testing.assert_array_equal(resampled == -1024, ~covered)


def test_a_translation_moves_the_field_of_view() -> None:
    reference = _reference()
    phase = _image(np.full((4, 6, 6), 50, np.int16), origin=(0.0, 0.0, 8.0))
    shift = sitk.TranslationTransform(3, (0.0, 0.0, 4.0))  # reference point z maps to phase point z + 4
    covered = field_of_view(phase, reference, shift)
    assert covered[2:6].all() and not covered[:2].any() and not covered[6:].any()


def test_uncovered_voxels_get_the_reference_values_and_covered_ones_stay() -> None:
    reference = _reference()
    channel = _image(np.full((8, 6, 6), -1024, np.int16))
    covered = np.zeros((8, 6, 6), bool)
    covered[5:] = True
    channel_values = sitk.GetArrayFromImage(channel)
    channel_values[5:] = 80
    channel = _image(channel_values)
    filled = fill_uncovered(channel, reference, covered)
    values = sitk.GetArrayFromImage(filled)
    assert filled.GetPixelID() == channel.GetPixelID()
    assert filled.GetOrigin() == channel.GetOrigin() and filled.GetSpacing() == channel.GetSpacing()
    np.testing.assert_array_equal(values[:5], sitk.GetArrayFromImage(reference)[:5])
    assert (values[5:] == 80).all()
    assert (sitk.GetArrayFromImage(channel)[:5] == -1024).all()  # the input is not modified


def test_a_float_reference_is_rounded_and_clipped_into_an_integer_channel() -> None:
    reference = _image(np.array([[[1.6, -2.6, 4.0e5]]], np.float32))
    channel = _image(np.zeros((1, 1, 3), np.int16))
    filled = fill_uncovered(channel, reference, np.zeros((1, 1, 3), bool))
    assert sitk.GetArrayFromImage(filled).tolist() == [[[2, -3, 32767]]]


def test_a_fully_covered_channel_is_returned_as_it_is() -> None:
    channel = _image(np.ones((8, 6, 6), np.int16))
    assert fill_uncovered(channel, _reference(), np.ones((8, 6, 6), bool)) is channel


def test_a_mask_of_another_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"coverage mask \(4, 6, 6\), reference \(8, 6, 6\) and channel \(8, 6, 6\)"):
        fill_uncovered(_image(np.ones((8, 6, 6), np.int16)), _reference(), np.ones((4, 6, 6), bool))


def test_coverage_fractions_of_grid_foreground_and_every_label() -> None:
    covered = np.zeros((4, 1, 5), bool)
    covered[2:] = True  # the upper half of the grid
    label = np.zeros((4, 1, 5), np.uint8)
    label[:, 0, :2] = 1  # liver: 8 voxels, 4 covered
    label[3, 0, 4] = 2  # tumour: 1 voxel, covered
    coverage = measure_coverage(covered, label, {"background": 0, **LABELS})
    assert coverage.grid == 0.5
    assert coverage.labels == {"foreground": 5 / 9, "liver": 0.5, "tumor": 1.0}
    assert coverage.uncovered_labels == {"foreground": 5 / 9, "liver": 0.5}


def test_a_test_case_has_no_label_fractions_and_an_absent_label_has_none() -> None:
    covered = np.ones((2, 2, 2), bool)
    assert measure_coverage(covered, None, LABELS) == PhaseCoverage(1.0, None)
    coverage = measure_coverage(covered, np.ones((2, 2, 2), np.uint8), LABELS)
    assert coverage.labels == {"foreground": 1.0, "liver": 1.0, "tumor": None}
    assert coverage.uncovered_labels == {}


def test_a_fraction_below_one_is_never_rounded_up_to_one() -> None:
    record = PhaseCoverage(0.99999, {"foreground": 1.0, "liver": 0.123456, "tumor": None}).to_dict()
    assert record == {"grid": 0.9999, "labels": {"foreground": 1.0, "liver": 0.1235, "tumor": None}}


def _warning(coverage: PhaseCoverage) -> str | None:
    return coverage_warning(coverage, file="/data/c1/art.nii.gz", case_id="c1", phase="art", reference_phase="pv")


def test_no_warning_when_the_labelled_region_and_most_of_the_grid_are_covered() -> None:
    assert _warning(PhaseCoverage(0.6, {"foreground": 1.0, "liver": 1.0, "tumor": 1.0})) is None
    assert _warning(PhaseCoverage(0.5, None)) is None
    assert _warning(PhaseCoverage(0.9, {"foreground": 0.996, "liver": 0.996, "tumor": None})) is None


def test_the_warning_names_file_case_phase_and_every_fraction() -> None:
    message = _warning(PhaseCoverage(0.5, {"foreground": 0.5, "liver": 0.487, "tumor": 0.683}))
    assert message == ("/data/c1/art.nii.gz: case 'c1', phase 'art' covers 50.0% of the labelled region (label > 0; "
                       "liver 48.7%, tumor 68.3%) and 50.0% of the reference grid; voxels outside it hold the "
                       "reference phase 'pv' (see nnunet_mm_qa/coverage.json).")


def test_a_partly_covered_tumour_alone_is_warned_about() -> None:
    message = _warning(PhaseCoverage(0.9, {"foreground": 0.999, "liver": 1.0, "tumor": 0.9}))
    assert message is not None and "tumor 90.0%" in message


def test_a_phase_covering_none_of_the_labelled_region_is_warned_about_loudly() -> None:
    message = _warning(PhaseCoverage(0.2, {"foreground": 0.0, "liver": 0.0, "tumor": 0.0}))
    assert message is not None and "covers NONE of the labelled region (label > 0) and 20.0% of the reference grid" \
        in message


def test_a_small_share_of_the_grid_is_warned_about_without_a_label() -> None:
    assert _warning(PhaseCoverage(0.3, None)) == (
        "/data/c1/art.nii.gz: case 'c1', phase 'art' covers only 30.0% of the reference grid; voxels outside it hold "
        "the reference phase 'pv' (see nnunet_mm_qa/coverage.json).")
