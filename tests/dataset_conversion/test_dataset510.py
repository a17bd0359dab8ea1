"""Dataset510_LiTS: conversion of the LiTS layout (volume-N.nii / segmentation-N.nii in two training batches,
test-volume-N.nii), with geometry kept exactly."""
from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mm.conversion import ConversionError
from nnunet_mm.dataset_conversion.Dataset510_LiTS import convert, find_cases, main
from nnunet_mm.phantom import write_lits

DATASET = "Dataset510_LiTS"
# challenge number of each generated phantom case, and the folder it goes to (batch 1 holds 0..27, batch 2 28..130)
TRAINING_NUMBERS = {2: "Training Batch 1", 10: "Training Batch 1", 28: "Training Batch 2", 100: "Training Batch 2"}
TEST_FOLDER = "LITS-Challenge-Test-Data"
# LiTS volumes come with flipped and oblique direction cosines; each of these is given to one case
_C, _S = np.cos(np.deg2rad(20.0)), np.sin(np.deg2rad(20.0))
DIRECTIONS = {10: (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0),
              28: (_C, -_S, 0.0, _S, _C, 0.0, 0.0, 0.0, 1.0),
              100: (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)}
ORIGINS = {10: (172.5, 168.0, -412.0), 28: (-20.0, 35.5, 110.25), 100: (-150.0, -160.0, 90.0)}


def write_lits_layout(root: Path) -> Path:
    """Four training cases in the two batch folders (uncompressed .nii, numbers 2, 10, 28, 100) and one test
    volume, from :func:`nnunet_mm.phantom.write_lits`; three cases get non-identity directions."""
    generated = root.parent / f"{root.name}_generated"
    write_lits(generated, num_cases=len(TRAINING_NUMBERS) + 1, seed=3, shape_zyx=(12, 32, 32),
               spacing_zyx_mm=(2.5, 0.8, 0.8))
    for index, (number, folder) in enumerate(TRAINING_NUMBERS.items()):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for kind in ("volume", "segmentation"):
            image = sitk.ReadImage(str(generated / f"{kind}-{index}.nii"))
            if number in DIRECTIONS:
                image.SetDirection(DIRECTIONS[number])
                image.SetOrigin(ORIGINS[number])
            sitk.WriteImage(image, str(root / folder / f"{kind}-{number}.nii"))
    (root / TEST_FOLDER).mkdir()
    shutil.move(generated / f"volume-{len(TRAINING_NUMBERS)}.nii", root / TEST_FOLDER / "test-volume-0.nii")
    shutil.rmtree(generated)
    return root


def _training_file(source: Path, kind: str, number: int) -> Path:
    return source / TRAINING_NUMBERS[number] / f"{kind}-{number}.nii"


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_lits_layout(tmp_path / "LiTS")


@pytest.fixture
def dataset(source: Path, output_root: Path) -> Path:
    return convert(source, output_root=output_root)


# ----------------------------------------------------------------------------------------------------------------
# good input

def test_training_and_test_volumes_get_lits_ids_and_the_input_is_untouched(kit: SimpleNamespace, source: Path,
                                                                           output_root: Path) -> None:
    before = kit.tree_state(source)
    dataset = convert(source, output_root=output_root)
    assert dataset == output_root / DATASET
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == \
        sorted(f"lits_{n}_0000.nii.gz" for n in TRAINING_NUMBERS)
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == \
        sorted(f"lits_{n}.nii.gz" for n in TRAINING_NUMBERS)
    assert [p.name for p in (dataset / "imagesTs").iterdir()] == ["lits_test_0_0000.nii.gz"]
    assert kit.tree_state(source) == before


def test_geometry_and_voxels_are_preserved_exactly_including_flipped_and_oblique_directions(source: Path,
                                                                                          dataset: Path) -> None:
    for number in TRAINING_NUMBERS:
        for kind, written in (("volume", dataset / "imagesTr" / f"lits_{number}_0000.nii.gz"),
                              ("segmentation", dataset / "labelsTr" / f"lits_{number}.nii.gz")):
            original = sitk.ReadImage(str(_training_file(source, kind, number)))
            converted = sitk.ReadImage(str(written))
            np.testing.assert_allclose(converted.GetOrigin(), original.GetOrigin(), atol=1e-5)
            np.testing.assert_allclose(converted.GetSpacing(), original.GetSpacing(), atol=1e-6)
            np.testing.assert_allclose(converted.GetDirection(), original.GetDirection(), atol=1e-6)
            np.testing.assert_array_equal(sitk.GetArrayFromImage(converted), sitk.GetArrayFromImage(original))
            assert converted.GetPixelID() == original.GetPixelID()
        if number in DIRECTIONS:
            np.testing.assert_allclose(converted.GetDirection(), DIRECTIONS[number], atol=1e-6)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(dataset / "labelsTr" / "lits_2.nii.gz")))
    assert set(np.unique(labels)) == {0, 1, 2}


def test_dataset_json_has_one_ct_channel_and_the_lits_labels(source: Path, dataset: Path) -> None:
    dataset_json = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["channel_names"] == {"0": "CT"}
    assert dataset_json["labels"] == {"background": 0, "liver": 1, "tumor": 2}
    assert dataset_json["numTraining"] == 4
    assert dataset_json["file_ending"] == ".nii.gz"
    assert dataset_json["nnunet_mm"] == {"reference_channel": 0, "phase_names": ["pv"],
                                         "source": str(source.resolve()), "converter": "Dataset510_LiTS"}


def test_output_passes_nnunet_verify_dataset_integrity(kit: SimpleNamespace, dataset: Path) -> None:
    kit.verify_dataset_integrity(dataset)


def test_cases_are_found_in_numeric_order_across_batch_folders(source: Path) -> None:
    cases, problems = find_cases(source)
    assert problems == []
    assert [case.case_id for case in cases] == ["lits_2", "lits_10", "lits_28", "lits_100", "lits_test_0"]
    assert cases[1].segmentation == _training_file(source, "segmentation", 10)
    assert not cases[1].volume.read_bytes().startswith(b"\x1f\x8b")  # uncompressed .nii, as in the challenge


def test_compressed_copies_and_a_zip_archive_are_accepted(source: Path, tmp_path: Path, output_root: Path) -> None:
    volume = _training_file(source, "volume", 2)
    sitk.WriteImage(sitk.ReadImage(str(volume)), str(volume.with_name("volume-2.nii.gz")), useCompression=True)
    volume.unlink()
    archive = Path(shutil.make_archive(str(tmp_path / "LiTS"), "zip", root_dir=source.parent, base_dir=source.name))
    shutil.rmtree(source)
    dataset = convert(archive, output_root=output_root)
    assert len(list((dataset / "imagesTr").iterdir())) == 4
    assert json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["source"] == str(archive.resolve())


# ----------------------------------------------------------------------------------------------------------------
# bad input: every problem is reported with its file, nothing is written, the input is left alone

def _break_missing_segmentation(source: Path) -> tuple[Path, str]:
    segmentation = _training_file(source, "segmentation", 28)
    segmentation.unlink()
    return _training_file(source, "volume", 28), f"training volume without segmentation; expected {segmentation}"


def _break_orphan_segmentation(source: Path) -> tuple[Path, str]:
    _training_file(source, "volume", 10).unlink()
    return _training_file(source, "segmentation", 10), "segmentation without a volume"


def _break_label_value(source: Path) -> tuple[Path, str]:
    path = _training_file(source, "segmentation", 2)
    image = sitk.ReadImage(str(path))
    image[1, 1, 1] = 3
    sitk.WriteImage(image, str(path))
    return path, r"unknown label values [3] (found [0, 1, 2, 3]); allowed are [0, 1, 2]"


def _break_segmentation_spacing(source: Path) -> tuple[Path, str]:
    path = _training_file(source, "segmentation", 100)
    image = sitk.ReadImage(str(path))
    image.SetSpacing((0.8, 0.8, 3.0))
    sitk.WriteImage(image, str(path))
    return path, "segmentation is not on the grid of"


def _break_segmentation_slices(source: Path) -> tuple[Path, str]:
    path = _training_file(source, "segmentation", 2)
    sitk.WriteImage(sitk.ReadImage(str(path))[:, :, :-2], str(path))
    return path, "(size differ)"


def _break_duplicate(source: Path) -> tuple[Path, str]:
    for kind in ("volume", "segmentation"):
        shutil.copy(_training_file(source, kind, 28), source / "Training Batch 1" / f"{kind}-28.nii")
    return source / "Training Batch 2" / "volume-28.nii", "duplicate case id 'lits_28'"


def _break_unreadable(source: Path) -> tuple[Path, str]:
    path = source / TEST_FOLDER / "test-volume-0.nii"
    path.write_bytes(b"not a nifti file at all")
    return path, "cannot read image"


@pytest.mark.parametrize("breaker", [_break_missing_segmentation, _break_orphan_segmentation, _break_label_value,
                                     _break_segmentation_spacing, _break_segmentation_slices, _break_duplicate,
                                     _break_unreadable])
def test_bad_input_is_refused_naming_the_file_and_nothing_is_written(kit: SimpleNamespace, source: Path,
                                                                     output_root: Path, breaker) -> None:
    offending, message = breaker(source)
    with kit.refused(source, output_root) as caught:
        convert(source, output_root=output_root)
    assert any(str(offending) in line and message in line for line in caught.value.problems), caught.value.problems


def test_all_problems_are_reported_together(source: Path, output_root: Path) -> None:
    offending = [_break_missing_segmentation(source)[0], _break_label_value(source)[0], _break_unreadable(source)[0]]
    with pytest.raises(ConversionError) as caught:
        convert(source, output_root=output_root)
    assert len(caught.value.problems) == 3
    for path in offending:
        assert str(path) in str(caught.value)


def test_an_empty_source_is_refused(kit: SimpleNamespace, tmp_path: Path, output_root: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match="no LiTS files found"):
        convert(tmp_path / "empty", output_root=output_root)
    kit.assert_nothing_written(output_root)


def test_an_archive_member_escaping_the_input_is_refused(kit: SimpleNamespace, tmp_path: Path,
                                                         output_root: Path) -> None:
    archive = tmp_path / "lits.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("Training Batch 1/volume-0.nii", b"x")
        handle.writestr("../outside/segmentation-0.nii", b"x")
    with pytest.raises(ValueError, match=re.escape(str(archive)) + ".*path escaping the input"):
        convert(archive, output_root=output_root)
    kit.assert_nothing_written(output_root)
    assert not (tmp_path / "outside").exists()


# ----------------------------------------------------------------------------------------------------------------
# existing output and command line

def test_an_existing_dataset_is_refused_without_overwrite_and_replaced_with_it(source: Path, dataset: Path,
                                                                                output_root: Path) -> None:
    marker = dataset / "marker.txt"
    marker.write_text("previous conversion", encoding="utf-8")
    with pytest.raises(FileExistsError, match=re.escape(str(dataset))):
        convert(source, output_root=output_root)
    assert marker.read_text(encoding="utf-8") == "previous conversion"
    assert convert(source, output_root=output_root, overwrite=True) == dataset
    assert not marker.exists() and (dataset / "dataset.json").is_file()


def test_main_prints_the_summary(source: Path, output_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(source), "--output-root", str(output_root)]) == 0
    printed = capsys.readouterr().out
    assert f"Converted 4 training and 1 test case(s) into {output_root / DATASET}" in printed
    assert "channels: 0 CT" in printed and "liver (1):" in printed and "tumor (2):" in printed
    assert "spacing (x, y, z) mm: min (0.8, 0.8, 2.5), max (0.8, 0.8, 2.5)" in printed


def test_nnunet_mm_convert_runs_this_converter_and_reports_problems(kit: SimpleNamespace, source: Path,
                                                                    output_root: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    from nnunet_mm.cli.main import main as cli_main

    _break_missing_segmentation(source)
    assert cli_main(["convert", "510", str(source), "--output-root", str(output_root)]) == 1
    assert "training volume without segmentation" in capsys.readouterr().err
    kit.assert_nothing_written(output_root)
