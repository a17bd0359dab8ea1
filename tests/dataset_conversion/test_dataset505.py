"""Dataset505_MSCMRSeg: conversion of the MS-CMRSeg 2019 layout (C0/LGE/T2 on their own grids, labels 200/500/600
in the training and the later ground-truth folders), as one multichannel dataset or one case per sequence."""
from __future__ import annotations

import json
import logging
import re
import shutil
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from layout_mscmr import RELEASE_FOLDER, TRAINING_FOLDER, grid_image, image_file, label_file, render, write_mscmr

import nnunet_mm.dataset_conversion.Dataset505_MSCMRSeg as converter
from nnunet_mm.conversion import ConversionError
from nnunet_mm.dataset_conversion.Dataset505_MSCMRSeg import (align_sequence, convert, find_patients,
                                                              labels_to_mscmr, main)
from nnunet_mm.io import same_geometry

DATASET = "Dataset505_MSCMRSeg"
LABELS = {"background": 0, "LV_blood_pool": 1, "RV_blood_pool": 2, "LV_myocardium": 3}


def _read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(_read(path))


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(float).ravel(), b.astype(float).ravel())[0, 1])


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """The training release only: patients 1 and 12 have C0 labels, patient 40 has none."""
    return write_mscmr(tmp_path / "MS-CMRSeg2019", release=False)


@pytest.fixture
def released_source(tmp_path: Path) -> Path:
    """The training release plus C0LET2_gt_for_challenge19: every patient has a label for every sequence."""
    return write_mscmr(tmp_path / "MS-CMRSeg2019", release=True)


# ----------------------------------------------------------------------------------------------------------------
# multichannel mode

def test_multichannel_puts_every_sequence_on_the_c0_grid_and_unlabelled_patients_in_imagests(
        kit: SimpleNamespace, source: Path, output_root: Path) -> None:
    before = kit.tree_state(source)
    dataset = convert(source, output_root=output_root)
    assert dataset == output_root / DATASET
    assert _names(dataset / "imagesTr") == sorted(f"patient{p}_000{c}.nii.gz" for p in (1, 12) for c in range(3))
    assert _names(dataset / "labelsTr") == sorted(["patient1.nii.gz", "patient12.nii.gz"])
    assert _names(dataset / "imagesTs") == [f"patient40_000{c}.nii.gz" for c in range(3)]
    for patient, folder in ((1, "imagesTr"), (12, "imagesTr"), (40, "imagesTs")):
        c0 = _read(image_file(source, patient, "C0"))
        for channel in range(3):
            assert same_geometry(_read(dataset / folder / f"patient{patient}_000{channel}.nii.gz"), c0, tolerance=1e-4)
    np.testing.assert_array_equal(_array(dataset / "imagesTr" / "patient12_0000.nii.gz"),
                                  _array(image_file(source, 12, "C0")))
    assert same_geometry(_read(dataset / "labelsTr" / "patient12.nii.gz"), _read(image_file(source, 12, "C0")),
                         tolerance=1e-4)
    assert kit.tree_state(source) == before


def test_labels_are_mapped_500_600_200_to_1_2_3_and_back(source: Path, output_root: Path) -> None:
    dataset = convert(source, output_root=output_root, registration="none")
    original = _array(label_file(source, 12, "C0"))  # stored as .nii in this layout
    converted = _array(dataset / "labelsTr" / "patient12.nii.gz")
    for challenge_value, nnunet_value in ((0, 0), (500, 1), (600, 2), (200, 3)):
        assert (original == challenge_value).any()
        np.testing.assert_array_equal(converted == nnunet_value, original == challenge_value)
    np.testing.assert_array_equal(labels_to_mscmr(converted), original)
    with pytest.raises(ValueError, match=r"values \[7\] outside"):
        labels_to_mscmr(np.array([0, 7]))


def test_multichannel_dataset_json_names_the_sequences_and_the_registration(source: Path, output_root: Path) -> None:
    dataset_json = json.loads((convert(source, output_root=output_root) / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["channel_names"] == {"0": "C0", "1": "LGE", "2": "T2"}
    assert dataset_json["labels"] == LABELS
    assert dataset_json["numTraining"] == 2
    assert dataset_json["file_ending"] == ".nii.gz"
    assert dataset_json["nnunet_mm"] == {
        "reference_channel": 0, "phase_names": ["C0", "LGE", "T2"], "modalities": ["MR", "MR", "MR"],
        "registration": "rigid", "source": str(source.resolve()), "converter": "Dataset505_MSCMRSeg",
        "channel_acquisition": "separate"}  # sequences of separate breath-holds


@pytest.mark.parametrize("mode", ["multichannel", "per-sequence"])
def test_output_passes_nnunet_verify_dataset_integrity(kit: SimpleNamespace, source: Path, output_root: Path,
                                                       mode: str) -> None:
    kit.verify_dataset_integrity(convert(source, output_root=output_root, mode=mode))


def test_rigid_registration_aligns_lge_with_c0_better_than_scanner_coordinates(source: Path,
                                                                                output_root: Path) -> None:
    # the fixture's LGE sees the heart 3.9 mm away from where C0 sees it (another breath-hold)
    ideal = sitk.GetArrayFromImage(render("LGE", shifted=False, on=grid_image("C0"))[0])
    similarity = {}
    for registration in ("none", "rigid"):
        dataset = convert(source, output_root=output_root / registration, registration=registration)
        similarity[registration] = _ncc(ideal, _array(dataset / "imagesTr" / "patient1_0001.nii.gz"))
    assert similarity["rigid"] > similarity["none"] + 0.15, similarity


def test_a_registration_that_lowers_mutual_information_is_discarded(monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    fixed, _ = render("C0")
    moving, _ = render("LGE")
    far_off = sitk.Euler3DTransform()
    far_off.SetTranslation((25.0, -20.0, 10.0))
    monkeypatch.setattr(converter, "register", lambda *args, **kwargs: far_off)
    with caplog.at_level(logging.WARNING):
        transform, info = align_sequence(fixed, moving, fixed_file=Path("patient1_C0.nii.gz"),
                                         moving_file=Path("patient1_LGE.nii.gz"), registration="rigid",
                                         initialization="physical")
    assert transform is None and info["outcome"] == "kept scanner alignment"
    assert info["mutual_information_after"] < info["mutual_information_before"]
    assert "patient1_LGE.nii.gz: rigid registration" in caplog.text


def test_lge_reference_uses_the_released_lge_ground_truth(released_source: Path, output_root: Path) -> None:
    dataset = convert(released_source, output_root=output_root, reference="LGE", registration="none")
    assert _names(dataset / "labelsTr") == sorted(["patient1.nii.gz", "patient12.nii.gz", "patient40.nii.gz"])
    assert list((dataset / "imagesTs").iterdir()) == []
    dataset_json = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["channel_names"] == {"0": "LGE", "1": "C0", "2": "T2"}
    lge = _read(image_file(released_source, 12, "LGE"))
    assert same_geometry(_read(dataset / "imagesTr" / "patient12_0001.nii.gz"), lge, tolerance=1e-4)
    released_label = label_file(released_source, 12, "LGE")
    assert RELEASE_FOLDER in str(released_label)
    np.testing.assert_array_equal(labels_to_mscmr(_array(dataset / "labelsTr" / "patient12.nii.gz")),
                                  _array(released_label))


def test_identical_copies_of_a_file_are_accepted(source: Path, output_root: Path) -> None:
    copy = source / RELEASE_FOLDER / "C0_manual_10" / "patient1_C0_manual.nii"  # same voxels, uncompressed
    copy.parent.mkdir(parents=True)
    sitk.WriteImage(_read(label_file(source, 1, "C0")), str(copy))
    patients, problems = find_patients(source)
    assert problems == [] and [p.patient for p in patients] == [1, 12, 40]
    # C0LET2_gt_for_challenge19 sorts before C0LET2_nii45_for_challenge19: its copy is the one used
    assert patients[0].labels["C0"] == copy
    assert _names(convert(source, output_root=output_root, registration="none") / "labelsTr") == \
        sorted(["patient1.nii.gz", "patient12.nii.gz"])


# ----------------------------------------------------------------------------------------------------------------
# per-sequence mode

def test_per_sequence_mode_writes_one_case_per_sequence_image_with_folds_grouped_by_patient(
        released_source: Path, output_root: Path) -> None:
    dataset = convert(released_source, output_root=output_root, mode="per-sequence")
    cases = [f"patient{p}_{s}" for p in (1, 12, 40) for s in ("C0", "LGE", "T2")]
    assert _names(dataset / "imagesTr") == sorted(f"{c}_0000.nii.gz" for c in cases)
    assert _names(dataset / "labelsTr") == sorted(f"{c}.nii.gz" for c in cases)
    for patient in (1, 12, 40):
        for sequence in ("C0", "LGE", "T2"):
            written = _read(dataset / "imagesTr" / f"patient{patient}_{sequence}_0000.nii.gz")
            original = _read(image_file(released_source, patient, sequence))
            assert same_geometry(written, original, tolerance=1e-4)
            np.testing.assert_array_equal(sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(original))
    dataset_json = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["channel_names"] == {"0": "MR"}
    assert dataset_json["numTraining"] == 9
    block = dataset_json["nnunet_mm"]
    assert block["per_case_modality"]["patient12_LGE"] == "LGE" and len(block["per_case_modality"]) == 9
    assert block["modalities"] == ["MR"]
    assert "channel_acquisition" not in block  # one channel per case
    splits = json.loads((dataset / "splits_final.json").read_text(encoding="utf-8"))
    assert len(splits) == 3
    for fold in splits:
        train_patients = {case.split("_")[0] for case in fold["train"]}
        val_patients = {case.split("_")[0] for case in fold["val"]}
        assert not train_patients & val_patients and len(val_patients) == 1
        assert sorted(fold["train"] + fold["val"]) == sorted(cases)


def test_per_sequence_mode_puts_unlabelled_sequences_in_imagests(source: Path, output_root: Path) -> None:
    dataset = convert(source, output_root=output_root, mode="per-sequence")
    assert _names(dataset / "imagesTs") == sorted(["patient12_LGE_0000.nii.gz", "patient40_C0_0000.nii.gz",
                                                   "patient40_LGE_0000.nii.gz", "patient40_T2_0000.nii.gz"])
    assert _names(dataset / "labelsTr") == sorted(["patient1_C0.nii.gz", "patient1_LGE.nii.gz", "patient1_T2.nii.gz",
                                                   "patient12_C0.nii.gz", "patient12_T2.nii.gz"])


# ----------------------------------------------------------------------------------------------------------------
# bad input: every problem is reported with its file, nothing is written, the input is left alone

def _break_duplicate(source: Path) -> tuple[Path, str]:
    original = label_file(source, 1, "C0")
    label = _read(original)
    label[5, 5, 2] = 600
    other = source / RELEASE_FOLDER / "C0_manual_10" / "patient1_C0_manual.nii.gz"
    other.parent.mkdir(parents=True)
    sitk.WriteImage(label, str(other))
    return original, f"duplicate patient1 C0 label with different content than {other} (voxel values differ)"


def _break_missing_channel(source: Path) -> tuple[Path, str]:
    image_file(source, 12, "T2").unlink()
    return image_file(source, 12, "T2"), "missing channel file: patient12 has the sequences ['C0', 'LGE'] but no T2"


def _break_label_value(source: Path) -> tuple[Path, str]:
    path = label_file(source, 1, "C0")
    label = _read(path)
    label[3, 3, 3] = 300
    sitk.WriteImage(label, str(path))
    return path, "unknown label values [300] (found [0, 200, 300, 500, 600]); allowed are [0, 200, 500, 600]"


def _break_label_slices(source: Path) -> tuple[Path, str]:
    path = label_file(source, 12, "C0")
    sitk.WriteImage(_read(path)[:, :, 1:], str(path))
    return path, "the slice counts or matrix sizes differ"


def _break_label_origin(source: Path) -> tuple[Path, str]:
    path = label_file(source, 1, "C0")
    label = _read(path)
    label.SetOrigin(tuple(v + 4.0 for v in label.GetOrigin()))
    sitk.WriteImage(label, str(path))
    return path, "label is not on the grid of its image"


def _break_label_without_image(source: Path) -> tuple[Path, str]:
    folder = source / TRAINING_FOLDER / "c0gt"
    shutil.copy(label_file(source, 1, "C0"), folder / "patient7_C0_manual.nii.gz")
    return folder / "patient7_C0_manual.nii.gz", "label without its image; expected patient7_C0.nii.gz"


def _break_unreadable(source: Path) -> tuple[Path, str]:
    path = image_file(source, 40, "LGE")
    path.write_bytes(b"\x1f\x8b not a gzip stream")
    return path, "cannot read image"


@pytest.mark.parametrize("breaker", [_break_duplicate, _break_missing_channel, _break_label_value, _break_label_slices,
                                     _break_label_origin, _break_label_without_image, _break_unreadable])
def test_bad_input_is_refused_naming_the_file_and_nothing_is_written(kit: SimpleNamespace, source: Path,
                                                                     output_root: Path, breaker) -> None:
    offending, message = breaker(source)
    with kit.refused(source, output_root) as caught:
        convert(source, output_root=output_root, registration="none")
    assert any(line.startswith(str(offending)) and message in line for line in caught.value.problems), \
        caught.value.problems


def test_all_problems_are_reported_together(source: Path, output_root: Path) -> None:
    offending = [_break_duplicate(source)[0], _break_label_slices(source)[0], _break_unreadable(source)[0]]
    with pytest.raises(ConversionError) as caught:
        convert(source, output_root=output_root)
    assert len(caught.value.problems) == 3
    for path in offending:
        assert str(path) in str(caught.value)


def test_a_reference_without_any_label_and_an_empty_source_are_refused(kit: SimpleNamespace, source: Path,
                                                                       tmp_path: Path, output_root: Path) -> None:
    shutil.rmtree(source / TRAINING_FOLDER / "lgegt")
    with pytest.raises(ConversionError, match="no patient has a LGE label"):
        convert(source, output_root=output_root, reference="LGE")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match="no MS-CMRSeg files found"):
        convert(tmp_path / "empty", output_root=output_root)
    kit.assert_nothing_written(output_root)


def test_zip_sources_work_and_escaping_members_are_refused(source: Path, tmp_path: Path, output_root: Path) -> None:
    archive = Path(shutil.make_archive(str(tmp_path / "mscmr"), "zip", root_dir=source.parent, base_dir=source.name))
    dataset = convert(archive, output_root=output_root, registration="none")
    assert _names(dataset / "labelsTr") == sorted(["patient1.nii.gz", "patient12.nii.gz"])

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as handle:
        handle.writestr("c0t2lge/patient1_C0.nii.gz", b"x")
        handle.writestr("../../c0gt/patient1_C0_manual.nii.gz", b"x")
    with pytest.raises(ValueError, match=re.escape(str(evil)) + ".*path escaping the input"):
        convert(evil, output_root=tmp_path / "other_raw")
    assert not (tmp_path / "other_raw").exists() and not (tmp_path / "c0gt").exists()


# ----------------------------------------------------------------------------------------------------------------
# existing output, arguments, command line

def test_an_existing_dataset_is_refused_without_overwrite_and_replaced_with_it(source: Path,
                                                                                output_root: Path) -> None:
    dataset = convert(source, output_root=output_root, registration="none")
    marker = dataset / "marker.txt"
    marker.write_text("previous conversion", encoding="utf-8")
    with pytest.raises(FileExistsError, match=re.escape(str(dataset))):
        convert(source, output_root=output_root, registration="none")
    assert marker.read_text(encoding="utf-8") == "previous conversion"
    assert convert(source, output_root=output_root, mode="per-sequence", overwrite=True) == dataset
    assert not marker.exists() and (dataset / "splits_final.json").is_file()


def test_invalid_options_list_the_valid_values(source: Path, output_root: Path) -> None:
    with pytest.raises(ValueError, match=r"reference must be one of \['C0', 'LGE', 'T2'\], got 'DE'"):
        convert(source, output_root=output_root, reference="DE")
    with pytest.raises(ValueError, match=r"mode must be one of \['multichannel', 'per-sequence'\]"):
        convert(source, output_root=output_root, mode="stacked")
    with pytest.raises(SystemExit):
        main([str(source), "--registration", "bspline"])


def test_main_prints_the_summary(source: Path, output_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(source), "--output-root", str(output_root), "--reference", "C0", "--registration", "rigid"]) == 0
    printed = capsys.readouterr().out
    assert f"Converted 2 training and 1 test case(s) into {output_root / DATASET}" in printed
    assert "channels: 0 C0, 1 LGE, 2 T2" in printed
    assert "LV_blood_pool (1):" in printed and "LV_myocardium (3):" in printed
    assert "spacing (x, y, z) mm: min (1.5, 1.5, 8), max (1.5, 1.5, 8)" in printed
    assert "registration rigid: " in printed


def test_nnunet_mm_convert_runs_this_converter(source: Path, output_root: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    from nnunet_mm.cli.main import main as cli_main

    assert cli_main(["convert", "505", str(source), "--output-root", str(output_root), "--mode", "per-sequence"]) == 0
    assert "5 training and 4 test case(s)" in capsys.readouterr().out
