"""Distillation: fused labels with uncertain voxels as nnU-Net's ignore label, in a plain raw dataset."""
import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mm.atlas.distill import build_distilled_dataset, distilled_label


def test_uncertain_voxels_get_the_ignore_label():
    foreground = np.array([[0.1, 0.7, 0.3, 0.0], [0.0, 0.1, 0.3, 0.9]], dtype=np.float32).reshape(2, 1, 1, 4)
    label = distilled_label(foreground, 0.6, ignore_value=3)
    # background 0.9 → 0; liver 0.7 → 1; max 0.4 < 0.6 → ignore; tumour 0.9 → 2
    np.testing.assert_array_equal(label.ravel(), [0, 1, 3, 2])


def test_distilled_dataset_has_image_channels_and_ignore_labels(tmp_path):
    source = tmp_path / "Dataset731_MAS"
    (source / "imagesTr").mkdir(parents=True)
    (source / "labelsTr").mkdir()
    image = np.random.default_rng(0).normal(size=(4, 8, 8)).astype(np.float32)
    liver = np.zeros((4, 8, 8), np.float32)
    liver[:, 2:6, 2:6] = 0.9
    liver[:, 2, 2:6] = 0.5  # uncertain rim
    for array, channel in ((image, 0), (liver, 1), (np.zeros_like(liver), 2)):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(source / "imagesTr" / f"c0_{channel:04d}.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray((liver > 0).astype(np.uint8)), str(source / "labelsTr" / "c0.nii.gz"))
    (source / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MR", "1": "noNorm", "2": "noNorm"}, "labels": {"background": 0, "liver": 1,
                                                                              "tumor": 2},
        "numTraining": 1, "file_ending": ".nii.gz",
        "nnunet_mm": {"modalities": {"0": "MR", "1": "atlas_prior:liver", "2": "atlas_prior:tumor"}}}), encoding="utf-8")
    out = build_distilled_dataset(source, output_id=732, output_root=tmp_path)
    dataset_json = json.loads((out / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["channel_names"] == {"0": "MR"} and dataset_json["labels"]["ignore"] == 3
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["c0_0000.nii.gz"]
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / "c0.nii.gz")))
    assert (label[:, 3:6, 2:6] == 1).all() and (label[:, 2, 2:6] == 3).all() and label[0, 0, 0] == 0
    summary = json.loads((out / "nnunet_mm_qa" / "distill_summary.json").read_text(encoding="utf-8"))
    assert summary["cases"]["c0"]["confident_voxel_accuracy"] == 1.0
    # folds that work with one training case (nnU-Net's default 5-fold split would fail)
    assert json.loads((out / "splits_final.json").read_text(encoding="utf-8")) == [{"train": ["c0"], "val": ["c0"]}]
    with pytest.raises(FileExistsError):
        build_distilled_dataset(source, output_id=732, output_root=tmp_path)
    with pytest.raises(ValueError, match="no atlas prior channels"):
        build_distilled_dataset(out, output_id=733, output_root=tmp_path)
