"""Which channels a case provides, and the refusals, before any model is loaded."""
from pathlib import Path

import pytest

from nnunet_mm.inference.missing_channels import plan_available_channels
from nnunet_mm.io.raw_dataset import available_channel_files


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"")


def test_files_are_grouped_by_case_and_channel(tmp_path):
    _touch(tmp_path, "a_0000.nii.gz", "a_0002.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz", "notes.txt")
    cases = available_channel_files(tmp_path, ".nii.gz", 4)
    assert {case: sorted(files) for case, files in cases.items()} == {"a": [0, 2], "b": [0, 1]}


def test_channel_index_beyond_model_is_refused(tmp_path):
    _touch(tmp_path, "a_0000.nii.gz", "a_0004.nii.gz")
    with pytest.raises(ValueError, match=r"a_0004.nii.gz: channel 4, but the model has 4 channel\(s\)"):
        available_channel_files(tmp_path, ".nii.gz", 4, source="the model")


def test_empty_folder_is_refused(tmp_path):
    cases = available_channel_files(tmp_path, ".nii.gz", 2)
    with pytest.raises(FileNotFoundError, match="no files named CASE_XXXX.nii.gz"):
        plan_available_channels(cases, num_channels=2, reference_channel=0, available=None,
                                input_folder=tmp_path, file_ending=".nii.gz")


def test_detected_channels_per_case(tmp_path):
    _touch(tmp_path, "a_0000.nii.gz", "a_0002.nii.gz", "b_0000.nii.gz", "b_0001.nii.gz", "b_0002.nii.gz")
    cases = available_channel_files(tmp_path, ".nii.gz", 3)
    plan = plan_available_channels(cases, num_channels=3, reference_channel=0, available=None,
                                   input_folder=tmp_path, file_ending=".nii.gz")
    assert plan == {"a": [0, 2], "b": [0, 1, 2]}


def test_declared_channels_ignore_extra_files(tmp_path):
    _touch(tmp_path, "a_0000.nii.gz", "a_0001.nii.gz", "a_0002.nii.gz")
    cases = available_channel_files(tmp_path, ".nii.gz", 3)
    plan = plan_available_channels(cases, num_channels=3, reference_channel=0, available=[0, 2],
                                   input_folder=tmp_path, file_ending=".nii.gz")
    assert plan == {"a": [0, 2]}


def test_missing_reference_file_is_refused_naming_the_file(tmp_path):
    _touch(tmp_path, "a_0000.nii.gz", "b_0001.nii.gz")
    cases = available_channel_files(tmp_path, ".nii.gz", 2)
    with pytest.raises(ValueError, match=r"b_0000.nii.gz: reference channel 0 is missing"):
        plan_available_channels(cases, num_channels=2, reference_channel=0, available=None,
                                input_folder=tmp_path, file_ending=".nii.gz")


def test_available_without_reference_is_refused(tmp_path):
    _touch(tmp_path, "a_0000.nii.gz", "a_0001.nii.gz")
    cases = available_channel_files(tmp_path, ".nii.gz", 2)
    with pytest.raises(ValueError, match="does not include the reference channel 0"):
        plan_available_channels(cases, num_channels=2, reference_channel=0, available=[1],
                                input_folder=tmp_path, file_ending=".nii.gz")


def test_declared_but_absent_channel_file_is_named(tmp_path):
    _touch(tmp_path, "a_0000.nii.gz")
    cases = available_channel_files(tmp_path, ".nii.gz", 3)
    with pytest.raises(ValueError, match=r"a_0002.nii.gz: file not found \(channel 2 was declared available\)"):
        plan_available_channels(cases, num_channels=3, reference_channel=0, available=[0, 2],
                                input_folder=tmp_path, file_ending=".nii.gz")


def test_cut_files_and_nan_voxels_are_refused_before_predicting_each_named(tmp_path):
    """nnU-Net's reader predicts from a cut file (zero-filled) or a NaN voxel and exits 0; the inputs are checked
    first, and every bad file is named."""
    import numpy as np
    import SimpleITK as sitk

    from nnunet_mm.inference.missing_channels import verify_input_files

    volume = np.full((8, 16, 16), 40.0, dtype=np.float32)
    for name in ("good_0000.nii.gz", "good_0001.nii.gz", "cut_0000.nii.gz", "nan_0000.nii.gz"):
        sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp_path / name))
    cut = tmp_path / "cut_0000.nii.gz"
    cut.write_bytes(cut.read_bytes()[:-40])
    volume[4, 8, 8] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp_path / "nan_0000.nii.gz"))
    cases = available_channel_files(tmp_path, ".nii.gz", 2)
    plan = plan_available_channels(cases, num_channels=2, reference_channel=0, available=None,
                                   input_folder=tmp_path, file_ending=".nii.gz")
    verify_input_files({"good": cases["good"]}, {"good": plan["good"]})
    with pytest.raises(ValueError) as refused:
        verify_input_files(cases, plan)
    message = str(refused.value)
    assert f"{cut}: incomplete or corrupt file" in message
    assert f"{tmp_path / 'nan_0000.nii.gz'}: contains 1 NaN/inf voxels" in message
    assert "good_" not in message


def test_four_dimensional_inputs_are_refused_and_nan_counted_when_allowed(tmp_path):
    import numpy as np
    import SimpleITK as sitk

    from nnunet_mm.inference.missing_channels import _write_finite_copies, verify_input_files

    volume = np.full((6, 8, 8), 40.0, dtype=np.float32)
    volume[1, 2, 3] = -5.0
    volume[2, 3, 4] = np.nan
    volume[3, 4, 5] = np.inf
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp_path / "nan_0000.nii.gz"))
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(volume)] * 2), str(tmp_path / "fourd_0000.nii.gz"))
    cases = available_channel_files(tmp_path, ".nii.gz", 1)
    plan = {case: [0] for case in cases}
    with pytest.raises(ValueError) as refused:
        verify_input_files(cases, plan, allow_non_finite=True)
    assert f"{tmp_path / 'fourd_0000.nii.gz'}: a 4-D image" in str(refused.value)
    assert "nan_0000" not in str(refused.value)

    del cases["fourd"], plan["fourd"]
    non_finite = verify_input_files(cases, plan, allow_non_finite=True)
    assert non_finite == {"nan": {0: 2}}
    record = _write_finite_copies(cases, non_finite, tmp_path / "copies")
    assert record == {"nan": {"0": {"file": str(tmp_path / "nan_0000.nii.gz"), "voxels": 2, "value": -5.0}}}
    copy = sitk.GetArrayFromImage(sitk.ReadImage(str(cases["nan"][0])))
    assert cases["nan"][0].parent == tmp_path / "copies" and np.isfinite(copy).all()
    assert copy[2, 3, 4] == copy[3, 4, 5] == -5.0 and copy[0, 0, 0] == 40.0


def test_input_mistakes_are_found_before_the_model_is_loaded(tmp_path):
    """A model folder without any checkpoint: the input's problems must be reported first (nothing is loaded)."""
    import json

    import numpy as np
    import SimpleITK as sitk

    from nnunet_mm.inference.missing_channels import predict_with_missing_channels

    model = tmp_path / "Trainer__nnUNetPlans__3d_fullres"
    model.mkdir()
    (model / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT", "1": "CT"}, "labels": {"background": 0, "liver": 1}, "numTraining": 1,
        "file_ending": ".nii.gz", "nnunet_mm": {"reference_channel": 0, "phase_names": ["pv", "art"]}}), encoding="utf-8")
    images = tmp_path / "images"
    images.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 8, 8), np.float32)), str(images / "case_0001.nii.gz"))
    with pytest.raises(ValueError, match=r"case_0000.nii.gz: reference channel 0 is missing"):
        predict_with_missing_channels(images, tmp_path / "out", model, device="cpu")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 8, 8), np.float32)), str(images / "case_0000.nii.gz"))
    with pytest.raises(FileNotFoundError, match=r"fold_0/checkpoint_final.pth: no such checkpoint"):
        predict_with_missing_channels(images, tmp_path / "out", model, device="cpu")
    with pytest.raises(FileNotFoundError, match=r"dataset.json: no such file; .* is not a trained nnU-Net model"):
        predict_with_missing_channels(images, tmp_path / "out", tmp_path, device="cpu")
    assert not (tmp_path / "out").exists()


def test_channels_of_one_case_on_different_grids_are_refused_naming_the_files(tmp_path):
    import numpy as np
    import SimpleITK as sitk

    from nnunet_mm.inference.missing_channels import verify_input_files

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 8, 8), np.float32)), str(tmp_path / "case_0000.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8, 8), np.float32)), str(tmp_path / "case_0001.nii.gz"))
    cases = available_channel_files(tmp_path, ".nii.gz", 2)
    with pytest.raises(ValueError, match=r"case 'case': its channel files differ in size \(case_0000.nii.gz 8x8x4, "
                                         r"case_0001.nii.gz 8x8x8\)"):
        verify_input_files(cases, {"case": [0, 1]})
