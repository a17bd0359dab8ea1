"""Overlap metrics of binary masks, counted by nnU-Net's own evaluation code.

**Dice of two empty masks is NaN (undefined), not 1 and not 0.** This is nnU-Net's convention
(``nnunetv2.evaluation.evaluate_predictions.compute_metrics``): a case where neither the reference nor the
prediction contains the structure says nothing about how well it is segmented. Scoring it 1 would reward a
method for cases it cannot get wrong, scoring it 0 would punish it for them; NaN leaves such cases out of
``np.nanmean`` exactly as nnU-Net's ``summary.json`` means leave them out, so a Dice reported by ``nnunet_mm``
and one from ``nnUNetv2_evaluate_folder`` agree. JSON reports write the undefined value as ``null``
(:func:`defined_or_none`).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def dice(reference: np.ndarray, prediction: np.ndarray, ignore_mask: np.ndarray | None = None) -> float:
    """Dice ``2·TP / (2·TP + FP + FN)`` of two masks; NaN when both are empty (see the module docstring).

    Args:
        reference: the ground-truth mask, any shape; non-zero is foreground.
        prediction: the predicted mask, same shape as ``reference``; non-zero is foreground.
        ignore_mask: voxels to leave out (e.g. nnU-Net's ignore label), same shape; None counts every voxel.

    Returns:
        The Dice in [0, 1], or NaN when neither mask has a foreground voxel (outside ``ignore_mask``).

    Raises:
        ValueError: the shapes differ (they would otherwise broadcast silently).
    """
    reference, prediction = np.asarray(reference, dtype=bool), np.asarray(prediction, dtype=bool)
    shapes = [reference.shape, prediction.shape] + ([] if ignore_mask is None else [np.shape(ignore_mask)])
    if len(set(shapes)) != 1:
        raise ValueError(f"Dice needs masks of one shape, got reference {reference.shape}, prediction "
                         f"{prediction.shape}" + ("" if ignore_mask is None else f", ignore_mask {shapes[2]}") + ".")
    # imported here: nnU-Net's evaluation module pulls in torch (~3 s), which converters otherwise never need
    from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn

    ignore = None if ignore_mask is None else np.asarray(ignore_mask, dtype=bool)
    tp, fp, fn, _ = compute_tp_fp_fn_tn(reference, prediction, ignore)
    if tp + fp + fn == 0:
        return math.nan
    return float(2 * tp / (2 * tp + fp + fn))


def defined_or_none(value: float) -> float | None:
    """``value``, or None when it is NaN: how JSON reports write an undefined Dice (``null``, not ``NaN``)."""
    return None if math.isnan(value) else value


def mean_of_defined(values: Iterable[float | None]) -> float:
    """Mean over the defined values (neither NaN nor None), as nnU-Net's ``np.nanmean``; NaN when none is defined."""
    defined = [float(v) for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(defined)) if defined else math.nan
