"""Batches drawn per modality, so that CMC's unpaired pairs mix modalities in every batch.

nnU-Net's :class:`~nnunetv2.training.dataloading.data_loader.nnUNetDataLoader` draws the cases of a batch at random
from all training cases: a CT/MR dataset gives a batch of one modality now and then (with batch 2 and equal counts,
every other batch), and CMC's cross-modality pairs then pair CT with CT. :class:`ModalityBalancedDataLoader` draws
the same number of cases from every modality group instead (with replacement, as nnU-Net does); everything else --
cropping, foreground oversampling, transforms -- is nnU-Net's. The drawn cases are shuffled before they are returned,
so foreground oversampling (nnU-Net forces it on the last third of a batch's positions) falls on every modality.

:func:`modality_balanced_loaders` makes nnU-Net's own ``get_dataloaders`` build this loader: the trainer keeps
nnU-Net's pipeline (transforms, augmenters, workers) and changes only which cases a batch holds.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader


def modality_groups(identifiers: Sequence[str], case_modality: Mapping[str, str]) -> list[list[str]]:
    """The identifiers grouped by modality (cases without one form their own group), in a stable order."""
    groups: dict[str, list[str]] = {}
    for identifier in identifiers:
        groups.setdefault(case_modality.get(str(identifier), ""), []).append(identifier)
    return [groups[name] for name in sorted(groups)]


def balanced_counts(batch_size: int, num_groups: int) -> list[int]:
    """Cases per group for one batch: as even as possible, the first groups take the remainder."""
    base, extra = divmod(batch_size, num_groups)
    return [base + (1 if g < extra else 0) for g in range(num_groups)]


class ModalityBalancedDataLoader(nnUNetDataLoader):
    """nnU-Net's training loader drawing every batch evenly from the modality groups of ``case_modality``.

    With fewer than two groups among the loader's cases it draws exactly as nnU-Net does.
    """

    def __init__(self, *args, case_modality: Mapping[str, str], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.groups = modality_groups(list(self.indices), case_modality)

    def get_indices(self) -> np.ndarray:
        if len(self.groups) < 2 or not self.infinite:
            return super().get_indices()
        counts = balanced_counts(self.batch_size, len(self.groups))
        # groups that get no case this batch (batch smaller than the number of groups) rotate at random
        order = np.random.permutation(len(self.groups))
        keys = [key for g, n in zip(order, counts) if n for key in np.random.choice(self.groups[g], n, replace=True)]
        return np.array(keys)[np.random.permutation(len(keys))]


@contextlib.contextmanager
def modality_balanced_loaders(case_modality: Mapping[str, str]) -> Iterator[None]:
    """Inside the block, nnU-Net's ``nnUNetTrainer.get_dataloaders`` builds :class:`ModalityBalancedDataLoader`
    instead of its own loader (the name it looks up in its module is swapped, and restored on exit)."""
    from nnunetv2.training.nnUNetTrainer import nnUNetTrainer as trainer_module

    original = trainer_module.nnUNetDataLoader

    def balanced(*args, **kwargs) -> ModalityBalancedDataLoader:
        return ModalityBalancedDataLoader(*args, case_modality=case_modality, **kwargs)

    trainer_module.nnUNetDataLoader = balanced
    try:
        yield
    finally:
        trainer_module.nnUNetDataLoader = original
