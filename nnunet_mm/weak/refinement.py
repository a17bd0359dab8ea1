"""Periodic refinement of pseudo labels by a teacher, and the dataset wrapper that serves the refined labels.

Rule (methods.md §4.6, our design for the paper's unpublished teacher–student stage): voxels where the teacher is
confident (max probability ≥ τ) take the teacher's label; voxels where it is uncertain (< ``uncertain_threshold``)
and disagrees with the pseudo label become the ignore label; the rest keep the pseudo label. Refinement always starts
from the original pseudo label, so errors do not accumulate from round to round.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def refine_pseudo_labels(pseudo_label: np.ndarray, teacher_probabilities: np.ndarray, *,
                         confident_threshold: float = 0.9, uncertain_threshold: float = 0.6,
                         ignore_label: int | None = None) -> np.ndarray:
    """Refined labels (see the module docstring).

    Args:
        pseudo_label: (1, *spatial) integer labels; negative values (nnU-Net's outside-the-mask marker) are kept.
        teacher_probabilities: (K, *spatial) softmax probabilities of the teacher.
        confident_threshold: τ.
        uncertain_threshold: below it a disagreeing voxel becomes ``ignore_label``.
        ignore_label: the dataset's ignore label; None keeps uncertain voxels as they are.

    Returns:
        (1, *spatial) array of ``pseudo_label``'s dtype.

    Raises:
        ValueError: shapes that do not match, or thresholds out of order.
    """
    if pseudo_label.shape[1:] != teacher_probabilities.shape[1:] or pseudo_label.shape[0] != 1:
        raise ValueError(f"pseudo label {pseudo_label.shape} and teacher probabilities {teacher_probabilities.shape}: "
                         f"expected (1, *S) and (K, *S).")
    if not 0.0 <= uncertain_threshold <= confident_threshold <= 1.0:
        raise ValueError(f"need 0 <= uncertain_threshold ({uncertain_threshold}) <= confident_threshold "
                         f"({confident_threshold}) <= 1.")
    confidence = teacher_probabilities.max(0)
    teacher_label = teacher_probabilities.argmax(0)
    current = pseudo_label[0]
    inside = current >= 0
    refined = np.where(inside & (confidence >= confident_threshold), teacher_label, current)
    if ignore_label is not None:
        uncertain = inside & (confidence < uncertain_threshold) & (teacher_label != current)
        refined = np.where(uncertain, ignore_label, refined)
    return refined[None].astype(pseudo_label.dtype)


def save_refined_label(folder: Path, identifier: str, label: np.ndarray) -> Path:
    """Write ``folder/<identifier>.npy`` atomically (readers in data-loader workers never see half a file)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{identifier}.npy"
    partial = folder / f".{identifier}.{os.getpid()}.tmp.npy"
    np.save(partial, label)
    os.replace(partial, target)
    return target


class RefinedLabelDataset:
    """Wraps an nnU-Net dataset: ``load_case`` serves the refined label of a case when one has been written, and an
    all-background label for normal cases (outside-mask markers kept). Everything else is the wrapped dataset's.

    Args:
        dataset: an ``nnUNetBaseDataset`` (Blosc2 or NumPy).
        refined_folder: where :func:`save_refined_label` writes.
        normal_cases: identifiers of normal images.
    """

    def __init__(self, dataset, refined_folder: Path, normal_cases: frozenset[str]):
        self.dataset = dataset
        self.refined_folder = Path(refined_folder)
        self.normal_cases = frozenset(normal_cases)

    def __getattr__(self, name: str):
        if name == "dataset":  # not yet set while unpickling
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, identifier: str):
        return self.load_case(identifier)

    def __len__(self) -> int:
        return len(self.dataset.identifiers)

    def load_case(self, identifier: str):
        data, seg, seg_prev, properties = self.dataset.load_case(identifier)
        refined_file = self.refined_folder / f"{identifier}.npy"
        if identifier in self.normal_cases:
            seg = np.minimum(np.asarray(seg), 0)  # background, keeping nnU-Net's negative outside-mask marker
        elif refined_file.is_file():
            refined = np.load(refined_file, mmap_mode="r")
            if refined.shape == tuple(seg.shape):
                seg = refined
        return data, seg, seg_prev, properties
