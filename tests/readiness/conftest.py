"""The readiness tests' dataset: the session's planned phantom plus what every method needs (unlabeled cases,
tumour statistics), built once per session and shared read-only; each test writes results into its own folder."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from planned_phantom import DATASET_NAME
from session_cache import build_once_per_session
from trainer_zoo import prepare_method_data


@dataclass(frozen=True)
class Zoo:
    """Where the readiness dataset lives: ``raw`` and ``preprocessed`` dataset folders, their roots, and this
    test's ``results`` root."""

    raw_root: Path
    preprocessed_root: Path
    results: Path

    @property
    def preprocessed(self) -> Path:
        return self.preprocessed_root / DATASET_NAME

    def environment(self) -> dict[str, str]:
        return {"nnUNet_raw": str(self.raw_root), "nnUNet_preprocessed": str(self.preprocessed_root),
                "nnUNet_results": str(self.results), "nnUNet_n_proc_DA": "0"}


@pytest.fixture
def zoo(planned_phantom, tmp_path_factory, tmp_path, monkeypatch) -> Zoo:
    def build(root: Path) -> None:
        shutil.copytree(planned_phantom.raw_root / DATASET_NAME, root / "raw" / DATASET_NAME)
        shutil.copytree(planned_phantom.preprocessed_root / DATASET_NAME, root / "pre" / DATASET_NAME)
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("nnUNet_raw", str(root / "raw"))
            patch.setenv("nnUNet_preprocessed", str(root / "pre"))
            prepare_method_data(root / "raw" / DATASET_NAME, root / "pre" / DATASET_NAME)

    root = build_once_per_session(tmp_path_factory, "readiness_zoo", build)
    result = Zoo(root / "raw", root / "pre", tmp_path / "results")
    for name, value in result.environment().items():
        monkeypatch.setenv(name, value)
    return result
