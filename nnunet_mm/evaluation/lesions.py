"""Lesion-wise detection: connected components of a reference and a predicted mask, matched by overlap.

A **lesion** is a connected component of a binary mask (``cc3d``; 26-connectivity in 3D, 8 in 2D, so a 2D case
stored by nnU-Net as a ``1 × Y × X`` volume gets 8-connectivity in its plane). A reference lesion is **detected** when
one predicted component overlaps it by at least ``min_overlap_voxels`` voxels (default 1: any overlap). A predicted
component is a **false positive** when it overlaps no reference lesion by that much. Lesion recall is
``detected / reference lesions``; it is undefined (NaN) for a case without reference lesions, which is why reports
pool the counts over cases instead of averaging per-case recalls.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LesionCounts:
    """Lesion counts of one case and one label.

    Attributes:
        reference_lesions: connected components of the reference mask.
        detected_lesions: reference components matched by a predicted component.
        predicted_lesions: connected components of the predicted mask.
        false_positive_lesions: predicted components that match no reference component.
    """

    reference_lesions: int
    detected_lesions: int
    predicted_lesions: int
    false_positive_lesions: int

    @property
    def recall(self) -> float:
        """``detected / reference`` lesions; NaN when the reference has none."""
        return self.detected_lesions / self.reference_lesions if self.reference_lesions else math.nan


def connected_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The connected components of a binary mask.

    Args:
        mask: (Y, X) or (Z, Y, X) array; non-zero is foreground.

    Returns:
        ``(component_ids, count)``: an array of the mask's shape holding 0 for background and 1..count for the
        components (26-connected in 3D, 8-connected in 2D), and the number of components.

    Raises:
        ValueError: the mask is neither 2D nor 3D.
    """
    import cc3d

    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"connected components need a 2D or 3D mask, got shape {mask.shape}.")
    component_ids, count = cc3d.connected_components(np.ascontiguousarray(mask != 0, dtype=np.uint8),
                                                     connectivity=26 if mask.ndim == 3 else 8, return_N=True)
    return component_ids, int(count)


def count_lesions(reference: np.ndarray, prediction: np.ndarray, *, min_overlap_voxels: int = 1) -> LesionCounts:
    """Match the lesions (connected components) of a reference and a predicted mask (see the module docstring).

    Args:
        reference: (Y, X) or (Z, Y, X) ground-truth mask; non-zero is foreground.
        prediction: predicted mask of the same shape.
        min_overlap_voxels: voxels a predicted and a reference component must share to match (≥ 1).

    Returns:
        The case's :class:`LesionCounts`.

    Raises:
        ValueError: the shapes differ, or ``min_overlap_voxels`` < 1.
    """
    if np.shape(reference) != np.shape(prediction):
        raise ValueError(f"lesion matching needs masks of one shape, got reference {np.shape(reference)}, "
                         f"prediction {np.shape(prediction)}.")
    if min_overlap_voxels < 1:
        raise ValueError(f"min_overlap_voxels must be at least 1, got {min_overlap_voxels}.")
    reference_ids, num_reference = connected_components(reference)
    prediction_ids, num_predicted = connected_components(prediction)
    both = (reference_ids > 0) & (prediction_ids > 0)
    # overlap[r, p]: voxels shared by reference component r and predicted component p (row/column 0: background)
    pair_index = reference_ids[both].astype(np.int64) * (num_predicted + 1) + prediction_ids[both]
    overlap = np.bincount(pair_index, minlength=(num_reference + 1) * (num_predicted + 1))
    matched = overlap.reshape(num_reference + 1, num_predicted + 1)[1:, 1:] >= min_overlap_voxels
    detected = int(matched.any(axis=1).sum())
    false_positives = int((~matched.any(axis=0)).sum())
    return LesionCounts(reference_lesions=num_reference, detected_lesions=detected, predicted_lesions=num_predicted,
                        false_positive_lesions=false_positives)
