"""Dataset504_AMOS: AMOS 2022 CT and MRI (unpaired) in one single-channel dataset, every case reoriented to LPS."""
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
from layout_unpaired import CORONAL_DIRECTION, amos_label, ct_image, mr_image, write_amos

from nnunet_mm.settings import read_settings
from nnunet_mm.dataset_conversion.Dataset504_AMOS import LABEL_NAMES, ConversionError, convert, main

DATASET = "Dataset504_AMOS"
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def amos_source(tmp_path: Path) -> Path:
    """A folder holding ``amos22/``: Tr 0001, 0002, 0507 (coronal MRI); Va 0008, 0508; Ts 0003, 0509."""
    write_amos(tmp_path / "source")
    return tmp_path / "source"


# ----------------------------------------------------------------------------------------------------------------
# good input

def test_cases_get_nnunet_names_and_validation_is_merged_into_training(kit: SimpleNamespace, amos_source: Path,
                                                                      output_root: Path) -> None:
    before = kit.tree_state(amos_source)
    dataset = convert(amos_source, output_root=output_root)

    assert dataset == output_root / DATASET
    training = ["amos_0001", "amos_0002", "amos_0008", "amos_0507", "amos_0508"]
    assert _names(dataset / "imagesTr") == [f"{case}_0000.nii.gz" for case in training]
    assert _names(dataset / "labelsTr") == [f"{case}.nii.gz" for case in training]
    assert _names(dataset / "imagesTs") == ["amos_0003_0000.nii.gz", "amos_0509_0000.nii.gz"]
    assert not (dataset / "labelsTs").exists()
    # axial cases: voxel values unchanged, labels as uint8
    np.testing.assert_array_equal(_array(dataset / "imagesTr" / "amos_0001_0000.nii.gz"), ct_image(1))
    np.testing.assert_array_equal(_array(dataset / "imagesTr" / "amos_0508_0000.nii.gz"), mr_image(508))
    label = sitk.ReadImage(str(dataset / "labelsTr" / "amos_0008.nii.gz"))
    assert label.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), amos_label(8))
    assert kit.tree_state(amos_source) == before


def test_dataset_json_names_one_z_score_channel_and_records_every_case_modality(amos_source: Path,
                                                                               output_root: Path) -> None:
    dataset = convert(amos_source / "amos22", output_root=output_root)  # the release folder itself works too
    dataset_json = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))

    assert dataset_json["channel_names"] == {"0": "either_CT_or_MR"}
    assert dataset_json["labels"] == {"background": 0, **{name: i for i, name in enumerate(LABEL_NAMES, start=1)}}
    assert len(dataset_json["labels"]) == 16 and dataset_json["labels"]["prostate/uterus"] == 15
    assert dataset_json["numTraining"] == 5 and dataset_json["file_ending"] == ".nii.gz"
    assert "overwrite_image_reader_writer" not in dataset_json  # files are reoriented, SimpleITKIO reads them
    block = dataset_json["nnunet_mm"]
    assert block["modalities"] == {"0": "CT|MR"}
    assert block["per_case_modality"] == {"amos_0001": "CT", "amos_0002": "CT", "amos_0003": "CT", "amos_0008": "CT",
                                          "amos_0507": "MR", "amos_0508": "MR", "amos_0509": "MR"}
    assert block["converter"] == DATASET and "channel_acquisition" not in block  # one channel
    assert any("reoriented 1 case(s) acquired as LIP" in note for note in block["notes"])
    assert "'CC-BY-SA 4.0'" in dataset_json["licence"] and dataset_json["release"] == "1.0 01/05/2022"
    settings = read_settings(dataset_json, str(dataset / "dataset.json"))  # the block is valid
    assert settings.description.per_case_modality == block["per_case_modality"]
    assert settings.description.modalities == {0: "CT|MR"}


def test_a_coronal_mri_comes_out_axial_and_its_label_still_covers_the_same_anatomy(amos_source: Path,
                                                                                   output_root: Path) -> None:
    source_image = sitk.ReadImage(str(amos_source / "amos22" / "imagesTr" / "amos_0507.nii.gz"))
    source_label = sitk.ReadImage(str(amos_source / "amos22" / "labelsTr" / "amos_0507.nii.gz"))
    assert source_image.GetDirection() == CORONAL_DIRECTION and source_image.GetSize() == (32, 12, 32)

    dataset = convert(amos_source, output_root=output_root)
    image = sitk.ReadImage(str(dataset / "imagesTr" / "amos_0507_0000.nii.gz"))
    label = sitk.ReadImage(str(dataset / "labelsTr" / "amos_0507.nii.gz"))

    np.testing.assert_allclose(image.GetDirection(), IDENTITY)
    assert image.GetSize() == (32, 32, 12) and image.GetSpacing() == (2.5, 2.5, 3.0)
    for name in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(label, name)() == getattr(image, name)()
    # the same anatomy: the source label resampled (in scanner coordinates) onto the output grid equals the output
    resampled = sitk.Resample(source_label, label, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(resampled), sitk.GetArrayFromImage(label))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), amos_label(507))
    resampled_image = sitk.Resample(source_image, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(resampled_image), sitk.GetArrayFromImage(image))


def test_modality_option_keeps_one_modality_and_names_its_channel(amos_source: Path, tmp_path: Path) -> None:
    ct = convert(amos_source, output_root=tmp_path / "ct", modality="ct")
    ct_json = json.loads((ct / "dataset.json").read_text(encoding="utf-8"))
    assert ct_json["channel_names"] == {"0": "CT"} and ct_json["numTraining"] == 3
    assert ct_json["nnunet_mm"]["modalities"] == {"0": "CT"}
    assert _names(ct / "imagesTs") == ["amos_0003_0000.nii.gz"]

    mr = convert(amos_source, output_root=tmp_path / "mr", modality="MR")
    mr_json = json.loads((mr / "dataset.json").read_text(encoding="utf-8"))
    assert mr_json["channel_names"] == {"0": "MR"}
    assert _names(mr / "labelsTr") == ["amos_0507.nii.gz", "amos_0508.nii.gz"]
    assert set(mr_json["nnunet_mm"]["per_case_modality"].values()) == {"MR"}


def test_without_include_validation_the_validation_cases_become_labelled_test_cases(amos_source: Path,
                                                                                   output_root: Path) -> None:
    dataset = convert(amos_source, output_root=output_root, include_validation=False)
    assert _names(dataset / "labelsTr") == ["amos_0001.nii.gz", "amos_0002.nii.gz", "amos_0507.nii.gz"]
    assert _names(dataset / "imagesTs") == [f"amos_{n}_0000.nii.gz" for n in ("0003", "0008", "0508", "0509")]
    assert _names(dataset / "labelsTs") == ["amos_0008.nii.gz", "amos_0508.nii.gz"]
    assert json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["numTraining"] == 3


def test_output_passes_nnunet_verify_dataset_integrity(kit: SimpleNamespace, amos_source: Path,
                                                       output_root: Path) -> None:
    kit.verify_dataset_integrity(convert(amos_source, output_root=output_root))


def test_zip_archive_of_the_release_is_converted(amos_source: Path, tmp_path: Path, output_root: Path) -> None:
    archive = tmp_path / "amos22.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for file in sorted((amos_source / "amos22").rglob("*")):
            handle.write(file, file.relative_to(amos_source))
    dataset = convert(archive, output_root=output_root)
    assert len(list((dataset / "imagesTr").iterdir())) == 5
    assert json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["source"] == str(archive.resolve())


# ----------------------------------------------------------------------------------------------------------------
# bad input: every problem is reported with its file, nothing is written, the input is left alone

def _break_missing_label(release: Path) -> tuple[Path, str]:
    (release / "labelsTr" / "amos_0002.nii.gz").unlink()
    return release / "imagesTr" / "amos_0002.nii.gz", r"no label; expected .*labelsTr/amos_0002\.nii\.gz"


def _break_label_value(release: Path) -> tuple[Path, str]:
    path = release / "labelsVa" / "amos_0008.nii.gz"
    label = sitk.ReadImage(str(path))
    label[3, 3, 3] = 16
    sitk.WriteImage(label, str(path), useCompression=True)
    return path, r"unknown label values \[16\] .*AMOS labels are 0 background, 1 spleen"


def _break_label_grid(release: Path) -> tuple[Path, str]:
    path = release / "labelsTr" / "amos_0001.nii.gz"
    label = sitk.ReadImage(str(path))
    label.SetOrigin((0.0, 0.0, 0.0))
    sitk.WriteImage(label, str(path), useCompression=True)
    return path, r"label is not on the grid of its image .*amos_0001\.nii\.gz \(origin differ\)"


def _break_unreadable(release: Path) -> tuple[Path, str]:
    path = release / "imagesTs" / "amos_0509.nii.gz"
    path.write_bytes(b"\x1f\x8b not a gzip stream")
    return path, "cannot read image"


def _break_duplicate(release: Path) -> tuple[Path, str]:
    shutil.copy(release / "imagesTr" / "amos_0001.nii.gz", release / "imagesVa" / "amos_0001.nii.gz")
    shutil.copy(release / "labelsTr" / "amos_0001.nii.gz", release / "labelsVa" / "amos_0001.nii.gz")
    return release / "imagesVa" / "amos_0001.nii.gz", r"duplicate case id 'amos_0001'"


def _break_label_without_image(release: Path) -> tuple[Path, str]:
    shutil.copy(release / "labelsVa" / "amos_0008.nii.gz", release / "labelsVa" / "amos_0011.nii.gz")
    return release / "labelsVa" / "amos_0011.nii.gz", r"label without image; expected .*imagesVa/amos_0011"


def _break_file_name(release: Path) -> tuple[Path, str]:
    shutil.copy(release / "imagesTs" / "amos_0003.nii.gz", release / "imagesTs" / "amos_3.nii.gz")
    return release / "imagesTs" / "amos_3.nii.gz", "unexpected file name in imagesTs/"


def _break_escaping_link(release: Path) -> tuple[Path, str]:
    outside = release.parent.parent / "elsewhere.nii.gz"
    shutil.copy(release / "imagesTs" / "amos_0003.nii.gz", outside)
    (release / "imagesTs" / "amos_0004.nii.gz").symlink_to(outside)
    return release / "imagesTs" / "amos_0004.nii.gz", r"outside the input folder .*\(path escaping the input\)"


@pytest.mark.parametrize("breaker", [_break_missing_label, _break_label_value, _break_label_grid, _break_unreadable,
                                     _break_duplicate, _break_label_without_image, _break_file_name,
                                     _break_escaping_link])
def test_bad_input_is_reported_with_the_file_and_nothing_is_written(kit: SimpleNamespace, amos_source: Path,
                                                                    output_root: Path, breaker) -> None:
    offending, message = breaker(amos_source / "amos22")
    with kit.refused(amos_source, output_root, match=re.escape(str(offending)) + ".*" + message):
        convert(amos_source, output_root=output_root)


def test_every_problem_is_reported_at_once(amos_source: Path, output_root: Path) -> None:
    release = amos_source / "amos22"
    breakers = (_break_missing_label, _break_label_value, _break_unreadable, _break_file_name)
    offending = [breaker(release)[0] for breaker in breakers]
    with pytest.raises(ConversionError) as caught:
        convert(amos_source, output_root=output_root)
    assert len(caught.value.problems) == len(breakers)
    for path in offending:
        assert str(path) in str(caught.value)


def test_problems_of_the_unselected_modality_do_not_block_a_single_modality_dataset(amos_source: Path,
                                                                                    output_root: Path) -> None:
    (amos_source / "amos22" / "labelsVa" / "amos_0508.nii.gz").unlink()
    with pytest.raises(ConversionError, match="amos_0508"):
        convert(amos_source, output_root=output_root)
    assert (convert(amos_source, output_root=output_root, modality="ct") / "imagesTr").is_dir()


def test_an_empty_input_folder_is_reported(kit: SimpleNamespace, tmp_path: Path, output_root: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match="the input folder is empty"):
        convert(tmp_path / "empty", output_root=output_root)
    kit.assert_nothing_written(output_root)


def test_an_archive_member_escaping_the_extraction_folder_is_refused(kit: SimpleNamespace, amos_source: Path,
                                                                     tmp_path: Path, output_root: Path) -> None:
    archive = tmp_path / "amos22.tar"
    with tarfile.open(archive, "w") as handle:
        handle.add(amos_source / "amos22", arcname="amos22")
        handle.add(amos_source / "amos22" / "dataset.json", arcname="../evil.json")
    with pytest.raises(ValueError, match=re.escape(str(archive)) + ".*path escaping the input.*evil"):
        convert(archive, output_root=output_root)
    kit.assert_nothing_written(output_root)
    assert not (tmp_path / "evil.json").exists()


# ----------------------------------------------------------------------------------------------------------------
# existing output, arguments, command line

def test_an_existing_dataset_is_refused_without_overwrite_and_replaced_with_it(amos_source: Path,
                                                                                output_root: Path) -> None:
    dataset = convert(amos_source, output_root=output_root)
    marker = dataset / "marker.txt"
    marker.write_text("previous conversion", encoding="utf-8")
    with pytest.raises(FileExistsError, match=re.escape(str(dataset))):
        convert(amos_source, output_root=output_root)
    assert marker.read_text(encoding="utf-8") == "previous conversion"
    assert convert(amos_source, output_root=output_root, modality="mr", overwrite=True) == dataset
    assert not marker.exists() and _names(dataset / "imagesTs") == ["amos_0509_0000.nii.gz"]
    assert _names(output_root) == [DATASET]


def test_an_unknown_modality_lists_the_valid_ones(amos_source: Path, output_root: Path) -> None:
    with pytest.raises(ValueError, match=r"modality must be one of \['all', 'ct', 'mr'\], got 'pet'"):
        convert(amos_source, output_root=output_root, modality="pet")


def test_main_prints_the_summary(amos_source: Path, output_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(amos_source), "--output-root", str(output_root), "--no-include-validation"]) == 0
    printed = capsys.readouterr().out
    assert f"Converted 3 training and 4 test case(s) into {output_root / DATASET}" in printed
    assert "channels: 0 either_CT_or_MR" in printed
    assert "spleen (1):" in printed and "prostate/uterus (15): 0" in printed
    assert "spacing (x, y, z) mm: min (2.5, 2.5, 3), max (2.5, 2.5, 3)" in printed
    assert "modalities: 4 CT, 3 MR case(s)" in printed


def test_main_reports_problems_and_returns_1(kit: SimpleNamespace, amos_source: Path, output_root: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    _break_missing_label(amos_source / "amos22")
    assert main([str(amos_source), "--output-root", str(output_root)]) == 1
    assert "amos_0002.nii.gz: no label" in capsys.readouterr().err
    kit.assert_nothing_written(output_root)
