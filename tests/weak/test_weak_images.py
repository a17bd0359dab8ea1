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
    dataset_json = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    dataset_json["nnunet_mm"]["image_labels"]["ghost"] = "normal"
    (folder / "dataset.json").write_text(json.dumps(dataset_json), encoding="utf-8")
    with pytest.raises(ValueError, match=r"dataset.json: image labels name case\(s\) without images.*ghost"):
        load_weak_images(folder, size=16)


def test_size_must_suit_the_generator(tmp_path):
    with pytest.raises(ValueError, match="multiple of 4"):
        load_weak_images(tmp_path, size=30)


def test_the_synthetic_skin_dataset_declares_colour_planes_so_no_channel_is_shifted(tmp_path):
    from nnunet_mm.settings import read_settings

    folder = write_skin_lesion_dataset(tmp_path, dataset_id=904, num_diseased=1, num_normal=1, size=16)
    settings = read_settings(json.loads((folder / "dataset.json").read_text(encoding="utf-8"))).multimodal
    decision = settings.augmentation_decision()
    assert settings.channel_acquisition == "colour_planes"
    assert not decision.misalignment and not decision.modality_dropout


# ----------------------------------------------------------------------------------------------------------------
# the foreground is the body on scans, the whole picture on photographs

def _ct_like_volume(seed: int, size: int = 96, depth: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(1, Z, Y, X) HU: a round body of 66 % of the slice (soft tissue, two lungs, a spine) in noisy air, on a thin
    table; and the (Y, X) body mask (lungs included, table excluded)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size].astype(float)
    radius = np.sqrt(0.66 * size * size / np.pi)
    body = (y - size / 2) ** 2 + (x - size / 2) ** 2 < radius ** 2
    lungs = (((y - 40) / 14) ** 2 + ((x - 30) / 9) ** 2 < 1) | (((y - 40) / 14) ** 2 + ((x - 66) / 9) ** 2 < 1)
    spine = (y - 70) ** 2 + (x - 48) ** 2 < 6 ** 2
    hu = np.where(body, 40.0, -1000.0)
    hu = np.where(lungs, -850.0, np.where(spine, 500.0, hu))
    hu[size - 2:] = 200.0  # the table, 2 pixels thick
    volume = hu[None] + rng.normal(0, 30, (depth, size, size))  # noisy air sits well above the lowest value
    return volume[None].astype(np.float32), body


def test_the_foreground_of_a_ct_slice_is_the_body_not_the_noisy_air():
    from nnunet_mm.evaluation.metrics import dice
    from nnunet_mm.weak.weak_images import foreground_of, foreground_threshold, normalise_case

    volume, body = _ct_like_volume(0)
    normalised = normalise_case(volume, eight_bit=False)
    foreground = foreground_of(normalised[:, 1], foreground_threshold(normalised, False), eight_bit=False)
    assert abs(foreground.mean() - body.mean()) < 0.02, foreground.mean()  # 0.66, not 0.99
    assert dice(body, foreground) > 0.98
    assert not foreground[-2:].any()  # the table is not body
    # noisy air alone (a corner of the slice) has no foreground
    air = normalised[:, 1, :20, :20]
    assert (air > -0.98).mean() > 0.9  # the earlier fixed cut called it foreground
    assert not foreground_of(air, foreground_threshold(normalised, False), eight_bit=False).any()


def test_pseudo_masks_of_a_ct_slice_stay_out_of_air_and_corners():
    from nnunet_mm.weak.pseudo_masks import pseudo_mask_of
    from nnunet_mm.weak.weak_images import WeakImage, foreground_of, foreground_threshold, normalise_case

    volume, body = _ct_like_volume(1)
    normalised = normalise_case(volume, eight_bit=False)
    foreground = foreground_of(normalised[:, 2], foreground_threshold(normalised, False), eight_bit=False)
    attention = np.full(body.shape, 0.1)
    attention[:12, :12] = attention[-12:, -12:] = 0.9  # attention on air in the corners, as the GAN's masks did
    y, x = np.mgrid[:96, :96]
    lesion = (y - 55) ** 2 + (x - 48) ** 2 < 8 ** 2
    attention[lesion] = 0.9
    image = WeakImage("ct", 2, normalised[:, 2], foreground, "diseased", body.shape)
    mask = pseudo_mask_of(image, attention, "otsu").astype(bool)
    assert np.array_equal(mask, lesion)


def test_the_foreground_of_a_skin_photograph_is_the_whole_image_lesion_included(tmp_path):
    folder = write_skin_lesion_dataset(tmp_path, dataset_id=905, num_diseased=2, num_normal=1, size=32)
    images = load_weak_images(folder, size=32)
    assert all(image.foreground.all() for image in images)
