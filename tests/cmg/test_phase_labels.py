"""Per-phase labels (MPTH's arterial masks) as extra seg channels of a '<c>_phases' configuration, used by
CMGTrainer as the arterial phase's target."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from nnunet_mm.dataset_conversion.Dataset501_MPTH import convert
from nnunet_mm.phantom import write_mpth


@pytest.fixture
def mpth_preprocessed(tmp_path, monkeypatch, quick_fingerprint):
    from nnunetv2.experiment_planning.plan_and_preprocess_api import plan_experiments, preprocess

    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")  # planning needs >= 1
    source = write_mpth(tmp_path / "mpth", num_cases=2, seed=5, shape_zyx=(12, 48, 48))
    convert(source, output_root=tmp_path / "raw", spacing_zyx_mm=(3.0, 1.5, 1.5))
    quick_fingerprint(501)
    plan_experiments([501])
    preprocess([501], configurations=("3d_fullres",), num_processes=(1,))
    return tmp_path


def test_phase_labels_become_aligned_extra_seg_channels_and_cmg_trains_on_them(mpth_preprocessed):
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    from nnunet_mm.cmg.phase_labels import add_phase_label_configuration
    from nnunet_mm.cmg.trainer import CMGTrainer

    assert add_phase_label_configuration(501, "3d_fullres") == "3d_fullres_phases"
    assert add_phase_label_configuration(501, "3d_fullres") == "3d_fullres_phases"  # a rerun replaces the data
    base = mpth_preprocessed / "pre" / "Dataset501_MPTH"
    plain = nnUNetDatasetBlosc2(str(base / "nnUNetPlans_3d_fullres"))
    phases = nnUNetDatasetBlosc2(str(base / "nnUNetPlans_3d_fullres_phases"))
    differs = 0
    for identifier in plain.identifiers:
        data, seg, _, _ = plain.load_case(identifier)
        data_p, seg_p, _, _ = phases.load_case(identifier)
        assert seg_p.shape == (2, *seg.shape[1:])
        np.testing.assert_array_equal(np.asarray(seg_p[0]), np.asarray(seg[0]))  # channel 0 = nnU-Net's label
        np.testing.assert_allclose(np.asarray(data_p), np.asarray(data))
        differs += int((np.asarray(seg_p[1]) != np.asarray(seg[0])).sum())
    assert differs > 0  # the arterial masks are misregistered, so they differ from the portal-venous ones

    plans = load_json(str(base / "nnUNetPlans.json"))
    os.environ["nnUNet_n_proc_DA"] = "0"  # a single-threaded loader in the test process (monkeypatch restores it)
    plans["continue_training"] = False
    trainer = CMGTrainer(plans, "3d_fullres_phases", "all", load_json(str(base / "dataset.json")),
                         device=torch.device("cpu"))
    trainer.initialize()
    assert any("every phase is supervised with its own label" in line for line in _log_lines(trainer))
    loader, _ = trainer.get_dataloaders()
    batch = next(loader)
    assert batch["target"][0].shape[1] == 2
    seg = batch["target"][0].to(torch.float32)
    labels = trainer._phase_labels(seg, type("Draw", (), {"misalignment": None, "dropout": None})())
    assert torch.equal(labels[:, 1], seg[:, 1])  # the arterial channel is supervised with its own mask
    loss = trainer.train_step(batch)["loss"]
    assert np.isfinite(loss)
    validation = trainer.validation_step(batch)  # the extra channel never reaches nnU-Net's loss
    assert np.isfinite(validation["loss"])


def _log_lines(trainer) -> list[str]:
    from pathlib import Path

    return Path(trainer.log_file).read_text(encoding="utf-8").splitlines()


def test_phase_labels_shows_a_progress_bar_over_the_cases(tmp_path, monkeypatch):
    """The bar is nnU-Net-style tqdm (hidden when stderr is no terminal), named after the command, one tick per
    case; the preprocessing itself is replaced here (the test above runs it for real)."""
    import json

    import nnunet_mm.cmg.phase_labels as phase_labels
    import nnunet_mm.conversion.runner as runner

    raw = tmp_path / "raw" / "Dataset931_Bar"
    for folder in ("imagesTr", "labelsTr", "labelsTr_phases"):
        (raw / folder).mkdir(parents=True)
    for case in ("a", "b", "c"):
        for channel in (0, 1):
            (raw / "imagesTr" / f"{case}_{channel:04d}.nii.gz").touch()
        (raw / "labelsTr" / f"{case}.nii.gz").touch()
    (raw / "labelsTr_phases" / "a_0001.nii.gz").touch()
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT", "1": "CT"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 3,
        "file_ending": ".nii.gz", "nnunet_mm": {"phase_labels_dir": "labelsTr_phases"}}), encoding="utf-8")
    preprocessed = tmp_path / "pre" / "Dataset931_Bar"
    preprocessed.mkdir(parents=True)
    (preprocessed / "nnUNetPlans.json").write_text(json.dumps({"configurations": {"3d_fullres": {}}}), encoding="utf-8")
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setattr(phase_labels, "_preprocess_case", lambda case, **kwargs: sum(f is not None for f in case[3]))
    bars = []

    class RecordingBar:
        def __init__(self, *args, **kwargs):
            self.kwargs, self.ticks = kwargs, 0
            bars.append(self)

        def update(self, n: int = 1) -> None:
            self.ticks += n

        def close(self) -> None:
            pass

    monkeypatch.setattr(runner, "tqdm", RecordingBar)
    assert phase_labels.add_phase_label_configuration(931, "3d_fullres") == "3d_fullres_phases"
    assert len(bars) == 1 and bars[0].ticks == 3
    assert bars[0].kwargs["desc"] == "phase-labels Dataset931_Bar 3d_fullres_phases"
    assert bars[0].kwargs["total"] == 3 and bars[0].kwargs["disable"] is None
