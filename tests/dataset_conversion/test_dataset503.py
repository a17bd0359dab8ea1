"""Dataset503_CHAOS_CT: CHAOS CT (liver) in the official layout, with its reversed Ground order → nnU-Net raw."""
from __future__ import annotations

import json
import re
import shutil
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
from layout_chaos import CT_SPACING_ZYX_MM, CtTruth, chaos_test_sets_dir, train_sets_dir, write_ct_patient

from nnunet_mm.conversion import ConversionError
from nnunet_mm.dataset_conversion.Dataset503_CHAOS_CT import convert, convert_with_summary, main
from nnunet_mm.evaluation.metrics import dice

DATASET = "Dataset503_CHAOS_CT"


@pytest.fixture
def chaos(tmp_path: Path) -> tuple[Path, dict[str, CtTruth]]:
    """``CHAOS_Train_Sets`` with two CT patients: DICOM names from the top slice down with liver 255 (1), and from
    the bottom up with liver 1 (2); both Ground stacks reversed relative to the slice positions."""
    ct = train_sets_dir(tmp_path) / "CT"
    truths = {"1": write_ct_patient(ct, "1", seed=1, liver_value=255, file_order="descending"),
              "2": write_ct_patient(ct, "2", seed=2, liver_value=1, file_order="ascending")}
    return tmp_path / "CHAOS_Train_Sets", truths


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------------------------------------------
# good input

def test_the_flipped_ground_lands_on_the_liver(kit: SimpleNamespace, chaos: tuple[Path, dict[str, CtTruth]],
                                               output_root: Path) -> None:
    source, truths = chaos
    before = kit.tree_state(source)
    summary = convert_with_summary(source, output_root=output_root)
    dataset = output_root / DATASET

    assert summary.output_dir == dataset
    assert _names(dataset / "imagesTr") == ["chaos_ct_1_0000.nii.gz", "chaos_ct_2_0000.nii.gz"]
    assert _names(dataset / "labelsTr") == ["chaos_ct_1.nii.gz", "chaos_ct_2.nii.gz"]
    for patient, truth in truths.items():
        label = sitk.ReadImage(str(dataset / "labelsTr" / f"chaos_ct_{patient}.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(label), truth.liver)  # 255 and 1 both become 1
        image = sitk.ReadImage(str(dataset / "imagesTr" / f"chaos_ct_{patient}_0000.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), truth.hu)
        for written in (label, image):
            assert written.GetSpacing() == pytest.approx(CT_SPACING_ZYX_MM[::-1])
            assert written.GetOrigin() == pytest.approx(truth.geometry.origin_xyz_mm)
    assert summary.label_voxel_counts["liver"] == sum(int(t.liver.sum()) for t in truths.values())
    assert kit.tree_state(source) == before


def test_without_the_flip_png_k_lies_on_slice_k(chaos: tuple[Path, dict[str, CtTruth]], output_root: Path) -> None:
    source, truths = chaos
    dataset = convert(source, output_root=output_root, flip_ct_masks=False)
    label = _array(dataset / "labelsTr" / "chaos_ct_1.nii.gz")
    np.testing.assert_array_equal(label, truths["1"].liver[::-1])
    # the phantom liver is not symmetric in z, so the unflipped mask misses it
    assert dice(truths["1"].liver, label == 1) < 0.8
    notes = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["notes"]
    assert notes == ["Ground liver_GT PNG k placed on slice k of the DICOM slices sorted by position (no flip)"]


def test_dataset_json_uses_ct_normalisation_and_records_the_source(chaos: tuple[Path, dict],
                                                                   output_root: Path) -> None:
    source = chaos[0]
    dataset_json = json.loads((convert(source, output_root=output_root) / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["channel_names"] == {"0": "CT"}
    assert dataset_json["labels"] == {"background": 0, "liver": 1}
    assert dataset_json["numTraining"] == 2 and dataset_json["file_ending"] == ".nii.gz"
    block = dataset_json["nnunet_mm"]
    assert block["reference_channel"] == 0 and block["modalities"] == {"0": "CT"}
    assert block["registration"] == "none (one channel)"
    assert "channel_acquisition" not in block  # one channel: nothing to declare
    assert block["source"] == {"train": str(source.resolve()), "test": None}
    assert block["converter"] == "Dataset503_CHAOS_CT"
    assert block["notes"][0].startswith("Ground liver_GT PNG k placed on slice N-1-k")


def test_output_passes_nnunet_verify_dataset_integrity(kit: SimpleNamespace, chaos: tuple[Path, dict],
                                                       output_root: Path) -> None:
    kit.verify_dataset_integrity(convert(chaos[0], output_root=output_root))


def test_the_test_set_goes_to_images_ts_and_the_source_may_be_a_tar(chaos: tuple[Path, dict], tmp_path: Path,
                                                                    output_root: Path) -> None:
    test_truth = write_ct_patient(chaos_test_sets_dir(tmp_path) / "CT", "3", seed=3, with_ground=False)
    archive = tmp_path / "CHAOS_Train_Sets.tar"
    with tarfile.open(archive, "w") as handle:
        handle.add(chaos[0], arcname="CHAOS_Train_Sets")
    summary = convert_with_summary(archive, test_source=tmp_path / "CHAOS_Test_Sets", output_root=output_root)
    assert (summary.num_training, summary.num_test) == (2, 1)
    assert _names(summary.output_dir / "imagesTs") == ["chaos_ct_3_0000.nii.gz"]
    np.testing.assert_array_equal(_array(summary.output_dir / "imagesTs" / "chaos_ct_3_0000.nii.gz"), test_truth.hu)
    assert len(_names(summary.output_dir / "labelsTr")) == 2


def test_an_existing_dataset_is_refused_without_overwrite_and_replaced_with_it(chaos: tuple[Path, dict],
                                                                                output_root: Path) -> None:
    dataset = convert(chaos[0], output_root=output_root)
    marker = dataset / "marker.txt"
    marker.write_text("previous conversion", encoding="utf-8")
    with pytest.raises(FileExistsError, match=re.escape(str(dataset))):
        convert(chaos[0], output_root=output_root)
    assert marker.read_text(encoding="utf-8") == "previous conversion"
    assert convert(chaos[0], output_root=output_root, overwrite=True) == dataset
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------------------------
# bad input: every problem is reported with its file, nothing is written, the input is left alone

def _ct(source: Path) -> Path:
    return source / "Train_Sets" / "CT"


def _break_missing_ground(source: Path) -> tuple[str, str]:
    shutil.rmtree(_ct(source) / "2" / "Ground")
    return str(_ct(source) / "2" / "Ground"), "missing folder"


def _break_slice_count(source: Path) -> tuple[str, str]:
    ground = _ct(source) / "1" / "Ground"
    (ground / "liver_GT_011.png").unlink()
    return str(ground), re.escape(f": 11 Ground PNGs but 12 DICOM slices in {_ct(source) / '1' / 'DICOM_anon'}")


def _break_png_size(source: Path) -> tuple[str, str]:
    png = _ct(source) / "2" / "Ground" / "liver_GT_000.png"
    sitk.WriteImage(sitk.Image(40, 40, sitk.sitkUInt8), str(png))
    return str(png), r"size 40 x 40 \(x, y\) differs from the other Ground PNGs"


def _break_unreadable_png(source: Path) -> tuple[str, str]:
    png = _ct(source) / "1" / "Ground" / "liver_GT_004.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return str(png), "cannot read image"


def _break_unreadable_dicom(source: Path) -> tuple[str, str]:
    file = _ct(source) / "2" / "DICOM_anon" / "i0005,0000b.dcm"
    file.write_bytes(b"garbage")
    return str(file), "cannot read DICOM header"


def _break_duplicate_patient(source: Path) -> tuple[str, str]:
    shutil.copytree(_ct(source) / "2", _ct(source) / "002")
    return str(_ct(source) / "2"), "duplicate case id 'chaos_ct_2'"


@pytest.mark.parametrize("breaker", [_break_missing_ground, _break_slice_count, _break_png_size,
                                     _break_unreadable_png, _break_unreadable_dicom, _break_duplicate_patient])
def test_bad_input_is_reported_with_the_file_and_nothing_is_written(kit: SimpleNamespace, chaos: tuple[Path, dict],
                                                                    output_root: Path, breaker) -> None:
    source = chaos[0]
    offending, message = breaker(source)
    with kit.refused(source, output_root, match=re.escape(offending) + ".*" + message):
        convert(source, output_root=output_root)


def test_every_problem_is_reported_at_once(kit: SimpleNamespace, chaos: tuple[Path, dict], output_root: Path) -> None:
    source = chaos[0]
    breaks = [_break_slice_count(source), _break_unreadable_dicom(source)]
    with pytest.raises(ConversionError) as caught:
        convert(source, output_root=output_root)
    assert [offending in str(caught.value) for offending, _ in breaks] == [True, True]
    assert len(caught.value.problems) == 2
    kit.assert_nothing_written(output_root)


def test_an_empty_ct_folder_and_an_ambiguous_source_are_reported(kit: SimpleNamespace, tmp_path: Path,
                                                                 output_root: Path) -> None:
    (tmp_path / "a" / "Train_Sets" / "CT").mkdir(parents=True)
    with pytest.raises(ConversionError, match="no patient folders found"):
        convert(tmp_path / "a", output_root=output_root)
    (tmp_path / "a" / "Test_Sets" / "CT").mkdir(parents=True)
    with pytest.raises(ConversionError, match="several CT/ folders found"):
        convert(tmp_path / "a", output_root=output_root)
    kit.assert_nothing_written(output_root)


# ----------------------------------------------------------------------------------------------------------------
# command line

def test_main_prints_the_summary(chaos: tuple[Path, dict], output_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(chaos[0]), "--output-root", str(output_root)]) == 0
    printed = capsys.readouterr().out
    assert f"Converted 2 training and 0 test case(s) into {output_root / DATASET}" in printed
    assert "channels: 0 CT" in printed and "liver (1):" in printed
    assert "spacing (x, y, z) mm: min (7, 7, 6), max (7, 7, 6)" in printed
    assert "placed on slice N-1-k" in printed


def test_nnunet_mm_convert_passes_the_no_flip_option(chaos: tuple[Path, dict[str, CtTruth]], output_root: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    from nnunet_mm.cli.main import main as cli_main

    source, truths = chaos
    assert cli_main(["convert", "503", str(source), "--output-root", str(output_root), "--no-flip-ct-masks"]) == 0
    np.testing.assert_array_equal(_array(output_root / DATASET / "labelsTr" / "chaos_ct_2.nii.gz"),
                                  truths["2"].liver[::-1])
    assert "(no flip)" in capsys.readouterr().out


def test_main_reports_problems_and_returns_1(kit: SimpleNamespace, chaos: tuple[Path, dict], output_root: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    offending, _ = _break_missing_ground(chaos[0])
    assert main([str(chaos[0]), "--output-root", str(output_root)]) == 1
    assert f"{offending}: missing folder" in capsys.readouterr().err
    kit.assert_nothing_written(output_root)
