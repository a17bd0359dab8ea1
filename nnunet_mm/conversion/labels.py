"""Label value checks and remapping with a whitelist (every value not listed is an error naming the file), and the
mapping back for exporting predictions."""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def label_dict(label_names: Sequence[str]) -> dict[str, int]:
    """``{"background": 0, label_names[0]: 1, ...}``, the ``labels`` entry of dataset.json."""
    return {"background": 0, **{name: value for value, name in enumerate(label_names, start=1)}}


def format_values(values: Iterable[float]) -> list[int | float]:
    """Values as ints where they are whole numbers (for readable messages)."""
    return [int(v) if float(v).is_integer() else float(v) for v in values]


def label_value_problems(values: np.ndarray, allowed: Iterable[int], file: Path, *, hint: str = "") -> list[str]:
    """Problems with the set of voxel values ``values`` of the label ``file``: non-integer or not in ``allowed``."""
    values = np.unique(values)
    allowed = sorted(int(v) for v in allowed)
    problems = []
    non_integer = values[values != np.round(values)]
    if non_integer.size:
        problems.append(f"{file}: label has non-integer values {format_values(non_integer[:5])}; expected integers "
                        f"{allowed}.")
    unknown = [v for v in values[values == np.round(values)] if int(v) not in allowed]
    if unknown:
        problems.append(f"{file}: unknown label values {format_values(unknown)} (found {format_values(values)}); "
                        f"allowed are {allowed}.{(' ' + hint) if hint else ''}")
    return problems


def remap_labels(array: np.ndarray, mapping: Mapping[int, int], file: Path, *,
                 fixes: Mapping[int, int] | None = None, dtype: type = np.uint8) -> np.ndarray:
    """Map the label values of ``array`` through ``mapping`` (a whitelist: every source value must be a key).

    Args:
        array: label voxels as read from ``file``.
        mapping: source value → nnU-Net value, e.g. ``{0: 0, 205: 1, 420: 2, ...}``.
        file: the label file, named in messages.
        fixes: known stray values replaced before mapping, e.g. ``{421: 420}`` for MM-WHS ``mr_train_1010``; each
            replacement that happens is logged as a warning naming the file and the voxel count.
        dtype: output type.

    Raises:
        ValueError: a value is neither in ``mapping`` nor in ``fixes`` (message names ``file``, the values found and
            the allowed ones).
    """
    array = np.asarray(array)
    values = np.unique(array)
    if fixes:
        for stray, replacement in fixes.items():
            count = int(np.count_nonzero(array == stray))
            if count:
                logger.warning("%s: %d voxel(s) with the stray label value %s replaced by %s", file, count, stray,
                               replacement)
        values = np.unique(array[~np.isin(array, list(fixes))])
    problems = label_value_problems(values, mapping.keys(), file)
    if problems:
        raise ValueError(" ".join(problems))
    lookup_source = np.array(sorted(mapping), dtype=np.int64)
    if fixes:
        array = array.copy()
        for stray, replacement in fixes.items():
            array[array == stray] = replacement
    index = np.searchsorted(lookup_source, np.round(array).astype(np.int64))
    targets = np.array([mapping[v] for v in lookup_source.tolist()], dtype=dtype)
    return targets[index]


def labels_back(segmentation: np.ndarray, nnunet_to_source: Mapping[int, int], *, dtype: type = np.uint16,
                meaning: str = "") -> np.ndarray:
    """Map nnU-Net label values (e.g. a prediction) back to the source's encoding, the inverse of
    :func:`remap_labels` for exporting predictions.

    Args:
        segmentation: nnU-Net label values ``0..len(nnunet_to_source) - 1``.
        nnunet_to_source: nnU-Net value → source value, with a key for every value from 0 up.
        dtype: output type.
        meaning: what the nnU-Net values stand for, quoted in the message, e.g. ``"1 edema, 2 NCR/NET"``.

    Raises:
        ValueError: a value that is not a key of ``nnunet_to_source`` (the message lists them).
    """
    segmentation = np.asarray(segmentation)
    unknown = sorted(set(np.unique(segmentation).tolist()) - set(nnunet_to_source))
    if unknown:
        raise ValueError(f"segmentation has unexpected label values {unknown} outside the nnU-Net labels "
                         f"{sorted(nnunet_to_source)}{f' ({meaning})' if meaning else ''}.")
    lookup = np.array([nnunet_to_source[value] for value in range(len(nnunet_to_source))], dtype=dtype)
    return lookup[segmentation.astype(np.intp)]


def bin_intensities(array: np.ndarray, bins: Sequence[tuple[float, float, int]], file: Path,
                    dtype: type = np.uint8) -> np.ndarray:
    """Labels from intensity bins ``(low, high, value)`` meaning ``low < v <= high → value``; 0 stays 0.

    Used for label PNGs that encode classes as grey levels (CHAOS MR: 63/126/189/252). A non-zero intensity outside
    every bin is an error naming ``file``.
    """
    array = np.asarray(array)
    out = np.zeros(array.shape, dtype=dtype)
    covered = array == 0
    for low, high, value in bins:
        inside = (array > low) & (array <= high)
        out[inside] = value
        covered |= inside
    if not covered.all():
        stray = format_values(np.unique(array[~covered])[:10])
        described = ", ".join(f"({lo:g}, {hi:g}] → {v}" for lo, hi, v in bins)
        raise ValueError(f"{file}: intensities {stray} fall in no label bin ({described}); the mask does not look like "
                         f"the expected encoding.")
    return out


def voxel_counts(label: np.ndarray, num_labels: int) -> tuple[int, ...]:
    """Voxels per label value ``0..num_labels-1``."""
    return tuple(int(c) for c in np.bincount(np.asarray(label, dtype=np.int64).ravel(), minlength=num_labels)[:num_labels])
