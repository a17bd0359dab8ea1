"""Scores split by image label: Dice on diseased images, false positives on normal images."""
import math

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mm.weak.evaluation import score_by_image_label, score_prediction_folder


def _square(size: int, top: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[top:top + side, top:top + side] = 1
    return mask


def _cases():
    empty = np.zeros((16, 16), np.uint8)
    references = {"d1": _square(16, 2, 4), "d2": _square(16, 8, 4), "n1": empty, "n2": empty, "n3": empty,
                  "n4": empty}
    predictions = {"d1": _square(16, 2, 4), "d2": empty, "n1": _square(16, 0, 3), "n2": empty, "n3": empty,
                   "n4": empty}
    labels = {"d1": "diseased", "d2": "diseased", "n1": "normal", "n2": "normal", "n3": "normal", "n4": "normal"}
    return references, predictions, labels


def test_diseased_dice_and_false_positives_on_normal_images_are_reported_apart():
    """One false positive on a normal image does not lower the diseased Dice (nnU-Net's mean would count it 0)."""
    scores = score_by_image_label(*_cases())
    assert scores.diseased_dice == pytest.approx(0.5)  # 1 and 0 (a missed lesion)
    assert (scores.num_diseased, scores.num_normal) == (2, 4)
    assert scores.false_positive_rate == pytest.approx(0.25)
    assert scores.mean_false_positive_voxels == pytest.approx(9 / 4)
    assert scores.to_json()["false_positive_rate"] == pytest.approx(0.25)


def test_without_normal_images_the_false_positive_scores_are_undefined():
    references, predictions, labels = _cases()
    diseased = {case: value for case, value in labels.items() if value == "diseased"}
    scores = score_by_image_label({c: references[c] for c in diseased}, predictions, diseased)
    assert math.isnan(scores.false_positive_rate) and scores.to_json()["mean_false_positive_voxels"] is None


def test_cases_without_prediction_or_label_are_refused():
    references, predictions, labels = _cases()
    with pytest.raises(KeyError, match=r"without a prediction \['n4'\]"):
        score_by_image_label(references, {k: v for k, v in predictions.items() if k != "n4"}, labels)
    with pytest.raises(ValueError, match="cases \\['d1'\\]"):
        score_by_image_label(references, predictions, {**labels, "d1": "sick"})


def test_folders_of_label_files_are_scored(tmp_path):
    references, predictions, labels = _cases()
    for folder, arrays in (("ref", references), ("pred", predictions)):
        (tmp_path / folder).mkdir()
        for case, array in arrays.items():
            sitk.WriteImage(sitk.GetImageFromArray(array), str(tmp_path / folder / f"{case}.png"))
    scores = score_prediction_folder(tmp_path / "ref", tmp_path / "pred", labels, file_ending=".png")
    assert scores == score_by_image_label(references, predictions, labels)
    (tmp_path / "pred" / "n2.png").unlink()
    with pytest.raises(FileNotFoundError, match="n2.png"):
        score_prediction_folder(tmp_path / "ref", tmp_path / "pred", labels, file_ending=".png")
