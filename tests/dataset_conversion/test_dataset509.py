"""Dataset509_MMWHS: MM-WHS 2017 CT and MR (unpaired), labels 205..850 → 1..7, the stray 421 read as 420."""
from __future__ import annotations

import json
import logging
import re
import shutil
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from layout_unpaired import (CORONAL_DIRECTION, MMWHS_RAW_TO_NNUNET, NUM_STRAY_421, ct_image, mmwhs_label, mmwhs_seed,
                             write_mmwhs)

from nnunet_mm.dataset_conversion.Dataset509_MMWHS import (LABEL_NAMES, RAW_TO_NNUNET, ConversionError, convert,
                                                           labels_back_to_mmwhs)

DATASET = "Dataset509_MMWHS"
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _expected_label(case: str) -> np.ndarray:
    """The fixture's raw label of ``case`` remapped by hand (421 counted as LA)."""
    raw = mmwhs_label(mmwhs_seed(case), stray_421=case == "mr_1010").astype(np.int64)
    raw[raw == 421] = 420
    return np.vectorize(MMWHS_RAW_TO_NNUNET.get)(raw).astype(np.uint8)


@pytest.fixture
def mmwhs_source(tmp_path: Path) -> Path:
    """``MM-WHS 2017 Dataset/{ct_train,mr_train,ct_test,mr_test}``: ct 1001, 1002 (float32 label), mr 1001, 1010
    (coronal, stray 421 voxels); tests ct 2001, mr 2001."""
    return write_mmwhs(tmp_path / "source")


# ----------------------------------------------------------------------------------------------------------------
# good input

def test_cases_are_named_by_modality_and_labels_become_consecutive(kit: SimpleNamespace, mmwhs_source: Path,
                                                                   output_root: Path) -> None:
    before = kit.tree_state(mmwhs_source)
    dataset = convert(mmwhs_source, output_root=output_root)

    training = ["ct_1001", "ct_1002", "mr_1001", "mr_1010"]
    assert _names(dataset / "imagesTr") == [f"{case}_0000.nii.gz" for case in training]
    assert _names(dataset / "labelsTr") == [f"{case}.nii.gz" for case in training]
    assert _names(dataset / "imagesTs") == ["ct_2001_0000.nii.gz", "mr_2001_0000.nii.gz"]
    for case in ("ct_1001", "ct_1002", "mr_1001"):  # ct_1002's label is stored as float32
        np.testing.assert_array_equal(_array(dataset / "labelsTr" / f"{case}.nii.gz"), _expected_label(case))
    assert set(np.unique(_array(dataset / "labelsTr" / "ct_1001.nii.gz"))) == set(range(8))
    np.testing.assert_array_equal(_array(dataset / "imagesTr" / "ct_1001_0000.nii.gz"), ct_image(1001))
    assert kit.tree_state(mmwhs_source) == before

    dataset_json = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["channel_names"] == {"0": "either_CT_or_MR"}
    assert dataset_json["labels"] == {"background": 0, "LV myocardium": 1, "LA blood cavity": 2, "LV blood cavity": 3,
                                      "RA blood cavity": 4, "RV blood cavity": 5, "ascending aorta": 6,
                                      "pulmonary artery": 7}
    assert dataset_json["numTraining"] == 4
    assert dataset_json["nnunet_mm"]["modalities"] == {"0": "CT|MR"}
    assert "channel_acquisition" not in dataset_json["nnunet_mm"]  # one channel
    assert dataset_json["nnunet_mm"]["per_case_modality"] == {"ct_1001": "CT", "ct_1002": "CT", "ct_2001": "CT",
                                                              "mr_1001": "MR", "mr_1010": "MR", "mr_2001": "MR"}


def test_the_stray_421_is_read_as_la_with_a_warning_naming_the_file(mmwhs_source: Path, output_root: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    label_file = mmwhs_source / "mr_train" / "mr_train_1010_label.nii.gz"
    assert np.count_nonzero(_array(label_file) == 421) == NUM_STRAY_421
    with caplog.at_level(logging.WARNING):
        dataset = convert(mmwhs_source, output_root=output_root)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(label_file) in w and f"{NUM_STRAY_421} voxel(s) with the stray label value 421" in w
               for w in warnings)
    np.testing.assert_array_equal(_array(dataset / "labelsTr" / "mr_1010.nii.gz"), _expected_label("mr_1010"))
    notes = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["notes"]
    assert f"label fix: {label_file}: {NUM_STRAY_421} voxel(s) with the stray value 421 read as 420" in notes


def test_a_coronal_mr_comes_out_axial_and_its_label_still_covers_the_same_anatomy(mmwhs_source: Path,
                                                                                  output_root: Path) -> None:
    source_label = sitk.ReadImage(str(mmwhs_source / "mr_train" / "mr_train_1010_label.nii.gz"))
    assert source_label.GetDirection() == CORONAL_DIRECTION
    dataset = convert(mmwhs_source, output_root=output_root)
    image = sitk.ReadImage(str(dataset / "imagesTr" / "mr_1010_0000.nii.gz"))
    label = sitk.ReadImage(str(dataset / "labelsTr" / "mr_1010.nii.gz"))
    np.testing.assert_allclose(image.GetDirection(), IDENTITY)
    assert label.GetDirection() == image.GetDirection() and label.GetOrigin() == image.GetOrigin()
    # remap the source label, then resample it (scanner coordinates) onto the output grid: voxel-wise equal
    remapped = sitk.ChangeLabel(sitk.Cast(source_label, sitk.sitkUInt16),
                                changeMap={421.0: 2.0, **{float(k): float(v) for k, v in RAW_TO_NNUNET.items()}})
    resampled = sitk.Resample(remapped, label, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(resampled), sitk.GetArrayFromImage(label))


def test_a_flat_folder_and_nii_files_work_like_the_official_sub_folders(tmp_path: Path, output_root: Path) -> None:
    top = write_mmwhs(tmp_path / "flat", training=("ct_1001", "mr_1003"), test=("mr_2002",), coronal=(),
                      float_labels=(), subfolders=False)
    image = top / "mr_train_1003_image.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(image)), str(top / "mr_train_1003_image.nii"))
    image.unlink()
    dataset = convert(tmp_path / "flat", output_root=output_root)
    assert _names(dataset / "imagesTr") == ["ct_1001_0000.nii.gz", "mr_1003_0000.nii.gz"]
    assert _names(dataset / "imagesTs") == ["mr_2002_0000.nii.gz"]


def test_modality_mr_gives_an_mr_only_dataset(mmwhs_source: Path, output_root: Path) -> None:
    dataset = convert(mmwhs_source, output_root=output_root, modality="mr", dataset_id=510, dataset_name="MMWHS_MR")
    assert dataset == output_root / "Dataset510_MMWHS_MR"
    dataset_json = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["channel_names"] == {"0": "MR"}
    assert _names(dataset / "labelsTr") == ["mr_1001.nii.gz", "mr_1010.nii.gz"]
    assert dataset_json["nnunet_mm"]["modalities"] == {"0": "MR"}


def test_output_passes_nnunet_verify_dataset_integrity(kit: SimpleNamespace, mmwhs_source: Path,
                                                       output_root: Path) -> None:
    kit.verify_dataset_integrity(convert(mmwhs_source, output_root=output_root))


def test_tar_archive_of_the_release_is_converted(mmwhs_source: Path, tmp_path: Path, output_root: Path) -> None:
    archive = tmp_path / "mmwhs.tar.gz"
    with tarfile.open(archive, "w:gz") as handle:
        handle.add(mmwhs_source, arcname=mmwhs_source.name)
    assert len(list((convert(archive, output_root=output_root) / "labelsTr").iterdir())) == 4


def test_labels_back_to_mmwhs_inverts_the_mapping() -> None:
    raw = np.array([[0, 205, 420, 500], [550, 600, 820, 850]])
    nnunet = np.vectorize(RAW_TO_NNUNET.get)(raw)
    np.testing.assert_array_equal(labels_back_to_mmwhs(nnunet), raw)
    assert len(LABEL_NAMES) == len(RAW_TO_NNUNET) - 1
    with pytest.raises(ValueError, match=r"values \[8\]"):
        labels_back_to_mmwhs(np.array([0, 8]))


# ----------------------------------------------------------------------------------------------------------------
# bad input: every problem is reported with its file, nothing is written, the input is left alone

def _break_other_stray_value(top: Path) -> tuple[Path, str]:
    path = top / "ct_train" / "ct_train_1001_label.nii.gz"
    label = sitk.ReadImage(str(path))
    label[4, 4, 4] = 422
    sitk.WriteImage(label, str(path), useCompression=True)
    return path, r"unknown label values \[422\] .*allowed are \[0, 205, 420, 421, 500, .*\(421 is read as 420\)"


def _break_missing_label(top: Path) -> tuple[Path, str]:
    (top / "mr_train" / "mr_train_1001_label.nii.gz").unlink()
    return top / "mr_train" / "mr_train_1001_image.nii.gz", r"training image without label; expected .*1001_label"


def _break_label_without_image(top: Path) -> tuple[Path, str]:
    (top / "ct_train" / "ct_train_1002_image.nii.gz").unlink()
    return top / "ct_train" / "ct_train_1002_label.nii.gz", "label without image"


def _break_duplicate(top: Path) -> tuple[Path, str]:
    (top / "extra").mkdir()
    shutil.copy(top / "ct_test" / "ct_test_2001_image.nii.gz", top / "extra" / "ct_test_2001_image.nii.gz")
    return top / "extra" / "ct_test_2001_image.nii.gz", "exists more than once"


def _break_shape(top: Path) -> tuple[Path, str]:
    path = top / "ct_train" / "ct_train_1002_label.nii.gz"
    label = sitk.ReadImage(str(path))
    sitk.WriteImage(label[:, :, 1:], str(path), useCompression=True)  # one slice less, as a cropped label
    return path, r"label is not on the grid of its image .*ct_train_1002_image\.nii\.gz \(size, origin differ\)"


def _break_escaping_link(top: Path) -> tuple[Path, str]:
    outside = top.parent.parent / "outside"
    outside.mkdir()
    (top / "mr_test" / "more").symlink_to(outside, target_is_directory=True)
    return top / "mr_test" / "more", r"outside the input folder .*\(path escaping the input\)"


@pytest.mark.parametrize("breaker", [_break_other_stray_value, _break_missing_label, _break_label_without_image,
                                     _break_duplicate, _break_shape, _break_escaping_link])
def test_bad_input_is_reported_with_the_file_and_nothing_is_written(kit: SimpleNamespace, mmwhs_source: Path,
                                                                    output_root: Path, breaker) -> None:
    offending, message = breaker(mmwhs_source)
    with kit.refused(mmwhs_source, output_root, match=re.escape(str(offending)) + ".*" + message):
        convert(mmwhs_source.parent, output_root=output_root)


def test_a_folder_without_mmwhs_files_is_reported(kit: SimpleNamespace, tmp_path: Path, output_root: Path) -> None:
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.txt").write_text("not a dataset", encoding="utf-8")
    with pytest.raises(ConversionError, match="no MM-WHS files found"):
        convert(tmp_path / "other", output_root=output_root)
    kit.assert_nothing_written(output_root)


# ----------------------------------------------------------------------------------------------------------------
# existing output, command line

def test_an_existing_dataset_is_refused_without_overwrite_and_replaced_with_it(mmwhs_source: Path,
                                                                                output_root: Path) -> None:
    dataset = convert(mmwhs_source, output_root=output_root, modality="ct")
    with pytest.raises(FileExistsError, match=re.escape(str(dataset))):
        convert(mmwhs_source, output_root=output_root)
    assert _names(dataset / "imagesTs") == ["ct_2001_0000.nii.gz"]
    convert(mmwhs_source, output_root=output_root, overwrite=True)
    assert _names(dataset / "imagesTs") == ["ct_2001_0000.nii.gz", "mr_2001_0000.nii.gz"]


def test_nnunet_mm_convert_509_prints_the_summary(mmwhs_source: Path, output_root: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    from nnunet_mm.cli.main import main as cli_main

    assert cli_main(["convert", "509", str(mmwhs_source), "--output-root", str(output_root)]) == 0
    printed = capsys.readouterr().out
    assert f"Converted 4 training and 2 test case(s) into {output_root / DATASET}" in printed
    assert "channels: 0 either_CT_or_MR" in printed
    assert "LV myocardium (1):" in printed and "pulmonary artery (7):" in printed
    assert "spacing (x, y, z) mm: min (2.5, 2.5, 3), max (2.5, 2.5, 3)" in printed
    assert "reoriented 1 case(s) acquired as LIP (1)" in printed
    assert "label fix:" in printed and "mr_train_1010_label.nii.gz" in printed


def test_cli_reports_problems_and_returns_1(kit: SimpleNamespace, mmwhs_source: Path, output_root: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    from nnunet_mm.dataset_conversion.Dataset509_MMWHS import main

    offending, _ = _break_missing_label(mmwhs_source)
    assert main([str(mmwhs_source), "--output-root", str(output_root), "--modality", "mr"]) == 1
    assert f"{offending}: training image without label" in capsys.readouterr().err
    kit.assert_nothing_written(output_root)
