"""One tiny planned and preprocessed phantom per test session, and trainers built on it the way nnU-Net builds them.

``planned_phantom`` (session): five two-phase liver phantoms (``pv``, ``art``; labels background, liver, tumour)
planned by nnU-Net and preprocessed for ``2d`` and ``3d_fullres``. ``trainer_kit`` (per test) copies it into the
test's ``tmp_path`` (so a test may write splits, unlabeled cases or statistics beside it), points ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results`` there, and constructs trainers through their real constructor from
the plans and the preprocessed dataset.json, with ``device=torch.device("cpu")`` and single-threaded data loading.
"""
from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from session_cache import build_once_per_session

PHANTOM_ID = 931
PHANTOM_NAME = "TrainerPhantom"
DATASET_NAME = f"Dataset{PHANTOM_ID:03d}_{PHANTOM_NAME}"
NUM_CASES = 5


@dataclass(frozen=True)
class PlannedPhantom:
    """Where the session's phantom lives (``nnUNet_raw`` and ``nnUNet_preprocessed`` roots)."""

    raw_root: Path
    preprocessed_root: Path


@pytest.fixture(scope="session")
def planned_phantom(tmp_path_factory, quick_fingerprint) -> PlannedPhantom:
    """Plan and preprocess the phantom once per session, for every xdist worker (nnU-Net's planner and preprocessor,
    in-process); tests copy it before writing (:class:`TrainerKit`)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments, preprocess

    from nnunet_mm.phantom import write_nnunet_raw

    def build(root: Path) -> None:
        with pytest.MonkeyPatch.context() as patch:
            for name, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res")):
                patch.setenv(name, str(root / sub))
            patch.setenv("nnUNet_n_proc_DA", "1")  # planning needs >= 1
            write_nnunet_raw(root / "raw", dataset_id=PHANTOM_ID, name=PHANTOM_NAME, num_training=NUM_CASES,
                             seed=3, shape_zyx=(10, 32, 32), phases=("pv", "art"))
            quick_fingerprint(PHANTOM_ID)
            plan_experiments([PHANTOM_ID])
            preprocess([PHANTOM_ID], configurations=("2d", "3d_fullres"), num_processes=(1, 1))

    root = build_once_per_session(tmp_path_factory, "planned_phantom", build)
    return PlannedPhantom(root / "raw", root / "pre")


class TrainerKit:
    """Trainers on a per-test copy of the planned phantom (see the module docstring)."""

    def __init__(self, phantom: PlannedPhantom, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        self.raw = tmp_path / "raw" / DATASET_NAME
        self.preprocessed = tmp_path / "pre" / DATASET_NAME
        self.results = tmp_path / "res"
        shutil.copytree(phantom.raw_root / DATASET_NAME, self.raw)
        shutil.copytree(phantom.preprocessed_root / DATASET_NAME, self.preprocessed)
        monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
        monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
        monkeypatch.setenv("nnUNet_results", str(self.results))
        monkeypatch.setenv("nnUNet_n_proc_DA", "0")  # nnU-Net's single-threaded augmenter in the test process

    @property
    def case_ids(self) -> list[str]:
        """The training cases' ids, sorted."""
        return sorted(p.name[:-len(".nii.gz")] for p in (self.raw / "labelsTr").glob("*.nii.gz"))

    def plans(self) -> dict:
        """nnU-Net's plans, as ``nnUNetv2_train`` hands them to a trainer (``continue_training`` set)."""
        plans = json.loads((self.preprocessed / "nnUNetPlans.json").read_text(encoding="utf-8"))
        plans["continue_training"] = False
        return plans

    def dataset_json(self, block: Mapping[str, Any] | None = None, **top_level: Any) -> dict:
        """nnU-Net's preprocessed copy of dataset.json, with keys of the ``"nnunet_mm"`` block and top-level keys
        (e.g. ``channel_names``) replaced."""
        dataset_json = json.loads((self.preprocessed / "dataset.json").read_text(encoding="utf-8"))
        dataset_json.update(copy.deepcopy(top_level))
        dataset_json["nnunet_mm"] = {**dataset_json.get("nnunet_mm", {}), **copy.deepcopy(dict(block or {}))}
        return dataset_json

    def trainer(self, trainer_class: type, *, block: Mapping[str, Any] | None = None,
                configuration: str = "2d", fold: int | str = "all", initialize: bool = True,
                dataset_json: dict | None = None):
        """``trainer_class(plans, configuration, fold, dataset_json, device=cpu)``, then ``initialize()``."""
        trainer = trainer_class(self.plans(), configuration, fold,
                                self.dataset_json(block) if dataset_json is None else dataset_json,
                                device=torch.device("cpu"))
        if initialize:
            trainer.initialize()
        return trainer


@pytest.fixture
def trainer_kit(planned_phantom, tmp_path, monkeypatch) -> TrainerKit:
    """A :class:`TrainerKit` on this test's copy of the session's phantom."""
    return TrainerKit(planned_phantom, tmp_path, monkeypatch)
