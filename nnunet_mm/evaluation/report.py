"""The report of a comparison (:func:`nnunet_mm.evaluation.compare.compare_arms`): ``compare.json``, ``compare.md``
and ``compare.png`` in one output folder.

* ``compare.json``: the settings, the compared cases, every per-case value (Dice per run and averaged over runs,
  lesion counts per run, the paired difference), the per-run means and the summary per label and arm. Undefined
  values (NaN) are written as ``null``.
* ``compare.md``: per label, a table ``arm | runs | Dice mean ± std over runs | lesion recall | FP/case |
  Δ Dice vs baseline [CI] | p | better/worse/tied``, and the per-run differences.
* ``compare.png``: per label, the per-case paired differences as dots per arm, their mean with the confidence
  interval as error bar, and a line at zero.

Each file is written to a temporary file in the output folder and renamed into place, so a reader never sees a
half-written report; existing reports are only replaced with ``overwrite=True``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_mm.evaluation.compare import ArmLabelSummary, Comparison
from nnunet_mm.evaluation.metrics import defined_or_none
from nnunet_mm.io.figure_style import figure_style
from nnunet_mm.io.staging import atomic_file

#: the files a report consists of, in the output folder
REPORT_FILE_NAMES: tuple[str, ...] = ("compare.json", "compare.md", "compare.png")


@dataclass(frozen=True)
class ReportFiles:
    """The files :func:`write_report` wrote."""

    json: Path
    markdown: Path
    png: Path


def check_report_files(output_folder: Path, *, overwrite: bool) -> None:
    """Refuse to replace an existing report unless ``overwrite`` (call it before the long work, too).

    Raises:
        FileExistsError: ``output_folder`` already holds one of :data:`REPORT_FILE_NAMES` and ``overwrite`` is False.
        ValueError: ``output_folder`` exists and is not a folder.
    """
    output_folder = Path(output_folder)
    if output_folder.exists() and not output_folder.is_dir():
        raise ValueError(f"the output {output_folder} exists and is not a folder; choose an output folder.")
    existing = [name for name in REPORT_FILE_NAMES if (output_folder / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{output_folder} already holds {', '.join(existing)}; pass --overwrite "
                              f"(overwrite=True) to replace them, or choose another output folder.")


def _null_for_nan(value: Any) -> Any:
    """``value`` with every NaN float (also inside lists and dicts) replaced by None."""
    if isinstance(value, float):
        return defined_or_none(value)
    if isinstance(value, dict):
        return {key: _null_for_nan(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_null_for_nan(item) for item in value]
    return value


def _summary_json(summary: ArmLabelSummary, num_cases: int, confidence_level: float) -> dict[str, Any]:
    content: dict[str, Any] = {
        "num_runs": summary.num_runs, "num_cases": num_cases, "dice_mean": summary.dice_mean,
        "dice_std_over_runs": summary.dice_std_over_runs, "dice_std_over_cases": summary.dice_std_over_cases,
        "num_undefined_dice": summary.num_undefined_dice, "run_dice_means": summary.run_dice_means,
        "reference_lesions": summary.reference_lesions, "lesion_recall": summary.lesion_recall,
        "run_lesion_recalls": summary.run_lesion_recalls,
        "false_positives_per_case": summary.false_positives_per_case,
        "run_false_positives_per_case": summary.run_false_positives_per_case}
    if summary.paired is not None:
        paired = summary.paired
        content["difference_to_baseline"] = {
            "mean": paired.mean, "ci_low": paired.ci_low, "ci_high": paired.ci_high,
            "confidence_level": confidence_level, "ci_method": paired.ci_method, "p_value": paired.p_value,
            "test": "Wilcoxon signed-rank, two-sided", "num_cases": paired.num_cases,
            "num_undefined": paired.num_undefined, "better": paired.better, "worse": paired.worse,
            "tied": paired.tied, "run_mean_differences": summary.run_mean_differences,
            "run_differences_against": summary.run_differences_against}
    return content


def _per_case_json(comparison: Comparison, label: int, arm: str) -> dict[str, Any]:
    summary = comparison.summaries[label][arm]
    runs = comparison.scores[arm]
    per_case = {}
    for index, case in enumerate(comparison.cases):
        lesions = [run[case][label].lesions for run in runs]
        values: dict[str, Any] = {
            "dice": summary.case_dice[index], "dice_per_run": [run[case][label].dice for run in runs],
            "reference_lesions": lesions[0].reference_lesions,
            "detected_lesions_per_run": [counts.detected_lesions for counts in lesions],
            "predicted_lesions_per_run": [counts.predicted_lesions for counts in lesions],
            "false_positive_lesions_per_run": [counts.false_positive_lesions for counts in lesions]}
        if summary.case_differences is not None:
            values["difference_to_baseline"] = summary.case_differences[index]
        per_case[case] = values
    return per_case


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    """The content of ``compare.json`` (NaN already replaced by None), labels keyed by their dataset.json name."""
    settings = comparison.settings
    content = {
        "settings": {**settings.__dict__, "test": "Wilcoxon signed-rank, two-sided",
                     "paired_unit": "case (Dice averaged over the runs of an arm)"},
        "reference_folder": str(comparison.reference_folder), "dataset_json": str(comparison.dataset_json),
        "labels": {name: value for value, name in comparison.labels.items()},
        "cases": list(comparison.cases),
        "left_out_cases": {name: list(cases) for name, cases in comparison.left_out_cases.items()},
        "arms": {arm.name: {"runs": [{"name": run.name, "folder": str(run.folder), "file_ending": run.file_ending}
                                     for run in arm.runs]} for arm in comparison.arms},
        "summary": {name: {arm: _summary_json(summary, len(comparison.cases), settings.confidence_level)
                           for arm, summary in comparison.summaries[value].items()}
                    for value, name in comparison.labels.items()},
        "per_case": {name: {arm.name: _per_case_json(comparison, value, arm.name) for arm in comparison.arms}
                     for value, name in comparison.labels.items()}}
    return _null_for_nan(content)


def _number(value: float, digits: int = 3, *, signed: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:{'+' if signed else ''}.{digits}f}"


def _p_value(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _table_row(summary: ArmLabelSummary) -> str:
    dice_text = _number(summary.dice_mean)
    if summary.num_runs > 1:
        dice_text += f" ± {_number(summary.dice_std_over_runs)}"
    recall = f"{_number(summary.lesion_recall)} of {summary.reference_lesions}"
    cells = [summary.arm, str(summary.num_runs), dice_text, recall, _number(summary.false_positives_per_case, 2)]
    paired = summary.paired
    if paired is None:
        cells += ["baseline", "", ""]
    else:
        cells += [f"{_number(paired.mean, signed=True)} [{_number(paired.ci_low, signed=True)}, "
                  f"{_number(paired.ci_high, signed=True)}]", _p_value(paired.p_value),
                  f"{paired.better}/{paired.worse}/{paired.tied}"]
    return "| " + " | ".join(cells) + " |"


def markdown_report(comparison: Comparison) -> str:
    """The content of ``compare.md``: one table per label, then the per-run differences."""
    settings = comparison.settings
    baseline = settings.baseline
    percent = f"{100 * settings.confidence_level:g} %"
    lines = [f"# Comparison with {baseline} on {len(comparison.cases)} cases", "",
             f"Dice mean over cases (per case averaged over an arm's runs; ± std of the run means). Lesion recall "
             f"pooled over cases and runs, FP = predicted lesions touching no reference lesion (overlap ≥ "
             f"{settings.min_overlap_voxels} voxel). Δ = paired per-case Dice difference arm − {baseline}, "
             f"{percent} bootstrap CI ({settings.ci_method}, {settings.n_resamples} resamples, seed {settings.seed}), "
             f"p of the two-sided Wilcoxon signed-rank test; cases where Δ is undefined (a Dice undefined on "
             f"either side) are left out."]
    if comparison.left_out_cases:
        lines += ["", "Only the cases every run has were compared; left out: " + "; ".join(
            f"{name}: {len(cases)}" for name, cases in comparison.left_out_cases.items()) + "."]
    for value, name in comparison.labels.items():
        summaries = comparison.summaries[value]
        lines += ["", f"## {name} (label {value})", "",
                  f"| arm | runs | Dice mean ± std over runs | lesion recall | FP/case | Δ Dice vs {baseline} "
                  f"[{percent} CI] | p | better/worse/tied |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [_table_row(summary) for summary in summaries.values()]
        notes = []
        for summary in summaries.values():
            if summary.paired is None:
                continue
            if summary.paired.num_undefined:
                notes.append(f"{summary.arm}: {summary.paired.num_undefined} case(s) with undefined Δ left out.")
            if summary.num_runs > 1:
                per_run = ", ".join(_number(d, signed=True) for d in summary.run_mean_differences)
                notes.append(f"{summary.arm}: mean Δ per run ({summary.run_differences_against}): {per_run}.")
        if notes:
            lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _draw_figure(comparison: Comparison, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    baseline = comparison.settings.baseline
    arms = [arm.name for arm in comparison.arms if arm.name != baseline]
    num_panels = len(comparison.labels)
    columns = min(num_panels, 3)
    rows = math.ceil(num_panels / columns)
    jitter = np.random.default_rng(comparison.settings.seed)
    with figure_style():
        figure = Figure(figsize=(columns * max(4.5, 1.2 * len(arms) + 2.0), rows * 3.8), layout="constrained")
        FigureCanvasAgg(figure)
        for panel, (value, name) in enumerate(comparison.labels.items()):
            axes = figure.add_subplot(rows, columns, panel + 1)
            for position, arm in enumerate(arms):
                summary = comparison.summaries[value][arm]
                differences = np.array(summary.case_differences, dtype=float)
                differences = differences[~np.isnan(differences)]
                axes.scatter(position + jitter.uniform(-0.15, 0.15, differences.size), differences, s=12,
                             alpha=0.5, color="tab:blue", linewidths=0)
                paired = summary.paired
                if not math.isnan(paired.mean):
                    low, high = paired.ci_low, paired.ci_high
                    error = None if math.isnan(low) else [[paired.mean - low], [high - paired.mean]]
                    axes.errorbar([position + 0.3], [paired.mean], yerr=error, fmt="o", color="black", capsize=4)
            axes.axhline(0.0, color="grey", linewidth=1, linestyle="--")
            axes.set_xticks(range(len(arms)), [f"{arm}\n(n={comparison.summaries[value][arm].paired.num_cases})"
                                               for arm in arms])
            axes.set_xlim(-0.6, len(arms) - 0.4)
            axes.set_title(f"{name} (label {value})")
            axes.set_ylabel(f"Dice − {baseline} (per case)")
        figure.suptitle(f"Dice − {baseline} per case (dots)\nmean and "
                        f"{100 * comparison.settings.confidence_level:g} % bootstrap CI", fontsize="medium")
        figure.savefig(path, format="png", dpi=120)


def write_report(comparison: Comparison, output_folder: Path, *, overwrite: bool = False) -> ReportFiles:
    """Write ``compare.json``, ``compare.md`` and ``compare.png`` into ``output_folder`` (created if missing).

    Raises:
        FileExistsError: a report file exists already and ``overwrite`` is False (nothing is written then).
        ValueError: ``output_folder`` is not a folder.
    """
    output_folder = Path(output_folder)
    check_report_files(output_folder, overwrite=overwrite)
    output_folder.mkdir(parents=True, exist_ok=True)
    files = ReportFiles(*(output_folder / name for name in REPORT_FILE_NAMES))
    with atomic_file(files.json) as temporary:
        temporary.write_text(json.dumps(comparison_json(comparison), indent=2, allow_nan=False) + "\n",
                             encoding="utf-8")
    with atomic_file(files.markdown) as temporary:
        temporary.write_text(markdown_report(comparison), encoding="utf-8")
    with atomic_file(files.png) as temporary:
        _draw_figure(comparison, temporary)
    return files
