"""``nnunet_mm compare`` on hand-made label maps whose Dice, lesion counts and paired differences are known exactly.

The layout is the one nnU-Net writes: a raw dataset (``dataset.json``, ``labelsTr``), a model output folder
``nnUNetTrainer__nnUNetPlans__2d`` whose validation predictions are split over ``fold_0`` and ``fold_1``, and two
``nnUNetv2_predict`` folders (two seeds of a second method). Cases are ``1 × 16 × 16`` volumes with label 1 "lesion":

========  ==========================  =================================  =============================
case      reference                   stock (one run)                    cmg run 1 / cmg run 2
========  ==========================  =================================  =============================
case_a    lesions L1, L2 (16 px each)  L1 + a 4 px blob: Dice 8/13, 1 FP   L1+L2: 1  /  L1: 2/3
case_b    lesion L3 (64 px)            half of L3: Dice 2/3                L3: 1  /  L3: 1
case_c    empty                        empty: Dice NaN                     empty: NaN / NaN
case_d    empty                        4 px blob: Dice 0, 1 FP             empty: NaN / NaN
========  ==========================  =================================  =============================
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mm.cli.main import main as nnunet_mm
from nnunet_mm.evaluation.compare import compare_arms, evaluated_labels
from nnunet_mm.evaluation.lesions import count_lesions
from nnunet_mm.evaluation.paired_statistics import paired_difference
from nnunet_mm.evaluation.report import write_report
from nnunet_mm.evaluation.runs import collect_arm, collect_run

SHAPE = (1, 16, 16)
LABELS = {"background": 0, "lesion": 1}
FAST = dict(n_resamples=500, progress=False)  # bootstrap resamples: enough for these tests, quick


def _mask(*boxes: tuple[slice, slice]) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    for rows, columns in boxes:
        mask[0, rows, columns] = 1
    return mask


L1 = (slice(1, 5), slice(1, 5))
L2 = (slice(10, 14), slice(10, 14))
L3 = (slice(4, 12), slice(4, 12))
L3_TOP_HALF = (slice(4, 8), slice(4, 12))
BLOB = (slice(1, 3), slice(12, 14))

REFERENCE = {"case_a": _mask(L1, L2), "case_b": _mask(L3), "case_c": _mask(), "case_d": _mask()}
STOCK = {"case_a": _mask(L1, BLOB), "case_b": _mask(L3_TOP_HALF), "case_c": _mask(), "case_d": _mask(BLOB)}
CMG_RUNS = ({"case_a": _mask(L1, L2), "case_b": _mask(L3), "case_c": _mask(), "case_d": _mask()},
            {"case_a": _mask(L1), "case_b": _mask(L3), "case_c": _mask(), "case_d": _mask()})
STOCK_DICE = {"case_a": 8 / 13, "case_b": 2 / 3, "case_c": math.nan, "case_d": 0.0}
CMG_DICE = {"case_a": (1 + 2 / 3) / 2, "case_b": 1.0, "case_c": math.nan, "case_d": math.nan}


def _write_labels(folder: Path, label_maps: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for case, label_map in label_maps.items():
        sitk.WriteImage(sitk.GetImageFromArray(label_map), str(folder / f"{case}.nii.gz"))
    return folder


def _write_dataset_json(folder: Path, labels: dict | None = None) -> Path:
    path = folder / "dataset.json"
    path.write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": labels or LABELS, "numTraining": 4,
                                "file_ending": ".nii.gz"}), encoding="utf-8")
    return path


@dataclass
class Layout:
    labels_tr: Path
    model_folder: Path
    cmg_runs: tuple[Path, Path]


def _layout(root: Path) -> Layout:
    raw = root / "nnUNet_raw" / "Dataset590_Lesions"
    labels_tr = _write_labels(raw / "labelsTr", REFERENCE)
    _write_dataset_json(raw)
    model_folder = root / "nnUNet_results" / "Dataset590_Lesions" / "nnUNetTrainer__nnUNetPlans__2d"
    _write_labels(model_folder / "fold_0" / "validation", {c: STOCK[c] for c in ("case_a", "case_b")})
    _write_labels(model_folder / "fold_1" / "validation", {c: STOCK[c] for c in ("case_c", "case_d")})
    (model_folder / "fold_0" / "validation" / "summary.json").write_text("{}", encoding="utf-8")
    _write_dataset_json(model_folder)
    cmg_runs = tuple(_write_labels(root / f"cmg_seed{i}", run) for i, run in enumerate(CMG_RUNS))
    return Layout(labels_tr=labels_tr, model_folder=model_folder, cmg_runs=cmg_runs)


@pytest.fixture
def layout(tmp_path) -> Layout:
    return _layout(tmp_path)


def _arms(layout: Layout):
    return [collect_arm("stock", [layout.model_folder]), collect_arm("cmg", list(layout.cmg_runs))]


# lesion-wise detection


def test_one_of_two_lesions_hit_plus_a_spurious_blob_gives_recall_half_and_one_false_positive():
    counts = count_lesions(REFERENCE["case_a"], STOCK["case_a"])
    assert (counts.reference_lesions, counts.detected_lesions, counts.predicted_lesions,
            counts.false_positive_lesions) == (2, 1, 2, 1)
    assert counts.recall == 0.5


def test_lesions_are_8_connected_in_2d_and_26_connected_in_3d():
    diagonal_2d = np.eye(3, dtype=np.uint8)
    assert count_lesions(diagonal_2d, diagonal_2d).reference_lesions == 1
    corner_to_corner_3d = np.zeros((2, 2, 2), np.uint8)
    corner_to_corner_3d[0, 0, 0] = corner_to_corner_3d[1, 1, 1] = 1
    assert count_lesions(corner_to_corner_3d, corner_to_corner_3d).reference_lesions == 1


def test_an_overlap_below_the_threshold_neither_detects_nor_spares_the_false_positive():
    reference = _mask(L3)
    grazing = _mask((slice(11, 13), slice(4, 12)))  # 8 px inside L3, 8 px below it
    assert count_lesions(reference, grazing).detected_lesions == 1
    strict = count_lesions(reference, grazing, min_overlap_voxels=9)
    assert (strict.detected_lesions, strict.false_positive_lesions) == (0, 1)


def test_a_case_without_reference_lesions_has_undefined_recall():
    assert math.isnan(count_lesions(_mask(), _mask(BLOB)).recall)


# paired statistics


def test_an_arm_better_on_every_case_has_a_ci_around_the_mean_that_excludes_zero():
    baseline = np.array([0.70, 0.80, 0.60, 0.75, 0.85, 0.65, 0.72, 0.78])
    gains = np.array([0.10, 0.05, 0.20, 0.15, 0.10, 0.08, 0.12, 0.06])
    result = paired_difference(baseline + gains, baseline, n_resamples=2000, seed=3)
    assert result.mean == pytest.approx(gains.mean())
    assert 0 < result.ci_low <= result.mean <= result.ci_high
    assert (result.better, result.worse, result.tied, result.num_cases) == (8, 0, 0, 8)
    assert result.p_value == pytest.approx(2 / 2 ** 8)  # exact Wilcoxon: all 8 signs positive


def test_the_bootstrap_interval_reproduces_with_the_same_seed():
    arm, baseline = [0.9, 0.7, 0.8, 0.6, 0.95], [0.8, 0.75, 0.7, 0.5, 0.9]
    first = paired_difference(arm, baseline, n_resamples=500, seed=7)
    assert paired_difference(arm, baseline, n_resamples=500, seed=7) == first
    assert first.worse == 1 and first.better == 4


def test_undefined_differences_are_left_out_and_counted():
    result = paired_difference([0.5, math.nan, 0.9], [0.4, math.nan, math.nan], n_resamples=100)
    assert (result.num_cases, result.num_undefined) == (1, 2)
    assert result.mean == pytest.approx(0.1)
    assert math.isnan(result.ci_low)  # one case: no interval


def test_all_zero_differences_give_p_one_instead_of_an_error():
    result = paired_difference([0.5, 0.7, 0.9], [0.5, 0.7, 0.9], n_resamples=100)
    assert (result.p_value, result.mean, result.ci_low, result.ci_high, result.tied) == (1.0, 0.0, 0.0, 0.0, 3)


def test_an_unknown_interval_method_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="percentile"):
        paired_difference([1.0], [0.0], ci_method="studentized")


# runs and arms


def test_a_model_folder_is_read_across_its_folds_validation_predictions(layout):
    run = collect_run(layout.model_folder, name="stock")
    assert list(run.prediction_files) == ["case_a", "case_b", "case_c", "case_d"]
    assert run.prediction_files["case_c"].parent == layout.model_folder / "fold_1" / "validation"
    assert run.file_ending == ".nii.gz" and run.dataset_json == layout.model_folder / "dataset.json"
    assert list(collect_run(layout.model_folder, name="stock", folds=[0]).prediction_files) == ["case_a", "case_b"]


def test_a_missing_fold_is_named(layout):
    with pytest.raises(FileNotFoundError, match=r"fold_3[/\\]validation missing"):
        collect_run(layout.model_folder, name="stock", folds=[0, 3])


def test_a_case_validated_in_two_folds_is_refused(layout):
    _write_labels(layout.model_folder / "fold_all" / "validation", {"case_a": STOCK["case_a"]})
    with pytest.raises(ValueError, match="case_a has validation predictions in"):
        collect_run(layout.model_folder, name="stock", folds=[0, "all"])
    assert len(collect_run(layout.model_folder, name="stock").prediction_files) == 4  # default: numbered folds only


def test_the_file_ending_of_a_prediction_folder_without_dataset_json_is_inferred(layout):
    run = collect_run(layout.cmg_runs[0], name="cmg run 1")
    assert run.file_ending == ".nii.gz" and run.dataset_json is None


def test_region_labels_are_refused():
    with pytest.raises(ValueError, match="regions are not supported"):
        evaluated_labels({"labels": {"background": 0, "whole": [1, 2], "core": 2}}, source="dataset.json")


def test_the_ignore_label_is_not_evaluated():
    labels, ignore = evaluated_labels({"labels": {"background": 0, "lesion": 1, "ignore": 2}}, source="d.json")
    assert labels == {1: "lesion"} and ignore == 2


# the comparison


def test_comparison_scores_every_case_exactly(layout):
    comparison = compare_arms(_arms(layout), layout.labels_tr, **FAST)
    assert comparison.cases == ("case_a", "case_b", "case_c", "case_d") and comparison.labels == {1: "lesion"}
    stock, cmg = comparison.summaries[1]["stock"], comparison.summaries[1]["cmg"]
    for case, index in zip(comparison.cases, range(4)):
        assert stock.case_dice[index] == pytest.approx(STOCK_DICE[case], nan_ok=True)
        assert cmg.case_dice[index] == pytest.approx(CMG_DICE[case], nan_ok=True)
    d_scores = comparison.scores["stock"][0]["case_d"][1]
    assert d_scores.dice == 0.0 and d_scores.lesions.false_positive_lesions == 1
    # undefined Dice (case_c; case_d for cmg) is left out of the means
    assert stock.dice_mean == pytest.approx((8 / 13 + 2 / 3 + 0) / 3) and stock.num_undefined_dice == 1
    assert cmg.dice_mean == pytest.approx((CMG_DICE["case_a"] + 1) / 2) and cmg.num_undefined_dice == 2
    assert stock.reference_lesions == 3 and stock.lesion_recall == pytest.approx(2 / 3)
    assert stock.false_positives_per_case == pytest.approx(0.5)


def test_several_runs_keep_their_own_means_and_spread(layout):
    comparison = compare_arms(_arms(layout), layout.labels_tr, **FAST)
    cmg = comparison.summaries[1]["cmg"]
    assert cmg.num_runs == 2
    assert cmg.run_dice_means == pytest.approx((1.0, (2 / 3 + 1) / 2))
    assert cmg.dice_std_over_runs == pytest.approx(np.std([1.0, 5 / 6], ddof=1))
    assert cmg.run_lesion_recalls == pytest.approx((1.0, 2 / 3)) and cmg.lesion_recall == pytest.approx(5 / 6)
    assert cmg.run_false_positives_per_case == (0.0, 0.0)
    assert math.isnan(comparison.summaries[1]["stock"].dice_std_over_runs)  # one run: no spread
    # two runs against one baseline run: each run is compared with the baseline's run average
    assert cmg.run_differences_against == "baseline mean over runs"
    assert cmg.run_mean_differences == pytest.approx(((1 - 8 / 13 + 1 - 2 / 3) / 2, (2 / 3 - 8 / 13 + 1 / 3) / 2))


def test_paired_differences_leave_undefined_cases_out_and_count_them(layout):
    comparison = compare_arms(_arms(layout), layout.labels_tr, **FAST)
    cmg = comparison.summaries[1]["cmg"]
    assert comparison.summaries[1]["stock"].paired is None
    assert cmg.case_differences[:2] == pytest.approx((CMG_DICE["case_a"] - 8 / 13, 1 / 3))
    assert all(math.isnan(d) for d in cmg.case_differences[2:])
    paired = cmg.paired
    assert paired.mean == pytest.approx((CMG_DICE["case_a"] - 8 / 13 + 1 / 3) / 2)
    assert (paired.num_cases, paired.num_undefined, paired.better, paired.worse, paired.tied) == (2, 2, 2, 0, 0)
    assert paired.ci_low <= paired.mean <= paired.ci_high


def test_the_baseline_can_be_any_arm_and_flips_the_sign(layout):
    comparison = compare_arms(_arms(layout), layout.labels_tr, baseline="cmg", **FAST)
    stock = comparison.summaries[1]["stock"]
    assert stock.paired.mean == pytest.approx(-(CMG_DICE["case_a"] - 8 / 13 + 1 / 3) / 2)
    assert (stock.paired.better, stock.paired.worse) == (0, 2)


def test_runs_with_different_cases_are_refused_with_the_missing_cases(layout):
    (layout.cmg_runs[1] / "case_b.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"cmg run 2 lacks 1: case_b.*--allow-partial"):
        compare_arms(_arms(layout), layout.labels_tr, **FAST)
    comparison = compare_arms(_arms(layout), layout.labels_tr, allow_partial=True, **FAST)
    assert comparison.cases == ("case_a", "case_c", "case_d")
    assert comparison.left_out_cases == {"stock": ("case_b",), "cmg run 1": ("case_b",)}


def test_a_prediction_without_reference_is_refused(layout):
    _write_labels(layout.cmg_runs[0], {"case_z": _mask()})
    with pytest.raises(ValueError, match=r"without a reference label in .*labelsTr: cmg run 1: case_z"):
        compare_arms(_arms(layout), layout.labels_tr, **FAST)


def test_an_unknown_baseline_is_refused_with_the_arm_names(layout):
    with pytest.raises(ValueError, match=r"baseline 'nnunet' is not one of the arms \['stock', 'cmg'\]"):
        compare_arms(_arms(layout), layout.labels_tr, baseline="nnunet", **FAST)


def test_report_writes_nan_as_null_and_refuses_to_overwrite(layout, tmp_path):
    comparison = compare_arms(_arms(layout), layout.labels_tr, **FAST)
    files = write_report(comparison, tmp_path / "out")
    content = json.loads(files.json.read_text(encoding="utf-8"))
    assert content["per_case"]["lesion"]["stock"]["case_c"]["dice"] is None
    assert content["per_case"]["lesion"]["cmg"]["case_d"]["dice_per_run"] == [None, None]
    assert content["per_case"]["lesion"]["stock"]["case_d"]["false_positive_lesions_per_run"] == [1]
    difference = content["summary"]["lesion"]["cmg"]["difference_to_baseline"]
    assert difference["num_undefined"] == 2 and difference["better"] == 2
    assert "| cmg | 2 |" in files.markdown.read_text(encoding="utf-8")
    assert files.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError, match="compare.json, compare.md, compare.png"):
        write_report(comparison, tmp_path / "out")
    assert not list((tmp_path / "out").glob(".*partial"))


# the command line


def _command(layout: Layout, output: Path, *extra: str) -> list[str]:
    return ["compare", "--arm", f"stock={layout.model_folder}",
            "--arm", f"cmg={layout.cmg_runs[0]},{layout.cmg_runs[1]}", "--ref", str(layout.labels_tr),
            "-o", str(output), "--resamples", "200", "--disable_progress_bar", *extra]


def test_cli_writes_the_report_and_prints_the_table(layout, tmp_path, capsys):
    output = tmp_path / "compare_out"
    assert nnunet_mm(_command(layout, output, "-f", "0", "1")) == 0
    printed = capsys.readouterr().out
    assert "| stock | 1 |" in printed and "| cmg | 2 |" in printed and f"wrote {output / 'compare.png'}" in printed
    assert {p.name for p in output.iterdir()} == {"compare.json", "compare.md", "compare.png"}
    assert json.loads((output / "compare.json").read_text(encoding="utf-8"))["settings"]["n_resamples"] == 200


def test_cli_refuses_to_overwrite_without_the_flag(layout, tmp_path, capsys):
    output = tmp_path / "compare_out"
    assert nnunet_mm(_command(layout, output)) == 0
    capsys.readouterr()
    assert nnunet_mm(_command(layout, output)) == 1
    error = capsys.readouterr().err
    assert error.startswith("nnunet_mm compare: error:") and "already holds compare.json" in error
    assert "--overwrite" in error
    assert nnunet_mm(_command(layout, output, "--overwrite")) == 0


@pytest.mark.parametrize("arm, message", [("stock=/no/such/folder", "run folder /no/such/folder (of stock) does not"),
                                          ("stock", "--arm expects NAME=FOLDER")])
def test_cli_reports_a_bad_arm_as_one_error_line(layout, tmp_path, capsys, arm, message):
    command = ["compare", "--arm", arm, "--arm", f"cmg={layout.cmg_runs[0]}", "--ref", str(layout.labels_tr),
               "-o", str(tmp_path / "out"), "--disable_progress_bar"]
    assert nnunet_mm(command) == 1
    error = capsys.readouterr().err
    assert error.startswith("nnunet_mm compare: error:") and message in error and "Traceback" not in error


def test_a_prediction_of_another_shape_than_its_reference_is_refused(layout):
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((1, 8, 8), np.uint8)), str(layout.cmg_runs[1] / "case_b.nii.gz"))
    with pytest.raises(ValueError, match=r"cmg_seed1[/\\]case_b.nii.gz has shape \(1, 8, 8\) but its reference"):
        compare_arms(_arms(layout), layout.labels_tr, **FAST)


def test_lesions_in_the_ignore_label_are_not_false_positives(tmp_path):
    reference = _mask(L1, L2)
    reference[0, 0:3, 11:15] = 2  # ignore region around the blob
    raw = tmp_path / "raw"
    _write_labels(raw / "labelsTr", {"case_a": reference})
    _write_dataset_json(raw, labels={"background": 0, "lesion": 1, "ignore": 2})
    runs = [_write_labels(tmp_path / name, {"case_a": prediction})
            for name, prediction in (("stock", STOCK["case_a"]), ("cmg", CMG_RUNS[0]["case_a"]))]
    comparison = compare_arms([collect_arm("stock", [runs[0]]), collect_arm("cmg", [runs[1]])], raw / "labelsTr",
                              **FAST)
    scores = comparison.scores["stock"][0]["case_a"][1]
    assert scores.lesions.false_positive_lesions == 0 and scores.dice == pytest.approx(2 / 3)
