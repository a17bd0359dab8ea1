"""The 2D diseased/normal dataset: ISIC-like 2D images and slices of 3D phantoms."""
import json

import numpy as np
import pytest

from nnunet_mm.weak.synthetic import write_skin_lesion_dataset
from nnunet_mm.weak.weak_images import load_weak_images


def test_2d_rgb_dataset_gives_one_image_per_case_with_its_label(tmp_path):
    folder = write_skin_lesion_dataset(tmp_path, dataset_id=901, num_diseased=3, num_normal=2, size=24)
    images = load_weak_images(folder, size=16)
    assert [i.image_label for i in images] == ["diseased"] * 3 + ["normal"] * 2
    assert all(i.image.shape == (3, 16, 16) and i.original_shape == (24, 24) for i in images)
    assert all(-1.0 <= i.image.min() and i.image.max() <= 1.0 for i in images)
    # the lesion is dark: diseased images are darker on average than normal ones
    assert np.mean([i.image.mean() for i in images[:3]]) < np.mean([i.image.mean() for i in images[3:]])


def test_3d_volumes_give_slices_labelled_by_their_tumour(tmp_path):
    from nnunet_mm.phantom import write_nnunet_raw

    folder = write_nnunet_raw(tmp_path, dataset_id=902, name="P", num_training=1, seed=1, shape_zyx=(12, 32, 32),
                              phases=("pv",))
    images = load_weak_images(folder, size=16, lesion_labels=(2,))
    import SimpleITK as sitk
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(next((folder / "labelsTr").iterdir()))))
    tumour_slices = {z for z in range(label.shape[0]) if (label[z] == 2).any()}
    assert {i.slice_index for i in images if i.image_label == "diseased"} == tumour_slices & \
        {i.slice_index for i in images}
    assert any(i.image_label == "normal" for i in images)
    assert all(i.foreground.any() for i in images)


def test_unknown_case_in_image_labels_is_reported(tmp_path):
    folder = write_skin_lesion_dataset(tmp_path, dataset_id=903, num_diseased=1, num_normal=1, size=16)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    dataset_json["nnunet_mm"]["image_labels"]["ghost"] = "normal"
    (folder / "dataset.json").write_text(json.dumps(dataset_json))
    with pytest.raises(ValueError, match=r"dataset.json: image labels name case\(s\) without images.*ghost"):
        load_weak_images(folder, size=16)


def test_size_must_suit_the_generator(tmp_path):
    with pytest.raises(ValueError, match="multiple of 4"):
        load_weak_images(tmp_path, size=30)


def test_the_synthetic_skin_dataset_declares_colour_planes_so_no_channel_is_shifted(tmp_path):
    from nnunet_mm.settings import read_settings

    folder = write_skin_lesion_dataset(tmp_path, dataset_id=904, num_diseased=1, num_normal=1, size=16)
    settings = read_settings(json.loads((folder / "dataset.json").read_text())).multimodal
    decision = settings.augmentation_decision()
    assert settings.channel_acquisition == "colour_planes"
    assert not decision.misalignment and not decision.modality_dropout
