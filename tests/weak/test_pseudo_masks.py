"""Pseudo masks: binarisation finds bright blobs inside the foreground; export writes an nnU-Net dataset."""
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from nnunet_mm.evaluation.metrics import dice
from nnunet_mm.weak.cltn_gan import CLTNConfig, LabelTransferGAN, save_checkpoint
from nnunet_mm.weak.pseudo_masks import binarize_attention_mask, export_pseudo_mask_dataset
from nnunet_mm.weak.synthetic import write_skin_lesion_dataset
from figure_checks import capture_saved_figures, figure_texts


def _blob_attention(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A smooth attention map: two bright blobs on a dim, noisy background; returns (map, true blobs)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size]
    blobs = ((y - 20) ** 2 + (x - 22) ** 2 < 8 ** 2) | ((y - 44) ** 2 + (x - 40) ** 2 < 6 ** 2)
    attention = np.clip(0.15 + 0.7 * ndimage.gaussian_filter(blobs.astype(float), 1.5)
                        + rng.normal(0, 0.04, (size, size)), 0, 1)
    return attention, blobs


@pytest.mark.parametrize("method", ["otsu", "watershed"])
def test_binarization_finds_the_bright_blobs(method):
    attention, blobs = _blob_attention(0)
    mask = binarize_attention_mask(attention, np.ones_like(blobs), method)
    assert dice(mask, blobs) > 0.85
    assert ndimage.label(mask)[1] == 2


def test_binarization_stays_inside_the_foreground():
    attention, blobs = _blob_attention(1)
    foreground = np.zeros_like(blobs)
    foreground[:, :32] = True  # only the first blob's half of the image
    mask = binarize_attention_mask(attention, foreground, "otsu")
    assert not mask[:, 32:].any()
    assert dice(mask, blobs & foreground) > 0.85


def test_flat_attention_gives_an_empty_mask():
    assert not binarize_attention_mask(np.full((8, 8), 0.4), np.ones((8, 8), bool)).any()


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match=r"'crf'.*\['otsu', 'watershed'\]"):
        binarize_attention_mask(np.zeros((4, 4)), np.ones((4, 4), bool), "crf")


def _saved_generator(model_dir, size: int) -> None:
    torch.manual_seed(0)
    gan = LabelTransferGAN(CLTNConfig(in_channels=3, image_size=size, base_channels=4, num_res_blocks=1,
                                      discriminator_channels=4))
    model_dir.mkdir()
    save_checkpoint(gan, model_dir, 0, {}, torch.Generator())


def test_export_writes_labels_ignore_label_image_labels_and_overview(tmp_path, monkeypatch):
    figures = capture_saved_figures(monkeypatch)
    source = write_skin_lesion_dataset(tmp_path / "raw", dataset_id=910, num_diseased=3, num_normal=2, size=24)
    _saved_generator(tmp_path / "model", 16)
    target = export_pseudo_mask_dataset(source, tmp_path / "model", tmp_path / "raw" / "Dataset911_Pseudo",
                                        progress=False)
    dataset_json = json.loads((target / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["labels"] == {"background": 0, "lesion": 1, "ignore": 2}
    assert dataset_json["overwrite_image_reader_writer"] == "NaturalImage2DIO"
    assert dataset_json["nnunet_mm"]["image_labels"]["skin_004"] == "normal"
    labels = {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in (target / "labelsTr").iterdir()}
    assert len(labels) == 5 and all(label.shape == (24, 24) for label in labels.values())
    assert not labels["skin_003.png"].any() and not labels["skin_004.png"].any()  # normal: all background
    assert sorted(p.name for p in (target / "imagesTr").iterdir()) == sorted(p.name for p in
                                                                             (source / "imagesTr").iterdir())
    report = json.loads((target / "pseudo_mask_dice.json").read_text(encoding="utf-8"))
    assert sorted(report["per_case"]) == ["skin_000", "skin_001", "skin_002"]
    assert (target / "pseudo_masks.png").stat().st_size > 5_000
    texts = figure_texts(figures[-1])
    assert texts[0].startswith("CLTN pseudo masks: 3 of 3 diseased image(s)")
    assert {"skin_000", "image", "attention m", "pseudo mask"} <= set(texts)
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_pseudo_mask_dataset(source, tmp_path / "model", target, progress=False)
