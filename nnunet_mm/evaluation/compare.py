"""Paired comparison of several trained nnU-Net models (arms) on the same cases: Dice, lesion detection, statistics.

Per case and label, every run's prediction is scored against the reference with nnU-Net's own counts
(:func:`nnunet_mm.evaluation.metrics.dice`: Dice of two empty masks is NaN and left out of means) and by lesion-wise
detection (:mod:`nnunet_mm.evaluation.lesions`). Images are read with the nnU-Net reader that the dataset.json
names (``SimpleITKIO`` for NIfTI).

How the numbers are combined:

* **Runs (seeds) of an arm**: per case, the arm's Dice is the mean over its runs of the defined Dice values (the case
  is the paired unit). Each run's mean over cases is kept too, and the spread of those run means is the
  "± std over runs" of the reports.
* **Arm mean Dice**: the mean over cases of the run-averaged Dice, leaving out cases where it is undefined.
* **Lesions**: recall is pooled, ``detected / reference lesions`` summed over cases (and runs); false positives are
  reported per case, averaged over cases and runs.
* **Paired difference** ``arm − baseline`` per case (:mod:`nnunet_mm.evaluation.paired_statistics`): its mean,
  bootstrap confidence interval and Wilcoxon p over the cases where both Dice values are defined; the others are
  counted as undefined. Per run, the mean difference to the baseline's run of the same index (when both arms have
  as many runs) or to the baseline's run average shows whether the effect holds for every seed.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from nnunet_mm.evaluation.lesions import LesionCounts, count_lesions
from nnunet_mm.evaluation.metrics import dice, mean_of_defined
from nnunet_mm.evaluation.paired_statistics import PairedDifference, check_bootstrap_options, paired_difference
from nnunet_mm.evaluation.runs import Arm, infer_file_ending, read_dataset_json

logger = logging.getLogger(__name__)

#: how many missing cases an error message lists per run
_CASES_SHOWN = 5


@dataclass(frozen=True)
class CaseScores:
    """One run's scores of one case and one label: Dice (NaN when both masks are empty) and lesion counts."""

    dice: float
    lesions: LesionCounts


@dataclass(frozen=True)
class ComparisonSettings:
    """The options a comparison ran with (written into its report so that it can be reproduced)."""

    baseline: str
    min_overlap_voxels: int
    n_resamples: int
    confidence_level: float
    ci_method: str
    seed: int


@dataclass(frozen=True)
class ArmLabelSummary:
    """One arm's results for one label (see the module docstring for how runs and cases are combined).

    Attributes:
        arm: the arm's name.
        num_runs: its runs.
        case_dice: per compared case (in :attr:`Comparison.cases` order), the Dice averaged over runs; NaN where no
            run's Dice is defined.
        dice_mean: mean of ``case_dice`` over the cases where it is defined.
        dice_std_over_runs: sample standard deviation of ``run_dice_means``; NaN with one run.
        dice_std_over_cases: sample standard deviation of the defined ``case_dice``.
        num_undefined_dice: cases whose ``case_dice`` is NaN.
        run_dice_means: per run, the mean Dice over the cases where it is defined.
        reference_lesions: reference lesions over all compared cases (the same for every run).
        lesion_recall: detected / reference lesions, pooled over cases and runs; NaN without reference lesions.
        run_lesion_recalls: per run, its pooled lesion recall.
        false_positives_per_case: false-positive lesions per case, averaged over cases and runs.
        run_false_positives_per_case: per run, false-positive lesions per case.
        case_differences: per case, ``case_dice − baseline case_dice``; None for the baseline.
        paired: statistics of ``case_differences``; None for the baseline.
        run_mean_differences: per run, mean over cases of its Dice minus the baseline's (see
            ``run_differences_against``); None for the baseline.
        run_differences_against: ``"baseline run of the same index"`` or ``"baseline mean over runs"``; None for
            the baseline.
    """

    arm: str
    num_runs: int
    case_dice: tuple[float, ...]
    dice_mean: float
    dice_std_over_runs: float
    dice_std_over_cases: float
    num_undefined_dice: int
    run_dice_means: tuple[float, ...]
    reference_lesions: int
    lesion_recall: float
    run_lesion_recalls: tuple[float, ...]
    false_positives_per_case: float
    run_false_positives_per_case: tuple[float, ...]
    case_differences: tuple[float, ...] | None = None
    paired: PairedDifference | None = None
    run_mean_differences: tuple[float, ...] | None = None
    run_differences_against: str | None = None


@dataclass(frozen=True)
class Comparison:
    """The result of :func:`compare_arms`.

    Attributes:
        arms: the arms compared, baseline included, in the order given.
        reference_folder: the folder of the reference labels.
        dataset_json: the dataset.json the labels were taken from.
        labels: label value → name, the labels evaluated.
        cases: the compared cases, sorted.
        left_out_cases: run name → its cases that were not compared (only with ``allow_partial``).
        scores: arm name → per run (in order) → case → label value → :class:`CaseScores`.
        summaries: label value → arm name → :class:`ArmLabelSummary`.
        settings: the options used.
    """

    arms: tuple[Arm, ...]
    reference_folder: Path
    dataset_json: Path
    labels: Mapping[int, str]
    cases: tuple[str, ...]
    left_out_cases: Mapping[str, tuple[str, ...]]
    scores: Mapping[str, tuple[Mapping[str, Mapping[int, CaseScores]], ...]]
    summaries: Mapping[int, Mapping[str, ArmLabelSummary]]
    settings: ComparisonSettings


def evaluated_labels(dataset_json: Mapping[str, Any], *, source: Path | str,
                     selected: Sequence[int] | None = None) -> tuple[dict[int, str], int | None]:
    """The labels to evaluate, from a dataset.json's ``labels``.

    Args:
        dataset_json: the content of the dataset.json.
        source: its path, for error messages.
        selected: label values to evaluate; None = every label except background and ``ignore``.

    Returns:
        ``(labels, ignore_label)``: label value → name, and the value of nnU-Net's ``ignore`` label (None if none).

    Raises:
        ValueError: no ``labels``, region labels (not supported), or a selected value that is not a label.
    """
    labels = dataset_json.get("labels")
    if not isinstance(labels, Mapping) or not labels:
        raise ValueError(f"{source}: no 'labels' mapping (name → value); is this an nnU-Net dataset.json?")
    regions = sorted(name for name, value in labels.items() if isinstance(value, (list, tuple)) and len(value) > 1)
    if regions:
        raise ValueError(f"{source}: the labels {regions} are regions (lists of label values); nnunet_mm compare "
                         f"evaluates plain labels only, regions are not supported.")
    values = {name: int(value[0] if isinstance(value, (list, tuple)) else value) for name, value in labels.items()}
    ignore_label = values.pop("ignore", None)
    foreground = {value: name for name, value in values.items() if value != 0}
    if selected is None:
        return dict(sorted(foreground.items())), ignore_label
    unknown = sorted(set(selected) - set(foreground))
    if unknown:
        raise ValueError(f"labels {unknown} are not foreground labels of {source}; choose from "
                         f"{dict(sorted(foreground.items()))}.")
    return {value: foreground[value] for value in sorted(set(selected))}, ignore_label


def _description_json(arms: Sequence[Arm], reference_folder: Path,
                      dataset_json: Path | None) -> tuple[Path, dict[str, Any]]:
    """The dataset.json that describes labels and reference files: the user's, else the runs' (which must agree on
    the labels), else the raw dataset's next to ``labelsTr``/``labelsTs``."""
    if dataset_json is not None:
        return Path(dataset_json), read_dataset_json(dataset_json)
    candidates = [run.dataset_json for arm in arms for run in arm.runs if run.dataset_json is not None]
    if (reference_folder.parent / "dataset.json").is_file():
        candidates.append(reference_folder.parent / "dataset.json")
    if not candidates:
        raise ValueError(f"no dataset.json in the run folders or next to {reference_folder}; pass the dataset's "
                         f"dataset.json (--dataset-json) so that the labels are known.")
    chosen = candidates[0]
    content = read_dataset_json(chosen)
    for other in candidates[1:]:
        other_labels = read_dataset_json(other).get("labels")
        if other_labels != content.get("labels"):
            raise ValueError(f"{chosen} and {other} name different labels ({content.get('labels')} vs "
                             f"{other_labels}); these runs do not belong to one dataset, or pass the dataset.json to "
                             f"use (--dataset-json).")
    return chosen, content


def _listed(cases: Sequence[str]) -> str:
    shown = ", ".join(cases[:_CASES_SHOWN])
    return shown + (f" and {len(cases) - _CASES_SHOWN} more" if len(cases) > _CASES_SHOWN else "")


def _compared_cases(arms: Sequence[Arm], reference_cases: set[str], reference_folder: Path,
                    allow_partial: bool) -> tuple[tuple[str, ...], dict[str, tuple[str, ...]]]:
    """The cases every run predicted, and per run the cases left out; refuses cases without reference, and (unless
    ``allow_partial``) runs that do not all cover the same cases."""
    runs = [run for arm in arms for run in arm.runs]
    unreferenced = {run.name: sorted(set(run.prediction_files) - reference_cases) for run in runs}
    unreferenced = {name: cases for name, cases in unreferenced.items() if cases}
    if unreferenced:
        details = "; ".join(f"{name}: {_listed(cases)}" for name, cases in unreferenced.items())
        raise ValueError(f"predicted cases without a reference label in {reference_folder}: {details}. Is this the "
                         f"right reference folder (labelsTr for validation folds, labelsTs for a test set)?")
    union = set().union(*(run.prediction_files for run in runs))
    common = set(union).intersection(*(run.prediction_files for run in runs))
    missing = {run.name: sorted(union - set(run.prediction_files)) for run in runs}
    missing = {name: cases for name, cases in missing.items() if cases}
    if missing and not allow_partial:
        details = "; ".join(f"{name} lacks {len(cases)}: {_listed(cases)}" for name, cases in missing.items())
        raise ValueError(f"the runs cover different cases ({details}). Predict the missing cases, choose the same "
                         f"folds for every run, or compare only the cases all runs have (allow_partial / "
                         f"--allow-partial).")
    if not common:
        raise ValueError("the runs have no case in common; nothing to compare.")
    left_out = {run.name: tuple(sorted(set(run.prediction_files) - common)) for run in runs}
    left_out = {name: cases for name, cases in left_out.items() if cases}
    if left_out:
        logger.warning("comparing the %d cases all runs have; left out: %s", len(common),
                       {name: len(cases) for name, cases in left_out.items()})
    return tuple(sorted(common)), left_out


@dataclass(frozen=True)
class _CaseTask:
    """Everything one worker needs to score one case in every run (picklable for a process pool)."""

    case: str
    reference_file: Path
    prediction_files: tuple[Path, ...]
    labels: tuple[int, ...]
    ignore_label: int | None
    min_overlap_voxels: int
    reader_class: type


def _read_label_map(reader: Any, file: Path) -> np.ndarray:
    from nnunet_mm.io.images import verify_image_file

    verify_image_file(Path(file), check_finite=False)  # nnU-Net's reader takes a cut NIfTI file for a complete one
    segmentation, _ = reader.read_seg(str(file))
    return np.asarray(segmentation[0])  # nnU-Net readers return (1, X, Y, Z)


def _score_case(task: _CaseTask) -> list[dict[int, CaseScores]]:
    """Per prediction file of ``task`` (in order), label value → scores."""
    reader = task.reader_class()
    reference = _read_label_map(reader, task.reference_file)
    ignore = None if task.ignore_label is None else reference == task.ignore_label
    results = []
    for prediction_file in task.prediction_files:
        prediction = _read_label_map(reader, prediction_file)
        if prediction.shape != reference.shape:
            raise ValueError(f"{prediction_file} has shape {prediction.shape} but its reference "
                             f"{task.reference_file} has {reference.shape}; were they made from the same images?")
        scores = {}
        for label in task.labels:
            reference_mask, predicted_mask = reference == label, prediction == label
            if ignore is not None:
                predicted_mask &= ~ignore  # nnU-Net's evaluation leaves the ignore label's voxels out
            scores[label] = CaseScores(
                dice=dice(reference_mask, predicted_mask, ignore),
                lesions=count_lesions(reference_mask, predicted_mask, min_overlap_voxels=task.min_overlap_voxels))
        results.append(scores)
    return results


def _score_cases(tasks: Sequence[_CaseTask], *, num_processes: int, progress: bool) -> list[list[dict]]:
    bar = dict(total=len(tasks), desc="scoring cases", unit="case", disable=not progress)
    if num_processes <= 1:
        return [_score_case(task) for task in tqdm(tasks, **bar)]
    # spawn, as nnU-Net's own evaluation: forking a process that has started torch's threads can hang. An executor,
    # not a Pool: a worker that dies raises BrokenProcessPool here instead of being restarted forever
    with ProcessPoolExecutor(num_processes, mp_context=multiprocessing.get_context("spawn")) as executor:
        return list(tqdm(executor.map(_score_case, tasks), **bar))


def _sample_std(values: Sequence[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return float(np.std(defined, ddof=1)) if len(defined) > 1 else math.nan


def _summarize(arm: Arm, label: int, cases: Sequence[str],
               run_scores: Sequence[Mapping[str, Mapping[int, CaseScores]]]) -> ArmLabelSummary:
    dice_per_run = [[scores[case][label].dice for case in cases] for scores in run_scores]
    lesions_per_run = [[scores[case][label].lesions for case in cases] for scores in run_scores]
    case_dice = tuple(mean_of_defined(values) for values in zip(*dice_per_run))
    reference_lesions = sum(counts.reference_lesions for counts in lesions_per_run[0])
    run_recalls = tuple(sum(c.detected_lesions for c in counts) / reference_lesions if reference_lesions else math.nan
                        for counts in lesions_per_run)
    run_false_positives = tuple(float(np.mean([c.false_positive_lesions for c in counts]))
                                for counts in lesions_per_run)
    run_means = tuple(mean_of_defined(values) for values in dice_per_run)
    return ArmLabelSummary(
        arm=arm.name, num_runs=len(arm.runs), case_dice=case_dice, dice_mean=mean_of_defined(case_dice),
        dice_std_over_runs=_sample_std(run_means), dice_std_over_cases=_sample_std(case_dice),
        num_undefined_dice=sum(math.isnan(v) for v in case_dice), run_dice_means=run_means,
        reference_lesions=reference_lesions, lesion_recall=mean_of_defined(run_recalls),
        run_lesion_recalls=run_recalls, false_positives_per_case=float(np.mean(run_false_positives)),
        run_false_positives_per_case=run_false_positives)


def _with_paired_difference(summary: ArmLabelSummary, baseline: ArmLabelSummary, *, label: int,
                            cases: Sequence[str], run_scores: Sequence[Mapping[str, Mapping[int, CaseScores]]],
                            baseline_run_scores: Sequence[Mapping[str, Mapping[int, CaseScores]]],
                            settings: ComparisonSettings) -> ArmLabelSummary:
    paired = paired_difference(summary.case_dice, baseline.case_dice, n_resamples=settings.n_resamples,
                               confidence_level=settings.confidence_level, ci_method=settings.ci_method,
                               seed=settings.seed)
    matching_runs = len(run_scores) == len(baseline_run_scores)
    run_differences = []
    for index, scores in enumerate(run_scores):
        if matching_runs:
            against = [baseline_run_scores[index][case][label].dice for case in cases]
        else:
            against = list(baseline.case_dice)
        run_differences.append(mean_of_defined(scores[case][label].dice - other
                                               for case, other in zip(cases, against)))
    return dataclasses.replace(
        summary, paired=paired, run_mean_differences=tuple(run_differences),
        case_differences=tuple(a - b for a, b in zip(summary.case_dice, baseline.case_dice)),
        run_differences_against="baseline run of the same index" if matching_runs else "baseline mean over runs")


def compare_arms(arms: Sequence[Arm], reference_folder: Path, *, baseline: str | None = None,
                 labels: Sequence[int] | None = None, dataset_json: Path | None = None, allow_partial: bool = False,
                 min_overlap_voxels: int = 1, n_resamples: int = 10000, confidence_level: float = 0.95,
                 ci_method: str = "BCa", seed: int = 0, num_processes: int = 1,
                 progress: bool = True) -> Comparison:
    """Score every run of every arm against the reference labels and compare each arm with the baseline.

    Args:
        arms: at least two arms with distinct names (:func:`nnunet_mm.evaluation.runs.collect_arm`).
        reference_folder: the reference labels, ``CASE<file_ending>``: the raw dataset's ``labelsTr`` for
            validation folds, or a ``labelsTs`` folder for a test set.
        baseline: the arm the others are compared with; None = the first arm.
        labels: label values to evaluate; None = every foreground label of the dataset.json.
        dataset_json: the dataset.json that names the labels, the file ending of the references and the image
            reader; None = the runs' own (which must agree), else the one next to ``reference_folder``.
        allow_partial: compare only the cases that every run predicted instead of refusing runs that cover
            different cases.
        min_overlap_voxels: voxels a predicted lesion must share with a reference lesion to detect it.
        n_resamples: bootstrap resamples of the confidence interval.
        confidence_level: of the interval, e.g. 0.95.
        ci_method: bootstrap interval, one of ``"BCa"``, ``"percentile"``, ``"basic"``.
        seed: seed of the bootstrap; the same inputs and seed give the same report.
        num_processes: processes that read and score cases (1: in this process).
        progress: show a progress bar over cases.

    Returns:
        The :class:`Comparison`.

    Raises:
        FileNotFoundError: the reference folder does not exist.
        ValueError: fewer than two arms, a repeated arm name, an unknown baseline or label, an option out of range,
            region labels, a prediction without reference, runs covering different cases (without
            ``allow_partial``), or a prediction whose shape differs from its reference's.
    """
    names = [arm.name for arm in arms]
    if len(arms) < 2:
        raise ValueError(f"a comparison needs at least two arms, got {names}.")
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must differ, got {names}.")
    baseline = names[0] if baseline is None else baseline
    if baseline not in names:
        raise ValueError(f"the baseline {baseline!r} is not one of the arms {names}.")
    reference_folder = Path(reference_folder)
    if not reference_folder.is_dir():
        raise FileNotFoundError(f"reference folder {reference_folder} does not exist.")
    if min_overlap_voxels < 1:
        raise ValueError(f"min_overlap_voxels must be at least 1, got {min_overlap_voxels}.")
    check_bootstrap_options(n_resamples=n_resamples, confidence_level=confidence_level, ci_method=ci_method)
    settings = ComparisonSettings(baseline=baseline, min_overlap_voxels=min_overlap_voxels, n_resamples=n_resamples,
                                  confidence_level=confidence_level, ci_method=ci_method, seed=seed)

    description_file, description = _description_json(arms, reference_folder, dataset_json)
    label_names, ignore_label = evaluated_labels(description, source=description_file, selected=labels)
    reference_ending = str(description.get("file_ending") or infer_file_ending([reference_folder]))
    reference_cases = {f.name[:-len(reference_ending)] for f in reference_folder.iterdir()
                       if f.is_file() and f.name.endswith(reference_ending) and len(f.name) > len(reference_ending)}
    cases, left_out = _compared_cases(arms, reference_cases, reference_folder, allow_partial)

    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json

    first_reference = reference_folder / f"{cases[0]}{reference_ending}"
    reader_class = determine_reader_writer_from_dataset_json(dict(description), str(first_reference), verbose=False)
    runs = [run for arm in arms for run in arm.runs]
    tasks = [_CaseTask(case=case, reference_file=reference_folder / f"{case}{reference_ending}",
                       prediction_files=tuple(run.prediction_files[case] for run in runs),
                       labels=tuple(label_names), ignore_label=ignore_label,
                       min_overlap_voxels=min_overlap_voxels, reader_class=reader_class) for case in cases]
    per_case = _score_cases(tasks, num_processes=num_processes, progress=progress)

    scores: dict[str, tuple[dict[str, dict[int, CaseScores]], ...]] = {}
    position = 0
    for arm in arms:
        scores[arm.name] = tuple({case: per_case[i][position + r] for i, case in enumerate(cases)}
                                 for r in range(len(arm.runs)))
        position += len(arm.runs)
    summaries: dict[int, dict[str, ArmLabelSummary]] = {}
    for label in label_names:
        plain = {arm.name: _summarize(arm, label, cases, scores[arm.name]) for arm in arms}
        summaries[label] = {
            name: summary if name == baseline else _with_paired_difference(
                summary, plain[baseline], label=label, cases=cases, run_scores=scores[name],
                baseline_run_scores=scores[baseline], settings=settings)
            for name, summary in plain.items()}
    return Comparison(arms=tuple(arms), reference_folder=reference_folder, dataset_json=description_file,
                      labels=label_names, cases=cases, left_out_cases=left_out, scores=scores, summaries=summaries,
                      settings=settings)
