"""Dataset506_BraTS2018 / Dataset507_BraTS2019 and nnunet_mm.dataset_conversion.brats_layout on tiny fixtures in the official
layouts (layout_brats_isic.py) and on the real BRATS 2015 sample cases arranged in the BraTS 2018 naming."""
from __future__ import annotations

import json
import logging
import re
import shutil
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from layout_brats_isic import (REAL_BRATS, arrange_real_brats, brats_grid, write_brats_case, write_brats_training,
                               write_brats_validation)

from nnunet_mm.dataset_conversion import brats_layout as brats
from nnunet_mm.conversion.errors import ConversionError
from nnunet_mm.dataset_conversion.Dataset506_BraTS2018 import convert, main
from nnunet_mm.io import same_geometry

DATASET = "Dataset506_BraTS2018"
TRAINING_CASES = {"HGG": ["2013_2_1", "CBICA_AAB_1"], "LGG": ["TCIA10_103_1"]}


@pytest.fixture
def brats2018(tmp_path: Path) -> SimpleNamespace:
    """Three training cases (two HGG, one LGG) and one validation case."""
    return SimpleNamespace(training=write_brats_training(tmp_path, 2018, TRAINING_CASES),
                           validation=write_brats_validation(tmp_path, 2018, ["CBICA_AAM_1"]))


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _case_file(training: Path, case: str, suffix: str) -> Path:
    grade = "LGG" if "TCIA10" in case else "HGG"
    return training / grade / case / f"{case}_{suffix}.nii.gz"


def _rewrite(path: Path, array: np.ndarray) -> None:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(brats_grid())
    sitk.WriteImage(image, str(path), useCompression=True)


# ----------------------------------------------------------------------------------------------------------------
# good input

def test_cases_become_four_channels_and_a_label_with_validation_cases_in_images_ts(
        kit: SimpleNamespace, brats2018: SimpleNamespace, output_root: Path) -> None:
    before = [kit.tree_state(brats2018.training), kit.tree_state(brats2018.validation)]
    dataset = convert(brats2018.training, test_source=brats2018.validation, output_root=output_root)

    cases = ["Brats18_2013_2_1", "Brats18_CBICA_AAB_1", "Brats18_TCIA10_103_1"]
    assert dataset == output_root / DATASET
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == \
        [f"{case}_000{k}.nii.gz" for case in cases for k in range(4)]
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == [f"{case}.nii.gz" for case in cases]
    assert sorted(p.name for p in (dataset / "imagesTs").iterdir()) == \
        [f"Brats18_CBICA_AAM_1_000{k}.nii.gz" for k in range(4)]
    for channel, sequence in enumerate(("t1", "t1ce", "t2", "flair")):  # channel order T1, T1ce, T2, Flair
        written = dataset / "imagesTr" / f"Brats18_TCIA10_103_1_000{channel}.nii.gz"
        assert written.read_bytes() == _case_file(brats2018.training, "Brats18_TCIA10_103_1", sequence).read_bytes()
    assert [kit.tree_state(brats2018.training), kit.tree_state(brats2018.validation)] == before


def test_labels_are_remapped_as_in_nnunet_and_keep_the_grid(brats2018: SimpleNamespace, output_root: Path) -> None:
    dataset = convert(brats2018.training, output_root=output_root)
    source = _case_file(brats2018.training, "Brats18_CBICA_AAB_1", "seg")
    original = _array(source)
    label_image = sitk.ReadImage(str(dataset / "labelsTr" / "Brats18_CBICA_AAB_1.nii.gz"))
    label = sitk.GetArrayFromImage(label_image)

    assert set(np.unique(original)) == {0, 1, 2, 4}
    assert label.dtype == np.uint8
    for brats_value, nnunet_value in ((0, 0), (2, 1), (1, 2), (4, 3)):  # edema 1, NCR/NET 2, enhancing 3
        np.testing.assert_array_equal(label == nnunet_value, original == brats_value)
    assert same_geometry(label_image, sitk.ReadImage(str(source)), tolerance=1e-6)
    assert label_image.GetOrigin() == (0.0, -47.0, 0.0)


def test_dataset_json_trains_on_regions_with_the_four_sequences(brats2018: SimpleNamespace,
                                                                output_root: Path) -> None:
    dataset = convert(brats2018.training, test_source=brats2018.validation, output_root=output_root)
    dataset_json = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["channel_names"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "Flair"}
    assert dataset_json["labels"] == {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                                      "enhancing tumor": [3]}
    assert dataset_json["regions_class_order"] == [1, 2, 3]
    assert dataset_json["numTraining"] == 3
    assert dataset_json["file_ending"] == ".nii.gz"
    assert dataset_json["nnunet_mm"]["converter"] == DATASET
    assert dataset_json["nnunet_mm"]["source"] == str(brats2018.training.resolve())
    assert dataset_json["nnunet_mm"]["channel_acquisition"] == "co_registered"  # augmentation off by default


def test_output_passes_nnunet_verify_dataset_integrity(kit: SimpleNamespace, brats2018: SimpleNamespace,
                                                       output_root: Path) -> None:
    dataset = convert(brats2018.training, test_source=brats2018.validation, output_root=output_root)
    kit.verify_dataset_integrity(dataset)


def test_uncompressed_nii_files_are_found_and_written_compressed(tmp_path: Path, output_root: Path) -> None:
    training = write_brats_training(tmp_path, 2018, {"HGG": ["2013_2_1"]}, ending=".nii")
    dataset = convert(training, output_root=output_root)
    written = dataset / "imagesTr" / "Brats18_2013_2_1_0003.nii.gz"
    assert written.read_bytes()[:2] == b"\x1f\x8b"  # gzip
    np.testing.assert_array_equal(_array(written), _array(training / "HGG/Brats18_2013_2_1/Brats18_2013_2_1_flair.nii"))
    assert (dataset / "labelsTr" / "Brats18_2013_2_1.nii.gz").is_file()


def test_brats2019_converts_through_the_nnunet_mm_command(tmp_path: Path, output_root: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    from nnunet_mm.cli.main import main as nnunet_mm_main

    training = write_brats_training(tmp_path, 2019, {"HGG": ["CBICA_AAB_1"], "LGG": ["TCIA10_103_1"]})
    assert (training / "name_mapping.csv").is_file()
    assert nnunet_mm_main(["convert", "507", str(training), "--output-root", str(output_root)]) == 0
    dataset = output_root / "Dataset507_BraTS2019"
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == \
        ["BraTS19_CBICA_AAB_1.nii.gz", "BraTS19_TCIA10_103_1.nii.gz"]
    assert json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["converter"] == "Dataset507_BraTS2019"
    assert "Converted 2 training and 0 test case(s)" in capsys.readouterr().out


def test_legacy_2015_merges_label_3_into_ncr_net_with_a_warning(tmp_path: Path, output_root: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    case = write_brats_case(tmp_path / "src" / "HGG" / "Brats18_2013_5_1", seed=3, legacy_label=True)
    original = _array(case / "Brats18_2013_5_1_seg.nii.gz")
    assert 3 in original
    with caplog.at_level(logging.WARNING):
        dataset = convert(tmp_path / "src", legacy_2015=True, output_root=output_root)
    label = _array(dataset / "labelsTr" / "Brats18_2013_5_1.nii.gz")
    np.testing.assert_array_equal(label == 2, np.isin(original, (1, 3)))  # NCR/NET, with the old label 3
    assert "Brats18_2013_5_1_seg.nii.gz" in caplog.text
    assert "of label 3 (BRATS 2015 non-enhancing tumour) merged into NCR/NET" in caplog.text


# ----------------------------------------------------------------------------------------------------------------
# bad input: every problem is reported naming the file, nothing is written, the input is left alone

def _break_missing_sequence(training: Path) -> tuple[Path, str]:
    _case_file(training, "Brats18_CBICA_AAB_1", "t2").unlink()
    folder = training / "HGG" / "Brats18_CBICA_AAB_1"
    return folder, f"missing t2 file: expected {re.escape(str(folder / 'Brats18_CBICA_AAB_1_t2.nii.gz'))}"


def _break_missing_segmentation(training: Path) -> tuple[Path, str]:
    _case_file(training, "Brats18_2013_2_1", "seg").unlink()
    return training / "HGG" / "Brats18_2013_2_1", "missing seg file"


def _break_legacy_label(training: Path) -> tuple[Path, str]:
    path = _case_file(training, "Brats18_2013_2_1", "seg")
    array = _array(path)
    array[0, 0, :3] = 3
    _rewrite(path, array)
    return path, r"unknown label values \[3\].*BRATS 2015.*--legacy-2015"


def _break_unknown_label(training: Path) -> tuple[Path, str]:
    path = _case_file(training, "Brats18_TCIA10_103_1", "seg")
    array = _array(path)
    array[0, 0, 0] = 5
    _rewrite(path, array)
    return path, r"unknown label values \[5\] \(found \[0, 1, 2, 4, 5\]\); allowed are \[0, 1, 2, 4\]"


def _break_non_integer_label(training: Path) -> tuple[Path, str]:
    path = _case_file(training, "Brats18_TCIA10_103_1", "seg")
    array = _array(path).astype(np.float32)
    array[0, 0, 0] = 1.5
    _rewrite(path, array)
    return path, r"non-integer values \[1\.5\]"


def _break_sequence_grid(training: Path) -> tuple[Path, str]:
    path = _case_file(training, "Brats18_CBICA_AAB_1", "flair")
    image = sitk.ReadImage(str(path))
    image.SetSpacing((1.0, 1.0, 2.0))
    sitk.WriteImage(image, str(path), useCompression=True)
    reference = _case_file(training, "Brats18_CBICA_AAB_1", "t1")
    return path, f"not on the grid of {re.escape(str(reference))} \\(spacing differ\\)"


def _break_unreadable(training: Path) -> tuple[Path, str]:
    path = _case_file(training, "Brats18_2013_2_1", "t1ce")
    path.write_bytes(b"\x1f\x8b not a gzip stream")
    return path, "cannot read image"


def _break_duplicate_case(training: Path) -> tuple[Path, str]:
    shutil.copytree(training / "HGG" / "Brats18_2013_2_1", training / "LGG" / "Brats18_2013_2_1")
    return training / "LGG" / "Brats18_2013_2_1", "duplicate case id 'Brats18_2013_2_1'"


def _break_two_endings(training: Path) -> tuple[Path, str]:
    path = _case_file(training, "Brats18_2013_2_1", "t1")
    sitk.WriteImage(sitk.ReadImage(str(path)), str(path.with_name("Brats18_2013_2_1_t1.nii")))
    return path.parent, r"several t1 files \['Brats18_2013_2_1_t1.nii', 'Brats18_2013_2_1_t1.nii.gz'\]"


def _break_2019_folder_in_2018_data(training: Path) -> tuple[Path, str]:
    folder = training / "HGG" / "BraTS19_2013_3_1"
    write_brats_case(folder, seed=7)
    return folder, "not a BraTS 2018 case folder: the name should start with 'Brats18_'"


@pytest.mark.parametrize("breaker", [
    _break_missing_sequence, _break_missing_segmentation, _break_legacy_label, _break_unknown_label,
    _break_non_integer_label, _break_sequence_grid, _break_unreadable, _break_duplicate_case, _break_two_endings,
    _break_2019_folder_in_2018_data,
])
def test_bad_input_is_refused_naming_the_file_and_nothing_is_written(kit: SimpleNamespace, brats2018: SimpleNamespace,
                                                                     output_root: Path, breaker) -> None:
    offending, message = breaker(brats2018.training)
    with kit.refused(brats2018.training, output_root, match=re.escape(str(offending)) + ".*" + message):
        convert(brats2018.training, test_source=brats2018.validation, output_root=output_root)


def test_every_problem_is_reported_at_once(brats2018: SimpleNamespace, output_root: Path) -> None:
    breakers = [_break_missing_sequence, _break_unknown_label, _break_sequence_grid, _break_legacy_label]
    offending = [breaker(brats2018.training)[0] for breaker in breakers]
    with pytest.raises(ConversionError) as caught:
        convert(brats2018.training, output_root=output_root)
    assert len(caught.value.problems) == 4
    for path in offending:
        assert str(path) in str(caught.value)


def test_an_empty_source_folder_is_refused(kit: SimpleNamespace, tmp_path: Path, output_root: Path) -> None:
    (tmp_path / "empty" / "HGG").mkdir(parents=True)
    with pytest.raises(ConversionError, match="no BraTS case folders found"):
        convert(tmp_path / "empty", output_root=output_root)
    kit.assert_nothing_written(output_root)


def test_a_symbolic_link_leading_out_of_the_input_is_refused(kit: SimpleNamespace, brats2018: SimpleNamespace,
                                                             tmp_path: Path, output_root: Path) -> None:
    path = _case_file(brats2018.training, "Brats18_2013_2_1", "t2")
    outside = tmp_path / "elsewhere_t2.nii.gz"
    path.rename(outside)
    path.symlink_to(outside)
    with pytest.raises(ConversionError, match=re.escape(str(path)) + ".*outside the input folder"):
        convert(brats2018.training, output_root=output_root)
    kit.assert_nothing_written(output_root)


def test_a_failure_while_writing_leaves_no_dataset(kit: SimpleNamespace, brats2018: SimpleNamespace, output_root: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_json(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(brats, "write_dataset_json", failing_json)
    with pytest.raises(OSError, match="disk full"):
        convert(brats2018.training, output_root=output_root)
    kit.assert_nothing_written(output_root)


# ----------------------------------------------------------------------------------------------------------------
# archives, existing output

def test_a_zip_archive_is_accepted_as_source(brats2018: SimpleNamespace, tmp_path: Path, output_root: Path) -> None:
    archive = tmp_path / "MICCAI_BraTS_2018_Data_Training.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for file in sorted(brats2018.training.rglob("*")):
            handle.write(file, file.relative_to(brats2018.training.parent))
    dataset = convert(archive, output_root=output_root)
    assert len(list((dataset / "labelsTr").iterdir())) == 3
    assert json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["source"] == str(archive.resolve())


def test_an_archive_member_escaping_the_input_is_refused(kit: SimpleNamespace, brats2018: SimpleNamespace,
                                                         tmp_path: Path, output_root: Path) -> None:
    archive = tmp_path / "training.tar"
    with tarfile.open(archive, "w") as handle:
        handle.add(brats2018.training, arcname="MICCAI_BraTS_2018_Data_Training")
        handle.add(_case_file(brats2018.training, "Brats18_2013_2_1", "seg"), arcname="../escaped_seg.nii.gz")
    with pytest.raises(ValueError, match=re.escape(str(archive)) + r".*\.\./escaped_seg\.nii\.gz"):
        convert(archive, output_root=output_root)
    kit.assert_nothing_written(output_root)
    assert not (tmp_path / "escaped_seg.nii.gz").exists()


def test_an_existing_dataset_is_refused_without_overwrite_and_replaced_with_it(brats2018: SimpleNamespace,
                                                                                output_root: Path) -> None:
    dataset = convert(brats2018.training, test_source=brats2018.validation, output_root=output_root)
    marker = dataset / "marker.txt"
    marker.write_text("previous conversion", encoding="utf-8")
    with pytest.raises(FileExistsError, match=re.escape(str(dataset))):
        convert(brats2018.training, output_root=output_root)
    assert marker.read_text(encoding="utf-8") == "previous conversion"

    assert convert(brats2018.training, output_root=output_root, overwrite=True) == dataset
    assert not marker.exists() and list((dataset / "imagesTs").iterdir()) == []


# ----------------------------------------------------------------------------------------------------------------
# predictions back to BraTS labels

def test_labels_round_trip_back_to_brats_values() -> None:
    brats_labels = np.array([[0, 1, 2], [4, 2, 0]], dtype=np.float32)
    nnunet_labels = brats.convert_labels_to_nnunet(brats_labels, Path("seg.nii.gz"))
    np.testing.assert_array_equal(nnunet_labels, [[0, 2, 1], [3, 1, 0]])
    np.testing.assert_array_equal(brats.convert_labels_back_to_brats(nnunet_labels), brats_labels)
    with pytest.raises(ValueError, match=r"unexpected label values \[4\]"):
        brats.convert_labels_back_to_brats(np.array([0, 4]))


def test_a_prediction_folder_is_exported_in_brats_labels(brats2018: SimpleNamespace, tmp_path: Path,
                                                         output_root: Path, capsys: pytest.CaptureFixture) -> None:
    dataset = convert(brats2018.training, output_root=output_root)
    predictions = tmp_path / "predictions"
    shutil.copytree(dataset / "labelsTr", predictions)
    (predictions / "plans.json").write_text("{}", encoding="utf-8")
    assert brats.main([str(predictions), str(tmp_path / "exported")]) == 0
    assert "wrote 3 segmentation(s)" in capsys.readouterr().out
    for case in ("Brats18_2013_2_1", "Brats18_CBICA_AAB_1", "Brats18_TCIA10_103_1"):
        exported = sitk.ReadImage(str(tmp_path / "exported" / f"{case}.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(exported),
                                      _array(_case_file(brats2018.training, case, "seg")))
        assert same_geometry(exported, sitk.ReadImage(str(_case_file(brats2018.training, case, "seg"))))

    bad = predictions / "Brats18_2013_2_1.nii.gz"
    _rewrite(bad, np.full(_array(bad).shape, 7, np.uint8))
    with pytest.raises(ValueError, match=re.escape(str(bad)) + r".*unexpected label values \[7\]"):
        brats.convert_folder_back_to_brats(predictions, tmp_path / "exported_again")


# ----------------------------------------------------------------------------------------------------------------
# command line

def test_main_prints_the_summary(brats2018: SimpleNamespace, output_root: Path,
                                 capsys: pytest.CaptureFixture) -> None:
    status = main([str(brats2018.training), "--test-source", str(brats2018.validation), "--output-root",
                   str(output_root)])
    printed = capsys.readouterr().out
    assert status == 0
    assert f"Converted 3 training and 1 test case(s) into {output_root / DATASET}" in printed
    assert "channels: 0 T1, 1 T1ce, 2 T2, 3 Flair" in printed
    assert "edema (1):" in printed and "NCR/NET (2):" in printed and "enhancing tumor (3):" in printed
    assert "spacing (x, y, z) mm: min (1, 1, 1), max (1, 1, 1)" in printed
    assert "training grades: HGG 2, LGG 1" in printed


def test_main_reports_problems_and_returns_1(kit: SimpleNamespace, brats2018: SimpleNamespace, output_root: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    _break_legacy_label(brats2018.training)
    assert main([str(brats2018.training), "--output-root", str(output_root)]) == 1
    assert "--legacy-2015" in capsys.readouterr().err
    kit.assert_nothing_written(output_root)


def test_main_refuses_unknown_flags() -> None:
    with pytest.raises(SystemExit):
        main(["somewhere", "--legacy2015"])


# ----------------------------------------------------------------------------------------------------------------
# real data

@pytest.mark.skipif(not REAL_BRATS.is_dir(), reason=f"real BRATS 2015 sample data not found at {REAL_BRATS}")
def test_real_brats_2015_case_is_refused_strictly_and_converts_with_legacy_2015(kit: SimpleNamespace, tmp_path: Path,
                                                                               output_root: Path) -> None:
    """One real BRATS 2015 case (deepmedic sample), copied into tmp_path in the BraTS 2018 naming: FLAIR and T1c
    (z-scored) become ``_flair``/``_t1ce``, copies of T1c and FLAIR stand in for the missing ``_t1``/``_t2``, and
    ``OTMultiClass`` (float32 labels with the legacy label 3) becomes ``_seg``."""
    training = arrange_real_brats(tmp_path, [REAL_BRATS / "train" / "brats_2013_pat0005_1"])
    segmentation = training / "HGG" / "Brats18_2013_5_1" / "Brats18_2013_5_1_seg.nii.gz"
    with pytest.raises(ConversionError, match=re.escape(str(segmentation)) + r".*\[3\].*--legacy-2015"):
        convert(training, output_root=output_root)
    kit.assert_nothing_written(output_root)

    dataset = convert(training, legacy_2015=True, output_root=output_root)
    label = _array(dataset / "labelsTr" / "Brats18_2013_5_1.nii.gz")
    original = _array(segmentation)
    assert label.shape == (155, 240, 240)
    np.testing.assert_array_equal(label == 2, np.isin(original, (1, 3)))
    np.testing.assert_array_equal(label == 3, original == 4)
    kit.verify_dataset_integrity(dataset)
