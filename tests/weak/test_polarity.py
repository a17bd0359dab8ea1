"""Attention polarity: the side of the GAN's attention mask that is abnormal against the normal images is the lesion."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_mm.evaluation.metrics import dice
from nnunet_mm.weak.polarity import (decide_attention_polarity, fit_healthy_appearance, user_polarity)
from nnunet_mm.weak.pseudo_masks import binarize_attention_mask, export_pseudo_mask_dataset
from nnunet_mm.weak.synthetic import make_skin_image, write_skin_lesion_dataset
from nnunet_mm.weak.weak_images import WeakImage

SIZE = 48


def _skin_images(seed: int, diseased: int = 6, normal: int = 6) -> tuple[list[WeakImage], list[np.ndarray]]:
    """Skin-like RGB images scaled to [-1, 1] as the GAN sees them, and the lesion masks of the diseased ones."""
    rng = np.random.default_rng(seed)
    images, lesions = [], []
    for index in range(diseased + normal):
        with_lesion = index < diseased
        rgb, mask = make_skin_image(rng, SIZE, with_lesion)
        images.append(WeakImage(case_id=f"c{index:02d}", slice_index=None,
                                image=(rgb.transpose(2, 0, 1) / 127.5 - 1).astype(np.float32),
                                foreground=np.ones((SIZE, SIZE), bool),
                                image_label="diseased" if with_lesion else "normal", original_shape=(SIZE, SIZE)))
        if with_lesion:
            lesions.append(mask.astype(bool))
    return images, lesions


def _attention_on(lesion: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth, noisy attention map bright on ``lesion``."""
    return np.clip(0.1 + 0.8 * ndimage.gaussian_filter(lesion.astype(float), 1.5) + rng.normal(0, 0.05, lesion.shape),
                   0, 1)


@pytest.mark.parametrize("inverted_by_the_gan", [False, True])
def test_the_lesion_side_is_chosen_from_the_normal_images(inverted_by_the_gan):
    images, lesions = _skin_images(0)
    diseased = [image for image in images if image.image_label == "diseased"]
    rng = np.random.default_rng(1)
    attention = [_attention_on(lesion, rng) for lesion in lesions]
    if inverted_by_the_gan:
        attention = [1.0 - mask for mask in attention]  # bright on the skin, dark on the lesion (skin seed 1)
    regions = [binarize_attention_mask(mask, image.foreground) for image, mask in zip(diseased, attention)]
    decision = decide_attention_polarity(diseased, regions, fit_healthy_appearance(images))
    assert decision.inverted is inverted_by_the_gan
    assert decision.images_scored == len(diseased)
    assert decision.healthy_pixels_from == "6 normal image(s)"
    oriented = [1.0 - mask if decision.inverted else mask for mask in attention]
    pseudo = [binarize_attention_mask(mask, image.foreground) for image, mask in zip(diseased, oriented)]
    assert min(dice(mask, lesion) for mask, lesion in zip(pseudo, lesions)) > 0.7
    assert ("inverted (1 - m)" in decision.describe()) is inverted_by_the_gan


def test_a_bright_lesion_in_a_scan_without_normal_images_is_found_on_the_minority_side():
    """One channel (FLAIR-like), no normal image: healthy tissue is described by every diseased foreground."""
    rng = np.random.default_rng(2)
    y, x = np.mgrid[:SIZE, :SIZE]
    images, lesions = [], []
    for index in range(5):
        lesion = (y - rng.integers(14, 34)) ** 2 + (x - rng.integers(14, 34)) ** 2 < rng.integers(5, 9) ** 2
        scan = rng.normal(-0.2, 0.08, (SIZE, SIZE)) + 0.9 * lesion
        images.append(WeakImage(case_id=f"s{index}", slice_index=None, image=scan[None].astype(np.float32),
                                foreground=np.ones((SIZE, SIZE), bool), image_label="diseased",
                                original_shape=(SIZE, SIZE)))
        lesions.append(lesion)
    inverted = [1.0 - _attention_on(lesion, rng) for lesion in lesions]
    regions = [binarize_attention_mask(mask, image.foreground) for image, mask in zip(images, inverted)]
    decision = decide_attention_polarity(images, regions, fit_healthy_appearance(images))
    assert decision.inverted
    assert decision.healthy_pixels_from == "5 diseased image(s) (no normal image)"
    assert decision.images_favouring_inversion == 5


def test_nothing_to_compare_keeps_the_mask_and_says_why():
    images, _ = _skin_images(3, diseased=2, normal=2)
    diseased = images[:2]
    empty = [np.zeros((SIZE, SIZE), bool)] * 2
    decision = decide_attention_polarity(diseased, empty, fit_healthy_appearance(images))
    assert not decision.inverted and decision.median_margin is None
    assert "no diseased image had both" in decision.describe()
    with pytest.raises(ValueError, match="2 images but 1 regions"):
        decide_attention_polarity(diseased, empty[:1], fit_healthy_appearance(images))


def test_user_polarity_is_taken_as_given_and_unknown_ones_refused():
    assert user_polarity("inverted").inverted and not user_polarity("attention").inverted
    with pytest.raises(ValueError, match=r"'flip'.*\['auto', 'attention', 'inverted'\]"):
        user_polarity("flip")


def test_export_inverts_the_masks_when_told_and_records_the_decision(tmp_path):
    from test_pseudo_masks import _saved_generator

    source = write_skin_lesion_dataset(tmp_path / "raw", dataset_id=910, num_diseased=3, num_normal=2, size=24)
    _saved_generator(tmp_path / "model", 16)
    labels, records = {}, {}
    for rule in ("attention", "inverted", "auto"):
        target = export_pseudo_mask_dataset(source, tmp_path / "model", tmp_path / "raw" / f"Dataset91{len(labels) + 1}"
                                            f"_{rule}", polarity=rule, progress=False)
        labels[rule] = {case: sitk.GetArrayFromImage(sitk.ReadImage(str(target / "labelsTr" / f"{case}.png")))
                        for case in ("skin_000", "skin_001", "skin_002")}
        records[rule] = json.loads((target / "attention_polarity.json").read_text(encoding="utf-8"))
        assert records[rule]["rule"] == rule
        assert "attention mask" in json.loads((target / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["notes"]
    for case in labels["attention"]:
        complementary = (labels["attention"][case] != labels["inverted"][case]).mean()
        assert complementary > 0.9, f"{case}: inverting the attention should flip the pseudo mask"
    assert records["attention"]["inverted"] is False and records["inverted"]["inverted"] is True
    assert records["auto"]["images_scored"] >= 1
    chosen = "inverted" if records["auto"]["inverted"] else "attention"
    assert all(np.array_equal(labels["auto"][case], labels[chosen][case]) for case in labels[chosen])
