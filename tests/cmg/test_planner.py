"""CMGPlanner sizes patch and batch for a CMGUNet (several streams) within nnU-Net's memory heuristic."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


def _fake_dataset(root: Path, num_channels: int, shape: list[int]) -> None:
    """A raw dataset with tiny images (nnU-Net opens one to pick its reader) and the fingerprint of large CT
    volumes, which is what planning uses."""
    import numpy as np
    import SimpleITK as sitk

    tiny = sitk.GetImageFromArray(np.zeros((2, 2, 2), dtype=np.int16))
    raw = root / "raw" / "Dataset777_Plan"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for case in range(4):
        for channel in range(num_channels):
            sitk.WriteImage(tiny, str(raw / "imagesTr" / f"c{case}_{channel:04d}.nii.gz"))
        sitk.WriteImage(tiny, str(raw / "labelsTr" / f"c{case}.nii.gz"))
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {str(c): "CT" for c in range(num_channels)}, "labels": {"background": 0, "liver": 1,
                                                                                 "tumor": 2},
        "numTraining": 4, "file_ending": ".nii.gz"}), encoding="utf-8")
    pre = root / "pre" / "Dataset777_Plan"
    pre.mkdir(parents=True)
    intensity = {"max": 300.0, "mean": 80.0, "median": 80.0, "min": -100.0, "percentile_00_5": -50.0,
                 "percentile_99_5": 250.0, "std": 40.0}
    (pre / "dataset_fingerprint.json").write_text(json.dumps({
        "foreground_intensity_properties_per_channel": {str(c): intensity for c in range(num_channels)},
        "median_relative_size_after_cropping": 1.0, "shapes_after_crop": [shape] * 4,
        "spacings": [[1.0, 0.8, 0.8]] * 4}), encoding="utf-8")


@pytest.mark.parametrize("num_channels", [2, 4])
def test_cmg_plans_fit_the_same_memory_with_smaller_patches(tmp_path, monkeypatch, num_channels):
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    from nnunet_mm.cmg.planner import CMGPlanner

    _fake_dataset(tmp_path, num_channels, [200, 320, 320])
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))  # nnU-Net 2.8 reads its path variables lazily
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")

    default = ExperimentPlanner(777).plan_experiment()["configurations"]["3d_fullres"]
    cmg = CMGPlanner(777).plan_experiment()["configurations"]["3d_fullres"]
    assert cmg["architecture"]["network_class_name"] == "nnunet_mm.cmg.network.CMGUNet"
    assert cmg["data_identifier"] == default["data_identifier"] == "nnUNetPlans_3d_fullres"  # no re-preprocessing
    voxels = lambda c: c["batch_size"] * c["patch_size"][0] * c["patch_size"][1] * c["patch_size"][2]  # noqa: E731
    assert voxels(cmg) < voxels(default)  # more streams → less patch × batch for the same memory
    assert (tmp_path / "pre" / "Dataset777_Plan" / "nnUNetPlansCMG.json").is_file()
