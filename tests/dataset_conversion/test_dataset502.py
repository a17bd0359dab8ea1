"""Dataset502_CHAOS_MR: CHAOS MR (T1-DUAL in/opposed phase, T2-SPIR) in the official layout → nnU-Net raw."""
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
from layout_chaos import (T1_SPACING_ZYX_MM, T2_SPACING_ZYX_MM, MrTruth, chaos_test_sets_dir, train_sets_dir,
                          write_mr_patient)

from nnunet_mm.conversion import ConversionError
from nnunet_mm.dataset_conversion.Dataset502_CHAOS_MR import convert, convert_with_summary, main
from nnunet_mm.io import same_geometry

DATASET = "Dataset502_CHAOS_MR"
T2_DATASET = "Dataset512_CHAOS_MR_T2"
LABELS = {"background": 0, "liver": 1, "right_kidney": 2, "left_kidney": 3, "spleen": 4}


@pytest.fixture
def chaos(tmp_path: Path) -> tuple[Path, dict[str, MrTruth]]:
    """``CHAOS_Train_Sets`` with two MR patients: file numbers rising with the slice position (1) and falling (2)."""
    root = tmp_path / "CHAOS_Train_Sets"
    mr = train_sets_dir(tmp_path) / "MR"
    truths = {"1": write_mr_patient(mr, "1", seed=1, file_order="ascending"),
              "2": write_mr_patient(mr, "2", seed=2, file_order="descending")}
    return root, truths


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(float).ravel() - a.mean(), b.astype(float).ravel() - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


# ----------------------------------------------------------------------------------------------------------------
# good input

def test_the_fixture_reproduces_per_file_series_uids(chaos: tuple[Path, dict]) -> None:
    in_phase = train_sets_dir(chaos[0].parent) / "MR" / "1" / "T1DUAL" / "DICOM_anon" / "InPhase"
    assert len(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(in_phase))) == 12  # GDCM sees one "series" per file


def test_channels_and_labels_land_on_the_organs_whatever_way_the_file_names_run(
        kit: SimpleNamespace, chaos: tuple[Path, dict[str, MrTruth]], output_root: Path) -> None:
    source, truths = chaos
    before = kit.tree_state(source)
    summary = convert_with_summary(source, output_root=output_root, t2_registration="none")
    dataset = output_root / DATASET

    assert summary.output_dir == dataset
    assert _names(dataset / "imagesTr") == [f"chaos_mr_{p}_000{c}.nii.gz" for p in (1, 2) for c in range(3)]
    assert _names(dataset / "labelsTr") == ["chaos_mr_1.nii.gz", "chaos_mr_2.nii.gz"]
    assert _names(dataset / "imagesTs") == []
    for patient, truth in truths.items():
        np.testing.assert_array_equal(_array(dataset / "labelsTr" / f"chaos_mr_{patient}.nii.gz"), truth.t1_labels)
        np.testing.assert_array_equal(_array(dataset / "imagesTr" / f"chaos_mr_{patient}_0000.nii.gz"), truth.t1_in)
        np.testing.assert_array_equal(_array(dataset / "imagesTr" / f"chaos_mr_{patient}_0001.nii.gz"), truth.t1_out)
        for channel in range(3):
            image = sitk.ReadImage(str(dataset / "imagesTr" / f"chaos_mr_{patient}_000{channel}.nii.gz"))
            assert image.GetSize() == (48, 48, 12)
            assert image.GetSpacing() == pytest.approx(T1_SPACING_ZYX_MM[::-1])
            assert image.GetOrigin() == pytest.approx(truth.t1_geometry.origin_xyz_mm)
    assert summary.label_voxel_counts["spleen"] == sum(int((t.t1_labels == 4).sum()) for t in truths.values())
    assert "file numbers vs slice position: ascending in 1 series, descending in 1 series" in summary.format()
    assert kit.tree_state(source) == before


def test_dataset_json_names_the_channels_and_records_the_registration(chaos: tuple[Path, dict],
                                                                      output_root: Path) -> None:
    source = chaos[0]
    dataset = convert(source, output_root=output_root)
    dataset_json = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["channel_names"] == {"0": "T1_in", "1": "T1_out", "2": "T2"}
    assert dataset_json["labels"] == LABELS
    assert dataset_json["numTraining"] == 2 and dataset_json["file_ending"] == ".nii.gz"
    block = dataset_json["nnunet_mm"]
    assert block["reference_channel"] == 0
    assert block["modalities"] == {"0": "MR-T1in", "1": "MR-T1out", "2": "MR-T2SPIR"}
    assert block["registration"].startswith("T2-SPIR (channel 2) registered rigid onto the T1 in-phase image")
    assert block["source"] == {"train": str(source.resolve()), "test": None}
    assert block["converter"] == "Dataset502_CHAOS_MR"
    assert block["channel_acquisition"] == "separate"  # T2-SPIR is another breath-hold
    assert not (dataset / "splits_final.json").exists()


def test_output_passes_nnunet_verify_dataset_integrity(kit: SimpleNamespace, chaos: tuple[Path, dict],
                                                       output_root: Path) -> None:
    kit.verify_dataset_integrity(convert(chaos[0], output_root=output_root))


def test_rigid_registration_moves_t2_onto_the_t1_anatomy(chaos: tuple[Path, dict[str, MrTruth]],
                                                         output_root: Path) -> None:
    source, truths = chaos
    scores = {}
    for registration in ("none", "rigid"):
        dataset = convert(source, output_root=output_root / registration, t2_registration=registration)
        t2 = _array(dataset / "imagesTr" / "chaos_mr_1_0002.nii.gz")
        scores[registration] = _ncc(t2, truths["1"].t2_on_t1)
    assert scores["rigid"] > 0.85  # 0.92 when written; 0.69 without registration
    assert scores["rigid"] > scores["none"] + 0.15


def test_t1_echoes_without_phase_folders_are_split_by_echo_time(tmp_path: Path, output_root: Path) -> None:
    source = tmp_path / "CHAOS_Train_Sets"
    truth = write_mr_patient(train_sets_dir(tmp_path) / "MR", "5", seed=5, phase_subfolders=False)
    assert not (train_sets_dir(tmp_path) / "MR" / "5" / "T1DUAL" / "DICOM_anon" / "InPhase").exists()
    summary = convert_with_summary(source, output_root=output_root, t2_registration="none")
    np.testing.assert_array_equal(_array(summary.output_dir / "imagesTr" / "chaos_mr_5_0000.nii.gz"), truth.t1_in)
    np.testing.assert_array_equal(_array(summary.output_dir / "imagesTr" / "chaos_mr_5_0001.nii.gz"), truth.t1_out)
    np.testing.assert_array_equal(_array(summary.output_dir / "labelsTr" / "chaos_mr_5.nii.gz"), truth.t1_labels)
    assert "T1-DUAL echoes told apart by echo time in 1 patient(s)" in summary.format()


def test_separate_t2_gives_two_datasets_with_the_same_patient_folds(chaos: tuple[Path, dict[str, MrTruth]],
                                                                    tmp_path: Path, output_root: Path) -> None:
    source, truths = chaos
    write_mr_patient(train_sets_dir(tmp_path) / "MR", "3", seed=3)
    summary = convert_with_summary(source, output_root=output_root, t2="separate")
    dataset, t2_dataset = output_root / DATASET, output_root / T2_DATASET

    assert _names(dataset / "imagesTr") == [f"chaos_mr_{p}_000{c}.nii.gz" for p in (1, 2, 3) for c in range(2)]
    assert _names(t2_dataset / "imagesTr") == [f"chaos_mr_{p}_0000.nii.gz" for p in (1, 2, 3)]
    for patient in ("1", "2"):
        image = sitk.ReadImage(str(t2_dataset / "imagesTr" / f"chaos_mr_{patient}_0000.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), truths[patient].t2)
        label = sitk.ReadImage(str(t2_dataset / "labelsTr" / f"chaos_mr_{patient}.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(label), truths[patient].t2_labels)
        assert label.GetSpacing() == pytest.approx(T2_SPACING_ZYX_MM[::-1])
        assert same_geometry(image, label)  # what nnU-Net's verify_dataset_integrity checks besides the values
    t1_json = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert t1_json["channel_names"] == {"0": "T1_in", "1": "T1_out"}
    assert t1_json["nnunet_mm"]["channel_acquisition"] == "co_registered"  # two echoes of one acquisition
    t2_json = json.loads((t2_dataset / "dataset.json").read_text(encoding="utf-8"))
    assert t2_json["channel_names"] == {"0": "T2"} and t2_json["labels"] == LABELS
    assert t2_json["nnunet_mm"]["modalities"] == {"0": "MR-T2SPIR"}
    assert "channel_acquisition" not in t2_json["nnunet_mm"]  # one channel

    splits = json.loads((dataset / "splits_final.json").read_text(encoding="utf-8"))
    assert splits == json.loads((t2_dataset / "splits_final.json").read_text(encoding="utf-8"))
    assert len(splits) == 3
    assert sorted(case for fold in splits for case in fold["val"]) == ["chaos_mr_1", "chaos_mr_2", "chaos_mr_3"]
    for fold in splits:
        assert sorted(fold["train"] + fold["val"]) == ["chaos_mr_1", "chaos_mr_2", "chaos_mr_3"]
    assert "T2-SPIR dataset:" in summary.format() and str(t2_dataset) in summary.format()


def test_the_test_set_goes_to_images_ts_and_may_come_as_a_zip(chaos: tuple[Path, dict], tmp_path: Path,
                                                              output_root: Path) -> None:
    write_mr_patient(chaos_test_sets_dir(tmp_path) / "MR", "7", seed=7, with_ground=False)
    archive = tmp_path / "CHAOS_Train_Sets.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(chaos[0].rglob("*")):
            handle.write(path, path.relative_to(tmp_path))
    summary = convert_with_summary(archive, test_source=tmp_path / "CHAOS_Test_Sets", output_root=output_root,
                                   t2_registration="none")
    dataset = summary.output_dir
    assert (summary.num_training, summary.num_test) == (2, 1)
    assert _names(dataset / "imagesTs") == [f"chaos_mr_7_000{c}.nii.gz" for c in range(3)]
    assert len(_names(dataset / "imagesTr")) == 6
    assert json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["source"]["train"] == str(archive)


def test_an_existing_dataset_is_refused_without_overwrite_and_replaced_with_it(chaos: tuple[Path, dict],
                                                                                output_root: Path) -> None:
    dataset = convert(chaos[0], output_root=output_root, t2_registration="none")
    marker = dataset / "marker.txt"
    marker.write_text("previous conversion", encoding="utf-8")
    with pytest.raises(FileExistsError, match=re.escape(str(dataset))):
        convert(chaos[0], output_root=output_root, t2_registration="none")
    assert marker.read_text(encoding="utf-8") == "previous conversion"
    assert convert(chaos[0], output_root=output_root, t2_registration="none", overwrite=True) == dataset
    assert not marker.exists()
    assert _names(output_root) == [DATASET]


# ----------------------------------------------------------------------------------------------------------------
# bad input: every problem is reported with its file, nothing is written, the input is left alone

def _mr(source: Path) -> Path:
    return source / "Train_Sets" / "MR"


def _break_missing_out_phase(source: Path) -> tuple[str, str]:
    folder = _mr(source) / "1" / "T1DUAL" / "DICOM_anon" / "OutPhase"
    shutil.rmtree(folder)
    return str(folder), "missing folder"


def _break_grey_level(source: Path) -> tuple[str, str]:
    png = _mr(source) / "2" / "T1DUAL" / "Ground" / "IMG-0004-00006.png"
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(png)))
    array[10, 10] = 100
    sitk.WriteImage(sitk.GetImageFromArray(array), str(png))
    return str(png), r"intensities \[100\] fall in no label bin"


def _break_ground_count(source: Path) -> tuple[str, str]:
    ground = _mr(source) / "1" / "T1DUAL" / "Ground"
    (ground / "IMG-0004-00024.png").unlink()
    in_phase = _mr(source) / "1" / "T1DUAL" / "DICOM_anon" / "InPhase"
    return str(ground), re.escape(f": 11 Ground PNGs but 12 DICOM slices in {in_phase}")


def _break_echo_slices(source: Path) -> tuple[str, str]:
    out_phase = _mr(source) / "2" / "T1DUAL" / "DICOM_anon" / "OutPhase"
    (out_phase / "IMG-0004-00001.dcm").unlink()
    return str(out_phase), re.escape(f": 11 opposed-phase slices of 48 x 48 do not match the in-phase volume "
                                     f"{out_phase.parent / 'InPhase'} (12 slices of 48 x 48)")


def _break_unreadable_dicom(source: Path) -> tuple[str, str]:
    file = _mr(source) / "2" / "T2SPIR" / "DICOM_anon" / "IMG-0002-00003.dcm"
    file.write_bytes(b"not a DICOM file")
    return str(file), "cannot read DICOM header"


def _break_missing_t2(source: Path) -> tuple[str, str]:
    shutil.rmtree(_mr(source) / "1" / "T2SPIR")
    return str(_mr(source) / "1" / "T2SPIR"), "missing folder"


def _break_duplicate_patient(source: Path) -> tuple[str, str]:
    shutil.copytree(_mr(source) / "1", _mr(source) / "01")
    return str(_mr(source) / "1"), "duplicate case id 'chaos_mr_1'"


def _break_escaping_link(source: Path) -> tuple[str, str]:
    file = _mr(source) / "1" / "T2SPIR" / "DICOM_anon" / "IMG-0002-00001.dcm"
    outside = source.parent / "outside.dcm"
    shutil.move(file, outside)
    file.symlink_to(outside)
    return str(file), "outside the input folder"


@pytest.mark.parametrize("breaker", [_break_missing_out_phase, _break_grey_level, _break_ground_count,
                                     _break_echo_slices, _break_unreadable_dicom, _break_missing_t2,
                                     _break_duplicate_patient, _break_escaping_link])
def test_bad_input_is_reported_with_the_file_and_nothing_is_written(kit: SimpleNamespace, chaos: tuple[Path, dict],
                                                                    output_root: Path, breaker) -> None:
    source = chaos[0]
    offending, message = breaker(source)
    with kit.refused(source, output_root, match=re.escape(offending) + ".*" + message):
        convert(source, output_root=output_root)


def test_every_problem_of_every_patient_is_reported_at_once(kit: SimpleNamespace, chaos: tuple[Path, dict],
                                                            output_root: Path) -> None:
    source = chaos[0]
    breaks = [_break_missing_out_phase(source), _break_grey_level(source), _break_unreadable_dicom(source)]
    with pytest.raises(ConversionError) as caught:
        convert(source, output_root=output_root, t2="separate")
    assert len(caught.value.problems) == 3
    for offending, _ in breaks:
        assert offending in str(caught.value)
    kit.assert_nothing_written(output_root)


def test_a_source_without_mr_patients_is_reported(kit: SimpleNamespace, tmp_path: Path, output_root: Path) -> None:
    (tmp_path / "Train_Sets" / "MR").mkdir(parents=True)
    with pytest.raises(ConversionError, match="no patient folders found"):
        convert(tmp_path / "Train_Sets", output_root=output_root)
    (tmp_path / "other").mkdir()
    with pytest.raises(ConversionError, match="no MR/ folder found"):
        convert(tmp_path / "other", output_root=output_root)
    kit.assert_nothing_written(output_root)


def test_an_archive_member_escaping_the_input_is_refused(kit: SimpleNamespace, tmp_path: Path,
                                                         output_root: Path) -> None:
    archive = tmp_path / "CHAOS_Train_Sets.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("CHAOS_Train_Sets/Train_Sets/MR/1/T2SPIR/Ground/IMG-0002-00001.png", b"")
        handle.writestr("../../escape.png", b"")
    with pytest.raises(ValueError, match=r"path escaping the input.*\.\./\.\./escape\.png"):
        convert(archive, output_root=output_root)
    kit.assert_nothing_written(output_root)
    assert not (tmp_path.parent / "escape.png").exists()


# ----------------------------------------------------------------------------------------------------------------
# command line

def test_main_prints_the_summary(chaos: tuple[Path, dict], output_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(chaos[0]), "--output-root", str(output_root), "--t2-registration", "none"]) == 0
    printed = capsys.readouterr().out
    assert f"Converted 2 training and 0 test case(s) into {output_root / DATASET}" in printed
    assert "channels: 0 T1_in, 1 T1_out, 2 T2" in printed
    assert "liver (1):" in printed and "spleen (4):" in printed
    assert "spacing (x, y, z) mm: min (7, 7, 8), max (7, 7, 8)" in printed


def test_nnunet_mm_convert_runs_the_separate_t2_variant(chaos: tuple[Path, dict], output_root: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    from nnunet_mm.cli.main import main as cli_main

    status = cli_main(["convert", "502", str(chaos[0]), "--output-root", str(output_root), "--t2", "separate",
                       "--t2-dataset-id", "522", "--t2-dataset-name", "ChaosT2"])
    assert status == 0
    assert _names(output_root) == [DATASET, "Dataset522_ChaosT2"]
    assert "T2-SPIR dataset:" in capsys.readouterr().out


def test_main_reports_problems_and_returns_1(chaos: tuple[Path, dict], output_root: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    offending, _ = _break_missing_t2(chaos[0])
    assert main([str(chaos[0]), "--output-root", str(output_root)]) == 1
    assert f"{offending}: missing folder" in capsys.readouterr().err
    assert main([str(chaos[0]), "--output-root", str(output_root), "--t2", "separate", "--t2-dataset-id",
                 "502"]) == 1
    assert "--t2-dataset-id must differ" in capsys.readouterr().err
