"""Fixtures shared by test folders that run nnU-Net's planning in-process."""
from __future__ import annotations

import pytest
from planned_phantom import planned_phantom, trainer_kit  # noqa: F401  (trainers built the nnU-Net way)


def _quick_fingerprint(dataset_id: int) -> None:
    """nnU-Net's fingerprint extraction with 10^5 intensity samples instead of 10^8 (those take ~30 s even on tiny
    data); everything else is nnU-Net's own code."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset

    class QuickFingerprintExtractor(DatasetFingerprintExtractor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.num_foreground_voxels_for_intensitystats = 1e5

    extract_fingerprint_dataset(dataset_id, QuickFingerprintExtractor, num_processes=1)


@pytest.fixture(scope="session")
def quick_fingerprint():
    """A function ``quick_fingerprint(dataset_id)`` (see :func:`_quick_fingerprint`)."""
    return _quick_fingerprint
