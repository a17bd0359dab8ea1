"""Partial fields of view: which voxels of a phase resampled onto the reference grid really come from that phase.

A phase acquired over a shorter z-range than the reference (a short arterial run is common) leaves part of the
reference grid uncovered. Resampling alone fills those voxels with a constant (the phase's minimum, −1024 HU for
CT), also inside the body; nnU-Net's CT normalisation then takes that constant into the foreground percentiles,
mean and std of the channel and squeezes the real contrast. Here such voxels are filled the way modality dropout's
``"duplicate"`` mode fills a missing phase (:func:`nnunet_mm.augment.modality_dropout.fill_missing_channels`): with
the reference phase's own values. No intensity is invented, the channel's statistics stay those of contrast-enhanced
tissue, and the network sees "no extra information here" rather than air inside the liver.

:func:`measure_coverage` says how much of the reference grid and of the labelled region a phase covers, and
:func:`coverage_warning` turns that into the one warning line per case and phase that a converter logs.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from nnunet_mm.io import resample_to_reference

__all__ = [
    "FOREGROUND",
    "GRID_COVERAGE_WARNING_BELOW",
    "LABEL_COVERAGE_WARNING_BELOW",
    "PhaseCoverage",
    "coverage_warning",
    "field_of_view",
    "fill_uncovered",
    "measure_coverage",
]

#: A phase covering less of the labelled region (label > 0, or of any one label) than this is reported.
LABEL_COVERAGE_WARNING_BELOW = 0.995
#: A phase covering less of the reference grid than this is reported, whatever the label.
GRID_COVERAGE_WARNING_BELOW = 0.5
#: Key of the whole labelled region (label > 0) in :attr:`PhaseCoverage.labels`.
FOREGROUND = "foreground"


def field_of_view(moving: sitk.Image, reference: sitk.Image, transform: sitk.Transform | None = None) -> np.ndarray:
    """(Z, Y, X) bool mask of the reference voxels whose (transformed) position lies inside ``moving``.

    A mask of ones on ``moving``'s grid is resampled with nearest neighbour and the same transform as the image;
    ITK's resampler decides "inside" the same way for every interpolator (within half a voxel of the outermost voxel
    centres), so the mask is True exactly where resampling ``moving`` gives a value of its own, not the default.

    Args:
        moving: the phase, on its own grid.
        reference: supplies the output grid.
        transform: the transform the phase is resampled with (reference → moving space); None = identity.
    """
    inside = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    inside.CopyInformation(moving)
    resampled = resample_to_reference(inside, reference, transform=transform, is_label=True, default_value=0)
    return sitk.GetArrayFromImage(resampled).astype(bool)


def fill_uncovered(channel: sitk.Image, reference: sitk.Image, covered: np.ndarray) -> sitk.Image:
    """``channel`` with every voxel outside ``covered`` replaced by the reference phase's value there.

    Args:
        channel: a phase resampled onto the reference grid.
        reference: the reference phase (same grid).
        covered: (Z, Y, X) bool, True where ``channel`` holds the phase's own values (:func:`field_of_view`).

    Returns:
        A new image with the pixel type and geometry of ``channel``; covered voxels are unchanged. Reference values
        are rounded and clipped when the channel has an integer type.

    Raises:
        ValueError: ``covered`` or ``reference`` does not match the channel's grid size.
    """
    values = sitk.GetArrayFromImage(channel)
    reference_values = sitk.GetArrayViewFromImage(reference)
    if covered.shape != values.shape or reference_values.shape != values.shape:
        raise ValueError(f"coverage mask {covered.shape}, reference {reference_values.shape} and channel "
                         f"{values.shape} (Z, Y, X) must have the same shape.")
    if covered.all():
        return channel
    fill = reference_values[~covered]
    if np.issubdtype(values.dtype, np.integer):
        limits = np.iinfo(values.dtype)
        fill = np.clip(np.rint(fill), limits.min, limits.max)
    values[~covered] = fill.astype(values.dtype)
    filled = sitk.GetImageFromArray(values)
    filled.CopyInformation(channel)
    return filled


@dataclass(frozen=True)
class PhaseCoverage:
    """How much of the reference grid and of the reference label one phase covers.

    Attributes:
        grid: fraction of the reference grid's voxels inside the phase's field of view.
        labels: None without a label (test case); else the covered fraction of ``"foreground"`` (label > 0) and of
            each label by name, None for a region with no voxel in this case.
    """

    grid: float
    labels: dict[str, float | None] | None

    @property
    def uncovered_labels(self) -> dict[str, float]:
        """The label regions (``"foreground"`` and names) covered less than :data:`LABEL_COVERAGE_WARNING_BELOW`."""
        return {name: value for name, value in (self.labels or {}).items()
                if value is not None and value < LABEL_COVERAGE_WARNING_BELOW}

    def to_dict(self, digits: int = 4) -> dict[str, object]:
        """JSON-ready, fractions rounded to ``digits`` (a fraction below 1 never rounds up to 1.0)."""
        def rounded(value: float | None) -> float | None:
            if value is None:
                return None
            result = round(value, digits)
            return min(result, 1.0 - 10.0 ** -digits) if value < 1.0 else result

        labels = None if self.labels is None else {name: rounded(v) for name, v in self.labels.items()}
        return {"grid": rounded(self.grid), "labels": labels}


def measure_coverage(covered: np.ndarray, label: np.ndarray | None, labels: Mapping[str, int]) -> PhaseCoverage:
    """The fractions of :class:`PhaseCoverage`.

    Args:
        covered: (Z, Y, X) bool, :func:`field_of_view` of the phase.
        label: (Z, Y, X) integer label on the same grid, or None for a test case.
        labels: foreground label names and values (background is left out if given).
    """
    grid = float(covered.mean())
    if label is None:
        return PhaseCoverage(grid, None)

    def fraction(region: np.ndarray) -> float | None:
        count = int(region.sum())
        return float(np.count_nonzero(covered & region)) / count if count else None

    fractions = {FOREGROUND: fraction(label > 0)}
    fractions.update({name: fraction(label == value) for name, value in labels.items() if value != 0})
    return PhaseCoverage(grid, fractions)


def coverage_warning(coverage: PhaseCoverage, *, file: str, case_id: str, phase: str,
                     reference_phase: str) -> str | None:
    """The warning line for one case and phase, or None when the phase covers the whole labelled region (every
    label at least :data:`LABEL_COVERAGE_WARNING_BELOW`) and at least :data:`GRID_COVERAGE_WARNING_BELOW` of the
    grid.

    Args:
        coverage: the phase's coverage.
        file: the phase's source file, as the user knows it.
        case_id: the case.
        phase: the phase's name.
        reference_phase: the name of the phase whose values fill the uncovered voxels.
    """
    uncovered = coverage.uncovered_labels
    grid_text = f"{100 * coverage.grid:.1f}% of the reference grid"
    fill_text = f"voxels outside it hold the reference phase '{reference_phase}' (see nnunet_mm_qa/coverage.json)"
    if uncovered:
        labels = coverage.labels or {}
        foreground = labels.get(FOREGROUND)
        per_label = ", ".join(f"{name} {100 * value:.1f}%" for name, value in labels.items()
                              if name != FOREGROUND and value is not None)
        if foreground == 0.0:
            return (f"{file}: case '{case_id}', phase '{phase}' covers NONE of the labelled region (label > 0) and "
                    f"{grid_text}: this channel carries no information of its own about the labelled region in this "
                    f"case; {fill_text}. Check the phase's field of view (or registration).")
        return (f"{file}: case '{case_id}', phase '{phase}' covers "
                f"{100 * foreground:.1f}% of the labelled region (label > 0; {per_label}) and {grid_text}; "
                f"{fill_text}.")
    if coverage.grid < GRID_COVERAGE_WARNING_BELOW:
        return f"{file}: case '{case_id}', phase '{phase}' covers only {grid_text}; {fill_text}."
    return None
