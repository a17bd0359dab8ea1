"""Scores of a weakly supervised segmenter split by image-level label: Dice on diseased images, false positives on
normal ones.

On a held-out set that is half normal, nnU-Net's mean lesion Dice mixes two different questions: a normal image
scores NaN (left out) when the prediction is empty and 0 when it holds a single lesion voxel, so one false positive
drags the mean as far as a missed lesion. :func:`score_by_image_label` keeps them apart:

* **diseased Dice**: the mean Dice over the diseased images (:func:`nnunet_mm.evaluation.metrics.dice`; a diseased
  image without a reference lesion is undefined and left out);
* **false-positive rate**: the share of normal images with at least one predicted lesion voxel;
* **false-positive volume**: the mean number of predicted lesion voxels per normal image (all normal images, empty
  ones counting 0).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_mm.evaluation.metrics import defined_or_none, dice, mean_of_defined
from nnunet_mm.weak.image_labels import DISEASED, IMAGE_LABEL_VALUES


@dataclass(frozen=True)
class ImageLabelScores:
    """Scores of one set of predictions, split by image label (see the module docstring).

    Attributes:
        diseased_dice: mean lesion Dice over the diseased images (NaN when none is defined).
        num_diseased: diseased images scored.
        false_positive_rate: share of normal images with any predicted lesion voxel (NaN without normal images).
        mean_false_positive_voxels: mean predicted lesion voxels per normal image (NaN without normal images).
        num_normal: normal images scored.
    """

    diseased_dice: float
    num_diseased: int
    false_positive_rate: float
    mean_false_positive_voxels: float
    num_normal: int

    def to_json(self) -> dict[str, float | int | None]:
        """The scores with NaN written as None (JSON ``null``)."""
        return {key: defined_or_none(value) if isinstance(value, float) else value
                for key, value in asdict(self).items()}


def score_by_image_label(references: Mapping[str, np.ndarray], predictions: Mapping[str, np.ndarray],
                         image_labels: Mapping[str, str], *, lesion_labels: Sequence[int] = (1,)) -> ImageLabelScores:
    """Split scores of label maps (see the module docstring).

    Args:
        references: case → true label map (any shape).
        predictions: case → predicted label map, same shape as its reference.
        image_labels: case → ``"diseased"`` or ``"normal"``; every case of ``references`` must have one.
        lesion_labels: label values that count as lesion.

    Raises:
        KeyError: a case without a prediction or without an image label (naming them).
        ValueError: an image label other than the two.
    """
    missing = sorted(set(references) - set(predictions))
    unlabelled = sorted(set(references) - set(image_labels))
    if missing or unlabelled:
        raise KeyError(f"cannot score: case(s) without a prediction {missing[:5]}, without an image label "
                       f"{unlabelled[:5]}.")
    wrong = sorted(case for case in references if image_labels[case] not in IMAGE_LABEL_VALUES)
    if wrong:
        raise ValueError(f"image labels must be one of {list(IMAGE_LABEL_VALUES)}; cases {wrong[:5]} have "
                         f"{sorted({image_labels[c] for c in wrong})}.")
    dice_values, false_positive_voxels = [], []
    for case in sorted(references):
        predicted = np.isin(np.asarray(predictions[case]), lesion_labels)
        if image_labels[case] == DISEASED:
            dice_values.append(dice(np.isin(np.asarray(references[case]), lesion_labels), predicted))
        else:
            false_positive_voxels.append(int(predicted.sum()))
    voxels = np.asarray(false_positive_voxels, dtype=float)
    return ImageLabelScores(
        diseased_dice=mean_of_defined(dice_values), num_diseased=len(dice_values),
        false_positive_rate=float(np.mean(voxels > 0)) if voxels.size else math.nan,
        mean_false_positive_voxels=float(voxels.mean()) if voxels.size else math.nan,
        num_normal=len(false_positive_voxels))


def score_prediction_folder(reference_folder: Path, prediction_folder: Path, image_labels: Mapping[str, str], *,
                            file_ending: str, lesion_labels: Sequence[int] = (1,)) -> ImageLabelScores:
    """:func:`score_by_image_label` of the files ``<case><file_ending>`` of two folders (every labelled case).

    Raises:
        FileNotFoundError: a labelled case without its reference or prediction file (naming the file).
    """
    references, predictions = {}, {}
    for case in sorted(image_labels):
        for folder, store in ((Path(reference_folder), references), (Path(prediction_folder), predictions)):
            file = folder / f"{case}{file_ending}"
            if not file.is_file():
                raise FileNotFoundError(f"{file}: missing; every case with an image label needs a reference and a "
                                        f"prediction.")
            store[case] = sitk.GetArrayFromImage(sitk.ReadImage(str(file)))
    return score_by_image_label(references, predictions, image_labels, lesion_labels=lesion_labels)

