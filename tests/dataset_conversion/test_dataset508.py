"""Dataset508_ISIC2018 on tiny fixtures in the official ISIC 2018 Task 1 layout (layout_brats_isic.py) and on the
real ISIC 2017 samples arranged in the 2018 folder names."""
from __future__ import annotations

import json
import re
import shutil
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from layout_brats_isic import (ISIC_LESION_CENTRE_YX, ISIC_LESION_RADIUS, ISIC_SIZE_HW, ISIC_TEST_INPUT,
                               ISIC_TRAINING_GROUND_TRUTH, ISIC_TRAINING_INPUT, ISIC_VALIDATION_INPUT, REAL_ISIC,
                               arrange_real_isic, isic_case, isic_id, write_isic2018, write_jpeg, write_png)

from nnunet_mm.conversion.errors import ConversionError
from nnunet_mm.dataset_conversion.Dataset508_ISIC2018 import (convert, downscaled_size, main,
                                                              normal_crop_positions)

DATASET = "Dataset508_ISIC2018"
TRAINING = (0, 1, 2)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """Three training images with masks, one validation and one test image (48 × 64 pixels)."""
    return write_isic2018(tmp_path / "isic2018", training=TRAINING, validation=[10], test=[20])


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _mask_file(source: Path, number: int) -> Path:
    return source / ISIC_TRAINING_GROUND_TRUTH / f"{isic_id(number)}_segmentation.png"


def _image_file(source: Path, number: int) -> Path:
    return source / ISIC_TRAINING_INPUT / f"{isic_id(number)}.jpg"


# ----------------------------------------------------------------------------------------------------------------
# good input

def test_images_become_lossless_rgb_pngs_and_masks_become_0_1(kit: SimpleNamespace, source: Path,
                                                              output_root: Path) -> None:
    before = kit.tree_state(source)
    dataset = convert(source, output_root=output_root)

    assert dataset == output_root / DATASET
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == [f"{isic_id(n)}_0000.png" for n in TRAINING]
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == [f"{isic_id(n)}.png" for n in TRAINING]
    assert sorted(p.name for p in (dataset / "imagesTs").iterdir()) == ["ISIC_0000010_0000.png",
                                                                        "ISIC_0000020_0000.png"]
    image = sitk.ReadImage(str(dataset / "imagesTr" / "ISIC_0000001_0000.png"))
    assert image.GetNumberOfComponentsPerPixel() == 3 and image.GetPixelID() == sitk.sitkVectorUInt8
    # the PNG holds exactly the decoded JPEG pixels
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), _array(_image_file(source, 1)))
    label = _array(dataset / "labelsTr" / "ISIC_0000001.png")
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, _array(_mask_file(source, 1)) // 255)
    assert kit.tree_state(source) == before


def test_dataset_json_uses_the_natural_image_reader_and_records_image_labels(source: Path,
                                                                              output_root: Path) -> None:
    dataset = convert(source, output_root=output_root)
    dataset_json = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["channel_names"] == {"0": "R", "1": "G", "2": "B"}
    assert dataset_json["labels"] == {"background": 0, "lesion": 1}
    assert dataset_json["file_ending"] == ".png"
    assert dataset_json["overwrite_image_reader_writer"] == "NaturalImage2DIO"
    assert dataset_json["numTraining"] == 3
    assert dataset_json["nnunet_mm"]["image_labels"] == "image_labels.json"
    assert dataset_json["nnunet_mm"]["channel_acquisition"] == "colour_planes"  # never shift R, G, B apart
    image_labels = json.loads((dataset / "image_labels.json").read_text(encoding="utf-8"))
    assert image_labels == {isic_id(n): "diseased" for n in TRAINING}


def test_normal_crops_are_lesion_free_extra_cases_with_empty_labels(kit: SimpleNamespace, source: Path,
                                                                    output_root: Path) -> None:
    dataset = convert(source, output_root=output_root, normal_crops=2, crop_size=16, crop_margin=4)
    image_labels = json.loads((dataset / "image_labels.json").read_text(encoding="utf-8"))
    crops = sorted(case for case, value in image_labels.items() if value == "normal")
    assert crops == [f"{isic_id(n)}_normal{k}" for n in TRAINING for k in (1, 2)]
    assert json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["numTraining"] == 9

    y, x = np.mgrid[:ISIC_SIZE_HW[0], :ISIC_SIZE_HW[1]]
    lesion_grown = (y - ISIC_LESION_CENTRE_YX[0]) ** 2 + (x - ISIC_LESION_CENTRE_YX[1]) ** 2 <= \
        (ISIC_LESION_RADIUS + 4) ** 2
    for crop in crops:
        assert not _array(dataset / "labelsTr" / f"{crop}.png").any()
        pixels = _array(dataset / "imagesTr" / f"{crop}_0000.png")
        assert pixels.shape == (16, 16, 3)
        whole = _array(dataset / "imagesTr" / f"{crop.split('_normal')[0]}_0000.png")
        found = [(top, left) for top in range(0, 48, 16) for left in range(0, 64, 16)
                 if np.array_equal(whole[top:top + 16, left:left + 16], pixels)]
        assert len(found) == 1
        top, left = found[0]
        assert not lesion_grown[top:top + 16, left:left + 16].any()
    kit.verify_dataset_integrity(dataset)


def test_normal_crop_positions_avoid_the_grown_lesion_and_are_reproducible() -> None:
    lesion = np.zeros((40, 40), bool)
    lesion[0:10, 0:10] = True
    positions = normal_crop_positions(lesion, crop_size=10, margin=2, max_crops=20, seed=1)
    # every grid window except those within 2 px of the lesion: (0, 0), (0, 10), (10, 0), (10, 10) touch it
    assert positions == [(y, x) for y in range(0, 40, 10) for x in range(0, 40, 10)
                         if not (y <= 10 and x <= 10)]
    assert normal_crop_positions(lesion, crop_size=10, margin=2, max_crops=3, seed=5) == \
        normal_crop_positions(lesion, crop_size=10, margin=2, max_crops=3, seed=5)
    assert normal_crop_positions(np.ones((40, 40), bool), crop_size=10, margin=0, max_crops=3, seed=0) == []


def test_max_size_downscales_keeping_the_aspect_ratio(source: Path, output_root: Path) -> None:
    assert downscaled_size((6748, 4499), 1024) == (1024, 683)
    dataset = convert(source, output_root=output_root, max_size=32)
    image = _array(dataset / "imagesTr" / "ISIC_0000000_0000.png")
    label = _array(dataset / "labelsTr" / "ISIC_0000000.png")
    assert image.shape == (24, 32, 3) and label.shape == (24, 32)
    assert set(np.unique(label)) == {0, 1}
    # the lesion stays where it was: centre (24, 18) of 48 × 64 → (12, 9) of 24 × 32, radius 10 → 5
    y, x = np.mgrid[:24, :32]
    expected = (y + 0.5 - 12) ** 2 + (x + 0.5 - 9) ** 2 <= 5 ** 2
    assert np.mean(label.astype(bool) == expected) > 0.97
    assert image[label == 1].mean() < image[label == 0].mean() - 50  # dark lesion on lighter skin
    assert _array(dataset / "imagesTs" / "ISIC_0000010_0000.png").shape == (24, 32, 3)


def test_grey_jpegs_are_repeated_into_three_channels(source: Path, output_root: Path) -> None:
    grey = isic_case(0)[0][..., 0]
    write_jpeg(grey, _image_file(source, 0))
    dataset = convert(source, output_root=output_root)
    image = _array(dataset / "imagesTr" / "ISIC_0000000_0000.png")
    assert image.shape == (48, 64, 3)
    np.testing.assert_array_equal(image[..., 1], image[..., 0])
    np.testing.assert_array_equal(image[..., 0], _array(_image_file(source, 0)))


def test_binarize_threshold_accepts_lossily_resaved_masks(source: Path, output_root: Path) -> None:
    mask = _array(_mask_file(source, 2))
    resaved = np.where(mask == 255, 250, 3).astype(np.uint8)
    write_png(resaved, _mask_file(source, 2))
    with pytest.raises(ConversionError, match=re.escape(str(_mask_file(source, 2))) + r".*--binarize-threshold"):
        convert(source, output_root=output_root)
    dataset = convert(source, output_root=output_root, binarize_threshold=127)
    np.testing.assert_array_equal(_array(dataset / "labelsTr" / "ISIC_0000002.png"), mask // 255)


def test_output_passes_nnunet_verify_dataset_integrity(kit: SimpleNamespace, source: Path, output_root: Path) -> None:
    kit.verify_dataset_integrity(convert(source, output_root=output_root))


# ----------------------------------------------------------------------------------------------------------------
# bad input: every problem is reported naming the file, nothing is written, the input is left alone

def _break_mask_value(source: Path) -> tuple[Path, str]:
    path = _mask_file(source, 1)
    mask = _array(path)
    mask[0, :3] = (1, 128, 254)
    write_png(mask, path)
    return path, r"mask values \[1, 128, 254\] are neither 0 nor 255"


def _break_size(source: Path) -> tuple[Path, str]:
    write_png(np.zeros((40, 64), np.uint8), _mask_file(source, 0))
    return _image_file(source, 0), re.escape(f"(64×48) and {_mask_file(source, 0)} (64×40): image and mask sizes")


def _break_missing_mask(source: Path) -> tuple[Path, str]:
    _mask_file(source, 2).unlink()
    return _image_file(source, 2), f"no mask: expected {re.escape(str(_mask_file(source, 2)))}"


def _break_mask_without_image(source: Path) -> tuple[Path, str]:
    write_png(np.zeros((48, 64), np.uint8), _mask_file(source, 7))
    return _mask_file(source, 7), f"mask without an image: expected {re.escape(str(_image_file(source, 7)))}"


def _break_unreadable(source: Path) -> tuple[Path, str]:
    path = source / ISIC_VALIDATION_INPUT / "ISIC_0000010.jpg"
    path.write_bytes(b"\xff\xd8\xff not really a JPEG")
    return path, "cannot read image"


def _break_duplicate_id(source: Path) -> tuple[Path, str]:
    shutil.copyfile(_image_file(source, 0), source / ISIC_TEST_INPUT / "ISIC_0000000.jpg")
    return source / ISIC_TEST_INPUT / "ISIC_0000000.jpg", "duplicate case id 'ISIC_0000000'"


def _break_missing_ground_truth(source: Path) -> tuple[Path, str]:
    shutil.rmtree(source / ISIC_TRAINING_GROUND_TRUTH)
    return source, f"missing {re.escape(str(source / ISIC_TRAINING_GROUND_TRUTH))}/"


def _break_rgba_image(source: Path) -> tuple[Path, str]:
    path = source / ISIC_TEST_INPUT / "ISIC_0000020.jpg"
    rgba = np.concatenate([isic_case(20)[0], np.full((48, 64, 1), 255, np.uint8)], axis=-1)
    write_png(rgba, path.with_suffix(".png"))
    path.with_suffix(".png").replace(path)  # a PNG called .jpg: read by its content
    return path, "expected an RGB \\(or grey\\) image, got 4 channels"


@pytest.mark.parametrize("breaker", [
    _break_mask_value, _break_size, _break_missing_mask, _break_mask_without_image, _break_unreadable,
    _break_duplicate_id, _break_missing_ground_truth, _break_rgba_image,
])
def test_bad_input_is_refused_naming_the_file_and_nothing_is_written(kit: SimpleNamespace, source: Path,
                                                                     output_root: Path, breaker) -> None:
    offending, message = breaker(source)
    with kit.refused(source, output_root, match=re.escape(str(offending)) + ".*" + message):
        convert(source, output_root=output_root)


def test_every_problem_is_reported_at_once(source: Path, output_root: Path) -> None:
    offending = [breaker(source)[0] for breaker in (_break_mask_value, _break_size, _break_missing_mask,
                                                    _break_unreadable)]
    with pytest.raises(ConversionError) as caught:
        convert(source, output_root=output_root)
    assert len(caught.value.problems) == 4
    for path in offending:
        assert str(path) in str(caught.value)


def test_an_empty_source_folder_is_refused(kit: SimpleNamespace, tmp_path: Path, output_root: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match=f"missing .*{ISIC_TRAINING_INPUT}"):
        convert(tmp_path / "empty", output_root=output_root)
    (tmp_path / "empty" / ISIC_TRAINING_INPUT).mkdir()
    (tmp_path / "empty" / ISIC_TRAINING_GROUND_TRUTH).mkdir()
    with pytest.raises(ConversionError, match=r"no training images \(\*\.jpg\) found"):
        convert(tmp_path / "empty", output_root=output_root)
    kit.assert_nothing_written(output_root)


def test_invalid_options_are_refused(kit: SimpleNamespace, source: Path, output_root: Path) -> None:
    with pytest.raises(ValueError, match="binarize_threshold must be in 0..254"):
        convert(source, output_root=output_root, binarize_threshold=255)
    with pytest.raises(ValueError, match="max_size must be >= 8"):
        convert(source, output_root=output_root, max_size=0)
    kit.assert_nothing_written(output_root)


# ----------------------------------------------------------------------------------------------------------------
# archives, existing output

def test_the_downloaded_zips_are_read_without_unpacking(source: Path, tmp_path: Path, output_root: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        with zipfile.ZipFile(downloads / f"{folder.name}.zip", "w") as handle:
            for file in sorted(folder.iterdir()):
                handle.write(file, f"{folder.name}/{file.name}")
    dataset = convert(downloads, output_root=output_root)
    assert len(list((dataset / "imagesTr").iterdir())) == 3 and len(list((dataset / "imagesTs").iterdir())) == 2


def test_an_archive_member_escaping_the_input_is_refused(kit: SimpleNamespace, source: Path, tmp_path: Path,
                                                         output_root: Path) -> None:
    archive = tmp_path / "isic.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        handle.add(source, arcname="isic2018")
        handle.add(_image_file(source, 0), arcname="isic2018/../../evil.jpg")
    with pytest.raises(ValueError, match=re.escape(str(archive)) + r".*evil\.jpg"):
        convert(archive, output_root=output_root)
    kit.assert_nothing_written(output_root)


def test_a_symbolic_link_leading_out_of_the_input_is_refused(kit: SimpleNamespace, source: Path, tmp_path: Path,
                                                             output_root: Path) -> None:
    outside = tmp_path / "elsewhere.jpg"
    path = _image_file(source, 1)
    path.rename(outside)
    path.symlink_to(outside)
    with pytest.raises(ConversionError, match=re.escape(str(path)) + ".*outside the input folder"):
        convert(source, output_root=output_root)
    kit.assert_nothing_written(output_root)


def test_an_existing_dataset_is_refused_without_overwrite_and_replaced_with_it(source: Path,
                                                                                output_root: Path) -> None:
    dataset = convert(source, output_root=output_root, normal_crops=1, crop_size=16)
    marker = dataset / "marker.txt"
    marker.write_text("previous conversion", encoding="utf-8")
    with pytest.raises(FileExistsError, match=re.escape(str(dataset))):
        convert(source, output_root=output_root)
    assert marker.read_text(encoding="utf-8") == "previous conversion"
    assert convert(source, output_root=output_root, overwrite=True) == dataset
    assert not marker.exists()
    assert len(json.loads((dataset / "image_labels.json").read_text(encoding="utf-8"))) == 3


# ----------------------------------------------------------------------------------------------------------------
# command line

def test_main_prints_the_summary(source: Path, output_root: Path, capsys: pytest.CaptureFixture) -> None:
    status = main([str(source), "--output-root", str(output_root), "--normal-crops", "1", "--crop-size", "16"])
    printed = capsys.readouterr().out
    assert status == 0
    assert f"Converted 6 training and 2 test case(s) into {output_root / DATASET}" in printed
    assert "channels: 0 R, 1 G, 2 B" in printed
    assert "lesion (1):" in printed
    assert "image size (width × height): smallest 64×48, largest 64×48" in printed
    assert "image_labels.json: 3 diseased, 3 normal" in printed


def test_main_through_the_nnunet_mm_command_reports_problems(kit: SimpleNamespace, source: Path, output_root: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    from nnunet_mm.cli.main import main as nnunet_mm_main

    _break_mask_value(source)
    assert nnunet_mm_main(["convert", "508", str(source), "--output-root", str(output_root)]) == 1
    assert "are neither 0 nor 255" in capsys.readouterr().err
    kit.assert_nothing_written(output_root)


def test_main_refuses_unknown_flags() -> None:
    with pytest.raises(SystemExit):
        main(["somewhere", "--max_size", "10"])


# ----------------------------------------------------------------------------------------------------------------
# real data

@pytest.mark.skipif(not REAL_ISIC.is_dir(), reason=f"real ISIC 2017 sample data not found at {REAL_ISIC}")
def test_real_isic_samples_convert_downscaled_and_pass_verify(kit: SimpleNamespace, tmp_path: Path,
                                                              output_root: Path) -> None:
    """The six real ISIC 2017 samples (3024 × 2016 JPEGs, 0/255 masks) copied into the ISIC 2018 folders: four as
    training images, two as validation images, downscaled to 256 pixels for speed."""
    source = tmp_path / "isic2018"
    train_ids, validation_ids = arrange_real_isic(source, training=4, validation=2)
    dataset = convert(source, output_root=output_root, max_size=256, normal_crops=1)
    for case in train_ids:
        label = _array(dataset / "labelsTr" / f"{case}.png")
        assert label.shape == (171, 256) and set(np.unique(label)) == {0, 1}
        assert _array(dataset / "imagesTr" / f"{case}_0000.png").shape == (171, 256, 3)
    assert sorted(p.name for p in (dataset / "imagesTs").iterdir()) == [f"{c}_0000.png" for c in validation_ids]
    image_labels = json.loads((dataset / "image_labels.json").read_text(encoding="utf-8"))
    assert [image_labels[case] for case in train_ids] == ["diseased"] * 4
    kit.verify_dataset_integrity(dataset)


# ----------------------------------------------------------------------------------------------------------------
# weak supervision on the converted dataset

def test_weak_label_training_on_the_pseudo_masks_of_the_converted_dataset_keeps_r_g_b_aligned(
        source: Path, output_root: Path, tmp_path: Path, trainer_kit) -> None:
    """508 → weak-train-gan → weak-export → WeakLabelTrainer: the export copies 508's "colour_planes", so the trainer
    neither shifts R, G and B against each other nor drops one."""
    import torch

    from nnunet_mm.weak.cltn_gan import CLTNConfig, train_label_transfer_gan
    from nnunet_mm.weak.pseudo_masks import export_pseudo_mask_dataset
    from nnunet_mm.weak.trainer import WeakLabelTrainer
    from nnunet_mm.weak.weak_images import load_weak_images

    dataset = convert(source, output_root=output_root, normal_crops=1, crop_size=16)
    config = CLTNConfig(in_channels=3, image_size=16, base_channels=4, num_res_blocks=1, discriminator_channels=4)
    train_label_transfer_gan(load_weak_images(dataset, size=16), tmp_path / "gan", iterations=1, config=config,
                             progress=False)
    pseudo = export_pseudo_mask_dataset(dataset, tmp_path / "gan", output_root / "Dataset528_ISICPseudoMasks",
                                        progress=False)
    pseudo_json = json.loads((pseudo / "dataset.json").read_text(encoding="utf-8"))
    assert pseudo_json["nnunet_mm"]["channel_acquisition"] == "colour_planes"

    dataset_json = trainer_kit.dataset_json()  # the planned phantom's, with 508's channels and block
    dataset_json.update(channel_names=pseudo_json["channel_names"], nnunet_mm=pseudo_json["nnunet_mm"])
    trainer = trainer_kit.trainer(WeakLabelTrainer, dataset_json=dataset_json)
    batch = torch.rand(4, 3, 16, 16)
    augmented, draw = trainer.augment_multimodal(batch.clone())
    assert torch.equal(augmented, batch) and draw.misalignment is None and draw.dropout is None
    assert ("nnunet_mm: misalignment OFF, modality dropout OFF (channel_acquisition 'colour_planes'"
            in Path(trainer.log_file).read_text(encoding="utf-8"))
