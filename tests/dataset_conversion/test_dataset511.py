"""Dataset511_MultiPhaseLiver: conversion of multi-phase liver cases, each phase on its own grid."""
from __future__ import annotations

import io
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

from nnunet_mm.dataset_conversion.Dataset511_MultiPhaseLiver import ConversionError, convert, main
from nnunet_mm.io import resample_to_reference, same_geometry

DATASET = "Dataset511_MultiPhaseLiver"


def _read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


# ----------------------------------------------------------------------------------------------------------------
# good input

def test_every_phase_ends_up_on_the_reference_grid(kit: SimpleNamespace, source: Path, output_root: Path) -> None:
    before = kit.tree_state(source)
    dataset = convert(source, output_root=output_root, qa_figures=False)

    assert dataset == output_root / DATASET
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == \
        [f"case_0{c}_000{k}.nii.gz" for c in (1, 2) for k in range(4)]
    assert sorted(p.name for p in (dataset / "imagesTs").iterdir()) == [f"case_03_000{k}.nii.gz" for k in range(4)]
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == ["case_01.nii.gz", "case_02.nii.gz"]
    reference_grid = kit.make_grid(kit.REFERENCE_GRID)
    written = [file for sub in ("imagesTr", "imagesTs", "labelsTr") for file in (dataset / sub).iterdir()]
    for file in written:
        assert same_geometry(_read(file), reference_grid, tolerance=1e-4), file
    # the label is copied unchanged
    np.testing.assert_array_equal(sitk.GetArrayFromImage(_read(dataset / "labelsTr" / "case_01.nii.gz")),
                                  sitk.GetArrayFromImage(_read(source / "case_01" / "label.nii.gz")))
    # channel k holds phase k, resampled in scanner coordinates: the liver has that phase's HU
    liver = sitk.GetArrayFromImage(kit.render_label()) == 1
    for channel, phase in enumerate(kit.PHASES):
        values = sitk.GetArrayFromImage(_read(dataset / "imagesTr" / f"case_01_000{channel}.nii.gz"))
        assert abs(np.median(values[liver]) - kit.PHASE_HU[phase][0]) < 10, phase
    assert kit.tree_state(source) == before
    # without QA figures the QA folder holds only the coverage record (every phase covers the whole grid: no masks)
    assert sorted(p.name for p in (dataset / "nnunet_mm_qa").iterdir()) == ["coverage.json"]


def test_dataset_json_names_every_channel_ct_and_records_the_phases(source: Path, output_root: Path) -> None:
    dataset = convert(source, output_root=output_root, qa_figures=False)
    dataset_json = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["channel_names"] == {"0": "CT", "1": "CT", "2": "CT", "3": "CT"}
    assert dataset_json["labels"] == {"background": 0, "liver": 1, "tumor": 2}
    assert dataset_json["numTraining"] == 2
    assert dataset_json["file_ending"] == ".nii.gz"
    block = dataset_json["nnunet_mm"]
    assert block["reference_channel"] == 0
    assert block["phase_names"] == ["pv", "art", "del", "nc"]
    assert block["source"] == str(source.resolve())
    assert block["registration"] == "none"
    assert block["channel_acquisition"] == "separate"  # phases of separate breath-holds: augmentation on
    assert not (dataset / "splits_final.json").exists()


def test_output_passes_nnunet_verify_dataset_integrity(kit: SimpleNamespace, source: Path, output_root: Path) -> None:
    dataset = convert(source, output_root=output_root, qa_figures=False)
    kit.verify_dataset_integrity(dataset)


def test_dicom_folders_work_as_reference_and_as_other_phase(kit: SimpleNamespace, tmp_path: Path,
                                                            output_root: Path) -> None:
    source = tmp_path / "source"
    kit.write_case(source, "case_01", dicom_phases=("pv", "art"))
    kit.write_case(source, "case_02")
    dataset = convert(source, output_root=output_root, qa_figures=False)
    reference = _read(dataset / "imagesTr" / "case_01_0000.nii.gz")
    assert same_geometry(reference, kit.make_grid(kit.REFERENCE_GRID), tolerance=1e-4)
    liver = sitk.GetArrayFromImage(kit.render_label()) == 1
    art = sitk.GetArrayFromImage(_read(dataset / "imagesTr" / "case_01_0001.nii.gz"))
    assert abs(np.median(art[liver]) - kit.PHASE_HU["art"][0]) < 10


def test_phase_and_label_names_are_configurable_and_matched_ignoring_case(kit: SimpleNamespace, tmp_path: Path,
                                                                          output_root: Path) -> None:
    source = tmp_path / "source"
    folder = kit.write_case(source, "a", phases=("pv", "art"), labelled=False)
    (folder / "pv.nii.gz").rename(folder / "PV.nii.gz")
    sitk.WriteImage(kit.render_label(), str(folder / "Seg.nii.gz"))
    dataset = convert(source, output_root=output_root, phases=["pv", "ART"], label_name="seg",
                      label_names=["liver", "lesion"], dataset_id=512, dataset_name="Liver2", qa_figures=False)
    assert dataset == output_root / "Dataset512_Liver2"
    dataset_json = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    assert dataset_json["labels"] == {"background": 0, "liver": 1, "lesion": 2}
    assert dataset_json["nnunet_mm"]["phase_names"] == ["pv", "ART"]
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == ["a_0000.nii.gz", "a_0001.nii.gz"]


def test_registration_writes_qa_figures_and_a_summary_that_shows_the_improvement(kit: SimpleNamespace,
                                                                                   tmp_path: Path,
                                                                                   output_root: Path) -> None:
    source = tmp_path / "source"
    kit.write_case(source, "case_01", shifts={"nc": (3.0, -3.0, 0.0)})
    kit.write_case(source, "case_02", labelled=False)
    dataset = convert(source, output_root=output_root, register="rigid")

    qa = dataset / "nnunet_mm_qa"
    for case in ("case_01", "case_02"):
        assert (qa / f"{case}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((qa / "summary.json").read_text(encoding="utf-8"))
    assert summary["registration"] == "rigid" and {"ncc", "nmi", "region"} <= set(summary["metrics"])
    case = summary["cases"]["case_01"]
    assert case["region"].startswith("label_bbox")
    assert set(case["phases"]) == {"art", "del", "nc"}
    nc = case["phases"]["nc"]
    assert nc["after"]["ncc"] > nc["before"]["ncc"] + 0.05
    assert summary["cases"]["case_02"]["region"] == "whole_image"
    assert (qa / "transforms" / "case_01_nc.tfm").is_file()
    assert json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["registration"] == "rigid"


def test_without_registration_the_qa_summary_has_only_before_values(source: Path, output_root: Path) -> None:
    dataset = convert(source, output_root=output_root)
    summary = json.loads((dataset / "nnunet_mm_qa" / "summary.json").read_text(encoding="utf-8"))
    art = summary["cases"]["case_01"]["phases"]["art"]
    assert art["after"] is None and art["before"]["ncc"] > 0.8 and art["coverage"] > 0.9
    assert (dataset / "nnunet_mm_qa" / "case_03.png").is_file()


def test_affine_registration_and_parallel_conversion_run(source: Path, output_root: Path) -> None:
    dataset = convert(source, output_root=output_root, register="affine", num_processes=2, qa_figures=False)
    assert len(list((dataset / "imagesTr").iterdir())) == 8


# ----------------------------------------------------------------------------------------------------------------
# partial fields of view: a phase covering only part of the reference grid (a short arterial z-range)

CROPS = {"upper_half": 5, "above_the_liver": 8}  # first kept slice of the arterial grid (4 mm slices from z = -18)
ART_CHANNEL = 1


def _crop_arterial(folder: Path, first_slice: int) -> sitk.Image:
    """Keep the arterial slices from ``first_slice`` on; slicing keeps the origin right, so the cropped phase lies
    where it lay in the scanner. ``upper_half`` keeps z >= 0 mm: slices 6-11 of the reference grid (z = 1.5 ...
    16.5 mm), half of the grid and of the liver (z = -11 ... 11 mm); ``above_the_liver`` keeps z >= 12 mm."""
    art = _read(folder / "art.nii.gz")[:, :, first_slice:]
    sitk.WriteImage(art, str(folder / "art.nii.gz"), useCompression=True)
    return art


@pytest.fixture
def half_arterial_source(kit: SimpleNamespace, tmp_path: Path) -> Path:
    """The ``source`` cases with the arterial phase of every case covering only the upper half of the liver."""
    root = tmp_path / "half_source"
    for case, seed, labelled in (("case_01", 0, True), ("case_02", 10, True), ("case_03", 20, False)):
        _crop_arterial(kit.write_case(root, case, labelled=labelled, seed=seed), CROPS["upper_half"])
    return root


def _upper_half(kit: SimpleNamespace) -> np.ndarray:
    """(Z, Y, X) bool: the reference voxels the ``upper_half`` arterial phase covers (z index 6-11)."""
    covered = np.zeros(kit.REFERENCE_GRID["size"][::-1], dtype=bool)
    covered[6:] = True
    return covered


def _channel(dataset: Path, case: str, channel: int, images: str = "imagesTr") -> np.ndarray:
    return sitk.GetArrayFromImage(_read(dataset / images / f"{case}_{channel:04d}.nii.gz"))


def _foreground_statistics(dataset: Path, channel: int) -> dict[str, float]:
    """What nnU-Net's CT normalisation takes from the fingerprint: the channel's values over label > 0 voxels of
    every training case (mean, std, 0.5th and 99.5th percentile)."""
    values = []
    for label_file in sorted((dataset / "labelsTr").iterdir()):
        foreground = sitk.GetArrayFromImage(_read(label_file)) > 0
        values.append(_channel(dataset, label_file.name[:-len(".nii.gz")], channel)[foreground].astype(np.float64))
    values = np.concatenate(values)
    low, high = np.percentile(values, [0.5, 99.5])
    return {"mean": float(values.mean()), "std": float(values.std()), "p00_5": float(low), "p99_5": float(high)}


@pytest.mark.parametrize("register", ["none", "rigid"])
def test_voxels_outside_a_phase_hold_the_reference_phase_not_air(kit: SimpleNamespace, half_arterial_source: Path,
                                                                 output_root: Path, register: str) -> None:
    dataset = convert(half_arterial_source, output_root=output_root, register=register, qa_figures=False)
    for case, images in (("case_01", "imagesTr"), ("case_02", "imagesTr"), ("case_03", "imagesTs")):
        art, reference = _channel(dataset, case, ART_CHANNEL, images), _channel(dataset, case, 0, images)
        liver = sitk.GetArrayFromImage(kit.render_label()) > 0
        assert art[liver].min() > -500, case  # no air (the old fill was the phase's minimum, about -1020 HU)
        mask = sitk.GetArrayFromImage(_read(dataset / "nnunet_mm_qa" / "coverage" / f"{case}_0001.nii.gz"))
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
        covered = mask.astype(bool)
        np.testing.assert_array_equal(art[~covered], reference[~covered])
        if register == "none":
            np.testing.assert_array_equal(covered, _upper_half(kit))
            # the covered voxels are the phase resampled as before, bit for bit
            source_art = _read(half_arterial_source / case / "art.nii.gz")
            resampled = sitk.GetArrayFromImage(resample_to_reference(source_art, _read(dataset / images /
                                                                                         f"{case}_0000.nii.gz")))
            np.testing.assert_array_equal(art[covered], resampled[covered])
            assert abs(np.median(art[covered & liver]) - kit.PHASE_HU["art"][0]) < 10
            assert abs(np.median(art[~covered & liver]) - kit.PHASE_HU["pv"][0]) < 10


def test_the_coverage_record_gives_the_covered_share_of_grid_liver_and_tumour(kit: SimpleNamespace,
                                                                              half_arterial_source: Path,
                                                                              output_root: Path) -> None:
    dataset = convert(half_arterial_source, output_root=output_root, qa_figures=False)
    record = json.loads((dataset / "nnunet_mm_qa" / "coverage.json").read_text(encoding="utf-8"))
    assert record["reference_phase"] == "pv" and "fill" in record["description"]
    label = sitk.GetArrayFromImage(kit.render_label())
    covered = _upper_half(kit)
    true_fraction = {"foreground": (covered & (label > 0)).sum() / (label > 0).sum(),
                     "liver": (covered & (label == 1)).sum() / (label == 1).sum(),
                     "tumor": (covered & (label == 2)).sum() / (label == 2).sum()}
    assert true_fraction["foreground"] == pytest.approx(0.5)
    for case in ("case_01", "case_02"):
        phases = record["cases"][case]["phases"]
        assert record["cases"][case]["training"] is True
        art = phases["art"]
        assert art["channel"] == ART_CHANNEL and art["file"] == str(half_arterial_source / case / "art.nii.gz")
        assert art["grid"] == pytest.approx(0.5, abs=1e-4)
        assert art["labels"] == pytest.approx(true_fraction, abs=1e-4)
        assert art["mask"] == f"coverage/{case}_0001.nii.gz"
        for phase in ("del", "nc"):
            assert phases[phase]["grid"] == 1.0 and phases[phase]["mask"] is None
            assert phases[phase]["labels"] == {"foreground": 1.0, "liver": 1.0, "tumor": 1.0}
    test_case = record["cases"]["case_03"]
    assert test_case["training"] is False
    assert test_case["phases"]["art"]["labels"] is None and test_case["phases"]["art"]["grid"] == pytest.approx(0.5)


def test_a_phase_missing_part_of_the_labelled_region_is_warned_about_per_case(
        half_arterial_source: Path, output_root: Path, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert main([str(half_arterial_source), "--output-root", str(output_root), "--no-qa"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "covers" in r.getMessage()]
    assert len(warnings) == 2  # one per labelled case; the test case's arterial phase covers half the grid
    for case, warning in zip(("case_01", "case_02"), warnings):
        assert warning.startswith(f"{half_arterial_source / case / 'art.nii.gz'}: case '{case}', phase 'art' "
                                  f"covers 50.0% of the labelled region (label > 0; liver ")
        assert "tumor " in warning and "50.0% of the reference grid" in warning and "reference phase 'pv'" in warning
    printed = capsys.readouterr().out
    assert "art 50.0% / 50.0% (2 case(s) with labelled voxels uncovered); del 100.0% / 100.0%; nc 100.0% / 100.0%" \
        in printed
    assert str(output_root / DATASET / "nnunet_mm_qa" / "coverage.json") in printed


def test_a_phase_covering_none_of_the_labelled_region_is_warned_about_loudly_and_still_converted(
        kit: SimpleNamespace, tmp_path: Path, output_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "source"
    _crop_arterial(kit.write_case(source, "case_01"), CROPS["above_the_liver"])
    with caplog.at_level(logging.WARNING):
        dataset = convert(source, output_root=output_root, qa_figures=False)
    assert f"{source / 'case_01' / 'art.nii.gz'}: case 'case_01', phase 'art' covers NONE of the labelled region" \
        in caplog.text
    art = json.loads((dataset / "nnunet_mm_qa" / "coverage.json").read_text(encoding="utf-8"))["cases"]["case_01"]["phases"]["art"]
    assert art["labels"]["foreground"] == 0.0 and 0.0 < art["grid"] < 0.5
    liver = sitk.GetArrayFromImage(kit.render_label()) > 0
    np.testing.assert_array_equal(_channel(dataset, "case_01", ART_CHANNEL)[liver],
                                  _channel(dataset, "case_01", 0)[liver])


def test_phases_covering_the_whole_grid_have_coverage_one_no_masks_and_no_warning(
        source: Path, output_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        dataset = convert(source, output_root=output_root)
    assert "covers" not in caplog.text
    record = json.loads((dataset / "nnunet_mm_qa" / "coverage.json").read_text(encoding="utf-8"))
    assert set(record["cases"]) == {"case_01", "case_02", "case_03"}
    for case, entry in record["cases"].items():
        assert set(entry["phases"]) == {"art", "del", "nc"}
        for phase in entry["phases"].values():
            assert phase["grid"] == 1.0 and phase["mask"] is None
            assert phase["labels"] == (None if case == "case_03" else {"foreground": 1.0, "liver": 1.0, "tumor": 1.0})
    assert not (dataset / "nnunet_mm_qa" / "coverage").exists()


def test_a_half_covered_phase_keeps_the_foreground_statistics_that_ct_normalisation_uses(
        source: Path, half_arterial_source: Path, tmp_path: Path) -> None:
    full = _foreground_statistics(convert(source, output_root=tmp_path / "full", qa_figures=False), ART_CHANNEL)
    half = _foreground_statistics(convert(half_arterial_source, output_root=tmp_path / "half", qa_figures=False),
                                  ART_CHANNEL)
    # with -1024 in half of the liver: std 552 instead of 35 HU, 0.5th percentile -1018 instead of 54
    assert full["std"] / 2 < half["std"] < full["std"] * 2
    assert half["p00_5"] > 0 and abs(half["mean"] - full["mean"]) < 30
    assert half["p99_5"] < full["p99_5"] + 50


# ----------------------------------------------------------------------------------------------------------------
# bad input: every problem is reported, nothing is written, the input is left alone

def _break_missing_phase(source: Path) -> Path:
    (source / "case_02" / "del.nii.gz").unlink()
    return source / "case_02"


def _break_unreadable(source: Path) -> Path:
    path = source / "case_01" / "art.nii.gz"
    path.write_bytes(b"\x1f\x8b garbage, not a gzip stream")
    return path


def _break_nan(source: Path) -> Path:
    path = source / "case_02" / "nc.nii.gz"
    image = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)
    image[3, 3, 3] = float("nan")
    sitk.WriteImage(image, str(path))
    return path


def _break_truncated_phase(source: Path) -> Path:
    """Half of a phase's bytes: SimpleITK reads it without an error and fills the rest with zeros."""
    path = source / "case_01" / "art.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return path


def _break_truncated_label(source: Path) -> Path:
    """40 bytes cut from a label: liver and tumour voxels would silently become background."""
    path = source / "case_02" / "label.nii.gz"
    path.write_bytes(path.read_bytes()[:-40])
    return path


def _break_label_grid(source: Path) -> Path:
    path = source / "case_01" / "label.nii.gz"
    label = sitk.ReadImage(str(path))
    label.SetSpacing((1.5, 1.5, 2.5))
    sitk.WriteImage(label, str(path))
    return path


def _break_duplicate_id(source: Path) -> Path:
    shutil.copytree(source / "case_01", source / "case 01")
    return source / "case_01"  # "case 01" sorts first, so the problem is reported at "case_01"


def _break_label_value(source: Path) -> Path:
    path = source / "case_02" / "label.nii.gz"
    label = sitk.ReadImage(str(path))
    label[2, 2, 2] = 7
    sitk.WriteImage(label, str(path))
    return path


def _break_2d(source: Path) -> Path:
    path = source / "case_01" / "del.nii.gz"
    sitk.WriteImage(sitk.Image(8, 8, sitk.sitkInt16), str(path))
    return path


@pytest.mark.parametrize("breaker, message", [
    (_break_missing_phase, "missing phase 'del'"),
    (_break_unreadable, "cannot read image"),
    (_break_nan, "contains 1 NaN/inf voxels"),
    (_break_truncated_phase, "incomplete or corrupt file"),
    (_break_truncated_label, "incomplete or corrupt file"),
    (_break_label_grid, r"label is not on the grid of the reference phase .*pv\.nii\.gz \(spacing differ\)"),
    (_break_duplicate_id, "duplicate case id 'case_01'"),
    (_break_label_value, r"unknown label values \[7\] \(found \[0, 1, 2, 7\]\); allowed are \[0, 1, 2\]"),
    (_break_2d, "expected a 3D image, got 2D"),
])
def test_bad_input_is_reported_with_the_file_and_nothing_is_written(kit: SimpleNamespace, source: Path,
                                                                    output_root: Path, breaker, message: str) -> None:
    offending = breaker(source)
    with kit.refused(source, output_root, match=re.escape(str(offending)) + ".*" + message):
        convert(source, output_root=output_root)


def test_label_grid_message_prints_both_geometries(source: Path, output_root: Path) -> None:
    _break_label_grid(source)
    with pytest.raises(ConversionError, match=r"label size .* spacing \(1\.5, 1\.5, 2\.5\).*; reference size .* "
                                              r"spacing \(1\.5, 1\.5, 3\)"):
        convert(source, output_root=output_root)


def test_duplicate_case_id_names_both_folders(source: Path, output_root: Path) -> None:
    _break_duplicate_id(source)
    with pytest.raises(ConversionError) as caught:
        convert(source, output_root=output_root)
    (problem,) = caught.value.problems
    assert str(source / "case 01") in problem and str(source / "case_01") in problem


def test_several_problems_are_all_reported_at_once(kit: SimpleNamespace, source: Path, output_root: Path) -> None:
    offending = [_break_missing_phase(source), _break_nan(source), _break_label_value(source),
                 _break_unreadable(source), _break_label_grid(source)]
    with pytest.raises(ConversionError) as caught:
        convert(source, output_root=output_root)
    assert len(caught.value.problems) == 5
    for path in offending:
        assert str(path) in str(caught.value)
    kit.assert_nothing_written(output_root)


def test_an_empty_source_folder_is_reported(kit: SimpleNamespace, tmp_path: Path, output_root: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match="no case folders found"):
        convert(tmp_path / "empty", output_root=output_root)
    kit.assert_nothing_written(output_root)


def test_a_failure_while_writing_leaves_no_dataset_and_no_staging_folder(kit: SimpleNamespace, source: Path,
                                                                         output_root: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import nnunet_mm.dataset_conversion.Dataset511_MultiPhaseLiver as converter

    def failing_json(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(converter, "write_dataset_json", failing_json)
    with pytest.raises(OSError, match="disk full"):
        convert(source, output_root=output_root, qa_figures=False)
    kit.assert_nothing_written(output_root)


# ----------------------------------------------------------------------------------------------------------------
# existing output, arguments, command line

def test_an_existing_dataset_is_refused_without_overwrite_and_replaced_with_it(source: Path,
                                                                                output_root: Path) -> None:
    dataset = convert(source, output_root=output_root, qa_figures=False)
    marker = dataset / "marker.txt"
    marker.write_text("previous conversion", encoding="utf-8")
    with pytest.raises(FileExistsError, match=re.escape(str(dataset))):
        convert(source, output_root=output_root, qa_figures=False)
    assert marker.read_text(encoding="utf-8") == "previous conversion"

    shutil.rmtree(source / "case_03")
    assert convert(source, output_root=output_root, qa_figures=False, overwrite=True) == dataset
    assert not marker.exists()
    assert not (dataset / "imagesTs" / "case_03_0000.nii.gz").exists()
    assert sorted(p.name for p in output_root.iterdir()) == [DATASET]


def test_missing_output_root_and_nnunet_raw_gives_a_clear_error(source: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("nnUNet_raw", raising=False)
    with pytest.raises(ValueError, match="nnUNet_raw is not set"):
        convert(source)


def test_output_root_defaults_to_nnunet_raw(source: Path, output_root: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("nnUNet_raw", str(output_root))
    assert convert(source, qa_figures=False) == output_root / DATASET


def test_output_inside_the_source_is_refused(source: Path) -> None:
    with pytest.raises(ValueError, match="lies inside the source folder"):
        convert(source, output_root=source / "raw")


def test_invalid_arguments_list_the_valid_values(source: Path, output_root: Path) -> None:
    with pytest.raises(ValueError, match=r"register must be one of \['none', 'rigid', 'affine'\]"):
        convert(source, output_root=output_root, register="bspline")
    with pytest.raises(ValueError, match="must differ"):
        convert(source, output_root=output_root, phases=["pv", "label"])


def test_main_prints_the_summary(source: Path, output_root: Path, capsys: pytest.CaptureFixture) -> None:
    status = main([str(source), "--output-root", str(output_root), "--no-qa", "--phases", "pv,art,del,nc",
                   "--labels", "liver,tumor"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "2 training and 1 test case(s)" in printed
    assert "liver (1):" in printed and "tumor (2):" in printed
    assert "spacing x, y, z (mm): min (1.5, 1.5, 3), max (1.5, 1.5, 3)" in printed
    assert str(output_root / DATASET) in printed


def test_main_reports_problems_and_returns_1(source: Path, output_root: Path, capsys: pytest.CaptureFixture) -> None:
    _break_missing_phase(source)
    assert main([str(source), "--output-root", str(output_root)]) == 1
    assert "missing phase 'del'" in capsys.readouterr().err


def test_main_refuses_unknown_flags() -> None:
    with pytest.raises(SystemExit):
        main(["somewhere", "--registr", "rigid"])



# ----------------------------------------------------------------------------------------------------------------
# symbolic links and archives: nothing outside the input is read; an archive is a source like its folder

def _link_phase_to_a_file_outside(kit: SimpleNamespace, source: Path) -> tuple[Path, Path]:
    link, outside = source / "case_01" / "art.nii.gz", source.parent / "outside" / "art.nii.gz"
    outside.parent.mkdir()
    shutil.move(link, outside)
    link.symlink_to(outside)
    return link, outside


def _link_label_to_etc(kit: SimpleNamespace, source: Path) -> tuple[Path, Path]:
    if not Path("/etc/passwd").is_file():
        pytest.skip("no /etc/passwd here")
    link = source / "case_02" / "label.nii.gz"
    link.unlink()
    link.symlink_to("/etc/passwd")
    return link, Path("/etc/passwd")


def _link_case_folder_outside(kit: SimpleNamespace, source: Path) -> tuple[Path, Path]:
    link, outside = source / "case_02", source.parent / "elsewhere" / "case_02"
    outside.parent.mkdir()
    shutil.move(link, outside)
    link.symlink_to(outside, target_is_directory=True)
    return link, outside


def _link_relative_path_out(kit: SimpleNamespace, source: Path) -> tuple[Path, Path]:
    """A relative link whose '..' climbs out of the source."""
    link, outside = source / "case_03" / "nc.nii.gz", source.parent / "nc_elsewhere.nii.gz"
    shutil.move(link, outside)
    link.symlink_to(Path("..") / ".." / outside.name)
    return link, outside


def _link_dicom_slice_outside(kit: SimpleNamespace, source: Path) -> tuple[Path, Path]:
    """One file of a DICOM series folder (GDCM reads every file in it) links out."""
    shutil.rmtree(source / "case_03")
    folder = kit.write_case(source, "case_03", labelled=False, dicom_phases=("pv",), seed=20)
    link = sorted((folder / "pv").iterdir())[3]
    outside = source.parent / "outside_slice.dcm"
    shutil.move(link, outside)
    link.symlink_to(outside)
    return link, outside


def _mhd_header_names_a_data_file_outside(kit: SimpleNamespace, source: Path) -> tuple[Path, Path]:
    """No link at all: a MetaImage header whose ElementDataFile lies outside the source (ITK would read it)."""
    folder = source / "case_01"
    image = _read(folder / "del.nii.gz")
    (folder / "del.nii.gz").unlink()
    header = folder / "del.mhd"
    sitk.WriteImage(image, str(header))
    outside = source.parent / "secret.raw"
    shutil.move(folder / "del.raw", outside)
    text = header.read_text(encoding="utf-8")
    assert "ElementDataFile = del.raw" in text
    header.write_text(text.replace("ElementDataFile = del.raw", f"ElementDataFile = {outside}"), encoding="utf-8")
    return header, outside


@pytest.mark.parametrize("breaker", [_link_phase_to_a_file_outside, _link_label_to_etc, _link_case_folder_outside,
                                     _link_relative_path_out, _link_dicom_slice_outside,
                                     _mhd_header_names_a_data_file_outside])
def test_a_symbolic_link_or_data_file_leading_outside_the_source_is_refused(kit: SimpleNamespace, source: Path,
                                                                            output_root: Path, breaker) -> None:
    offending, target = breaker(kit, source)
    with kit.refused(source, output_root, match=re.escape(str(offending)) + ".*" + re.escape(str(target)) +
                     r".*outside the input folder .*\(path escaping the input\)") as caught:
        convert(source, output_root=output_root)
    assert len(caught.value.problems) == 1  # the link alone: nothing behind it was read


def test_every_link_leading_outside_is_reported_at_once(kit: SimpleNamespace, source: Path,
                                                        output_root: Path) -> None:
    offending = [_link_phase_to_a_file_outside(kit, source)[0], _link_case_folder_outside(kit, source)[0]]
    with kit.refused(source, output_root) as caught:
        convert(source, output_root=output_root)
    assert [problem.split(": ")[0] for problem in caught.value.problems] == [str(path) for path in offending]


def test_main_refuses_a_link_leading_outside_with_an_error_line_and_writes_nothing(
        kit: SimpleNamespace, source: Path, output_root: Path, capsys: pytest.CaptureFixture) -> None:
    link, _ = _link_phase_to_a_file_outside(kit, source)
    output_root.mkdir()
    assert main([str(source), "--output-root", str(output_root)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and "Traceback" not in captured.err + captured.out
    assert f"{link}: resolves to" in captured.err and "outside the input folder" in captured.err
    assert list(output_root.iterdir()) == []  # no dataset, no hidden staging folder .Dataset511_*


def _dataset_contents(dataset: Path) -> dict[str, object]:
    """Every image's voxels and geometry, and dataset.json without its 'source'."""
    contents: dict[str, object] = {}
    for file in sorted(dataset.rglob("*.nii.gz")):
        image = _read(file)
        contents[str(file.relative_to(dataset))] = (sitk.GetArrayFromImage(image).tobytes(), image.GetSpacing(),
                                                    image.GetOrigin(), image.GetDirection())
    dataset_json = json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))
    del dataset_json["nnunet_mm"]["source"]
    contents["dataset.json"] = dataset_json
    return contents


def test_symbolic_links_that_stay_inside_the_source_are_followed(kit: SimpleNamespace, source: Path,
                                                                 tmp_path: Path, output_root: Path) -> None:
    expected = _dataset_contents(convert(source, output_root=tmp_path / "expected", qa_figures=False))
    store = source / ".store"  # hidden: not a case folder itself
    store.mkdir()
    shutil.move(source / "case_01" / "art.nii.gz", store / "art_of_case_01.nii.gz")
    (source / "case_01" / "art.nii.gz").symlink_to(Path("..") / ".store" / "art_of_case_01.nii.gz")  # relative
    shutil.move(source / "case_02", store / "case_02")
    (source / "case_02").symlink_to(store / "case_02", target_is_directory=True)  # absolute, inside
    linked_source = tmp_path / "source_link"  # the source itself may be a link to anywhere
    linked_source.symlink_to(source, target_is_directory=True)

    assert _dataset_contents(convert(linked_source, output_root=output_root, qa_figures=False)) == expected


@pytest.mark.parametrize("archive_format, ending", [("zip", ".zip"), ("gztar", ".tar.gz")])
def test_an_archive_of_the_source_gives_the_same_dataset_as_the_folder(source: Path, tmp_path: Path,
                                                                       output_root: Path, archive_format: str,
                                                                       ending: str) -> None:
    expected = _dataset_contents(convert(source, output_root=tmp_path / "expected", qa_figures=False))
    archive = Path(shutil.make_archive(str(tmp_path / "MultiPhaseLiver"), archive_format, root_dir=source.parent,
                                       base_dir=source.name))
    assert archive.name == "MultiPhaseLiver" + ending
    dataset = convert(archive, output_root=output_root)
    assert dataset == output_root / DATASET
    assert _dataset_contents(dataset) == expected
    assert json.loads((dataset / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["source"] == str(archive.resolve())
    # the QA summary names the files inside the archive, not the temporary folder they were extracted to
    summary = json.loads((dataset / "nnunet_mm_qa" / "summary.json").read_text(encoding="utf-8"))
    assert summary["cases"]["case_01"]["phases"]["art"]["file"] == f"{archive}:source/case_01/art.nii.gz"
    coverage = json.loads((dataset / "nnunet_mm_qa" / "coverage.json").read_text(encoding="utf-8"))
    assert coverage["cases"]["case_01"]["phases"]["art"]["file"] == f"{archive}:source/case_01/art.nii.gz"


def test_an_archive_with_the_case_folders_at_its_top_level_is_read_too(source: Path, tmp_path: Path,
                                                                       output_root: Path) -> None:
    archive = Path(shutil.make_archive(str(tmp_path / "cases"), "tar", root_dir=source))
    dataset = convert(archive, output_root=output_root, qa_figures=False)
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == ["case_01.nii.gz", "case_02.nii.gz"]


def test_problems_inside_an_archive_name_the_archive_member(kit: SimpleNamespace, source: Path, tmp_path: Path,
                                                            output_root: Path) -> None:
    _break_missing_phase(source)
    archive = Path(shutil.make_archive(str(tmp_path / "MultiPhaseLiver"), "zip", root_dir=source.parent,
                                       base_dir=source.name))
    with pytest.raises(ConversionError, match=re.escape(f"{archive}:source/case_02: missing phase 'del'")):
        convert(archive, output_root=output_root)
    kit.assert_nothing_written(output_root)


@pytest.mark.parametrize("member", ["../x.nii.gz", "/tmp/x.nii.gz"])
def test_an_archive_member_escaping_the_extraction_folder_is_refused(kit: SimpleNamespace, source: Path,
                                                                     tmp_path: Path, output_root: Path,
                                                                     member: str) -> None:
    archive = tmp_path / "MultiPhaseLiver.tar.gz"
    data = (source / "case_01" / "pv.nii.gz").read_bytes()
    escaping = tarfile.TarInfo(member)  # a TarInfo keeps the name as given (add() would strip a leading '/')
    escaping.size = len(data)
    with tarfile.open(archive, "w:gz") as handle:
        handle.add(source, arcname="source")
        handle.addfile(escaping, io.BytesIO(data))
    with pytest.raises(ValueError, match=re.escape(str(archive)) + ".*path escaping the input.*" + re.escape(member)):
        convert(archive, output_root=output_root)
    kit.assert_nothing_written(output_root)
    assert not (tmp_path / "x.nii.gz").exists()


def test_an_archive_with_a_link_leading_outside_is_refused(kit: SimpleNamespace, source: Path, tmp_path: Path,
                                                           output_root: Path) -> None:
    archive = tmp_path / "MultiPhaseLiver.tar"
    link = tarfile.TarInfo("source/case_01/art.nii.gz")
    link.type, link.linkname = tarfile.SYMTYPE, "../../../secret.nii.gz"
    with tarfile.open(archive, "w") as handle:
        handle.add(source / "case_02", arcname="source/case_02")
        handle.addfile(link)
    with pytest.raises(ValueError, match=re.escape(str(archive)) + ".*path escaping the input"):
        convert(archive, output_root=output_root)
    kit.assert_nothing_written(output_root)


def test_a_source_that_is_neither_a_folder_nor_an_archive_is_refused(tmp_path: Path, output_root: Path) -> None:
    not_a_source = tmp_path / "cases.txt"
    not_a_source.write_text("case_01\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(str(not_a_source)) + ": neither a folder nor an archive"):
        convert(not_a_source, output_root=output_root)
    with pytest.raises(FileNotFoundError, match="source folder not found"):
        convert(tmp_path / "missing", output_root=output_root)


def test_the_command_line_help_says_archives_are_accepted() -> None:
    from nnunet_mm.dataset_conversion.Dataset511_MultiPhaseLiver import build_parser

    assert ".zip/.tar/.tar.gz archive" in " ".join(build_parser("511").format_help().split())


def test_the_qa_figure_says_when_the_axial_slice_lies_outside_a_phase(half_arterial_source: Path, output_root: Path,
                                                                      monkeypatch) -> None:
    """The QA centre slice (z 5) lies below the half arterial phase (z 6-11): its panel shows only the resampler's
    fill, so the caption says so instead of a similarity score of other voxels."""
    from figure_checks import capture_saved_figures, figure_texts

    saved = capture_saved_figures(monkeypatch)
    convert(half_arterial_source, output_root=output_root, register="none", qa_figures=True)
    texts = [text for figure in saved for text in figure_texts(figure)]
    art_axial = [text for text in texts if text.startswith("art axial")]
    assert art_axial and all("outside this phase's field of view" in text and "covers z 6-11" in text
                             for text in art_axial), art_axial
    assert any(text.startswith("pv axial z") and "(reference)" in text for text in texts)
    assert any(text.startswith("del axial") and "NCC" in text for text in texts)
