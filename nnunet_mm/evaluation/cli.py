"""Command of the evaluation package.

    compare   paired comparison of trained models (arms, one or more runs each) on the same cases: Dice, lesion
              detection, bootstrap CI and Wilcoxon test → compare.json, compare.md, compare.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_mm.cli.common import set_handler
from nnunet_mm.evaluation.paired_statistics import CI_METHODS


def register(subparsers) -> None:
    """Add the sub-commands of this module to ``nnunet_mm``'s parser."""
    compare = subparsers.add_parser(
        "compare", help="paired comparison of trained models: Dice, lesion detection, bootstrap CI, Wilcoxon",
        description="Score the predictions of several arms (methods; one or more runs = seeds each) against "
                    "reference labels and compare every arm with the baseline case by case. A run is an nnU-Net "
                    "prediction folder or a model output folder (Trainer__Plans__Configuration), whose "
                    "fold_*/validation predictions are read. Writes OUTPUT/compare.json, compare.md and "
                    "compare.png and prints the Markdown tables.")
    compare.add_argument("--arm", action="append", required=True, metavar="NAME=FOLDER[,FOLDER...]",
                         help="an arm and its run folders (comma-separated, one per seed); repeat for every arm")
    compare.add_argument("--ref", required=True,
                         help="reference labels: the raw dataset's labelsTr (validation folds) or a labelsTs folder")
    compare.add_argument("--baseline", default=None, help="arm the others are compared with [default: the first]")
    compare.add_argument("-f", nargs="+", default=None,
                         help="folds of model folders to read, numbers or 'all' [default: every fold_<number>]")
    compare.add_argument("--dataset-json", default=None,
                         help="dataset.json naming labels and file ending [default: the runs' own, else the one "
                              "next to --ref]")
    compare.add_argument("--labels", type=int, nargs="+", default=None,
                         help="label values to evaluate [default: every foreground label]")
    compare.add_argument("-o", "--output", required=True, help="output folder for compare.json/.md/.png")
    compare.add_argument("--overwrite", action="store_true", help="replace an existing report in the output folder")
    compare.add_argument("--seed", type=int, default=0, help="seed of the bootstrap [default: %(default)s]")
    compare.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples [default: %(default)s]")
    compare.add_argument("--ci-method", choices=CI_METHODS, default="BCa",
                         help="bootstrap interval [default: %(default)s]")
    compare.add_argument("--min-overlap", type=int, default=1,
                         help="voxels a predicted lesion must share with a reference lesion to detect it "
                              "[default: %(default)s, any overlap]")
    compare.add_argument("--allow-partial", action="store_true",
                         help="compare only the cases every run has instead of refusing runs with different cases")
    compare.add_argument("-np", type=int, default=1, help="processes that score cases [default: 1]")
    compare.add_argument("--disable_progress_bar", "--disable-progress-bar", dest="disable_progress_bar",
                         action="store_true", help="no progress bar")
    set_handler(compare, run_compare)


def parse_arm(text: str) -> tuple[str, list[Path]]:
    """``NAME=FOLDER[,FOLDER...]`` → the arm's name and its run folders.

    Raises:
        ValueError: no ``=``, an empty name, or no folder.
    """
    name, separator, folders = text.partition("=")
    run_folders = [Path(folder) for folder in folders.split(",") if folder.strip()]
    if not separator or not name.strip() or not run_folders:
        raise ValueError(f"--arm expects NAME=FOLDER[,FOLDER...], e.g. cmg=results/run1,results/run2; got {text!r}.")
    return name.strip(), run_folders


def _parse_folds(values: list[str] | None) -> list[int | str] | None:
    if values is None:
        return None
    try:
        return [value if value == "all" else int(value) for value in values]
    except ValueError:
        raise ValueError(f"-f expects fold numbers or 'all', got {values}.") from None


def run_compare(args: argparse.Namespace) -> int:
    """``nnunet_mm compare``."""
    from nnunet_mm.evaluation.compare import compare_arms
    from nnunet_mm.io.console import encodable
    from nnunet_mm.evaluation.report import check_report_files, markdown_report, write_report
    from nnunet_mm.evaluation.runs import collect_arm

    output = Path(args.output)
    check_report_files(output, overwrite=args.overwrite)  # before the cases are read
    folds = _parse_folds(args.f)
    dataset_json = None if args.dataset_json is None else Path(args.dataset_json)
    arm_folders = [parse_arm(text) for text in args.arm]
    names = [name for name, _ in arm_folders]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"--arm names {repeated} more than once; give each arm once, with its runs comma-separated.")
    arms = [collect_arm(name, folders, folds=folds, dataset_json=dataset_json) for name, folders in arm_folders]
    comparison = compare_arms(
        arms, Path(args.ref), baseline=args.baseline, labels=args.labels, dataset_json=dataset_json,
        allow_partial=args.allow_partial, min_overlap_voxels=args.min_overlap, n_resamples=args.resamples,
        ci_method=args.ci_method, seed=args.seed, num_processes=args.np, progress=not args.disable_progress_bar)
    files = write_report(comparison, output, overwrite=args.overwrite)
    print(encodable(markdown_report(comparison)))  # an ASCII console gets Δ and ± as escapes, not a crash
    for file in (files.json, files.markdown, files.png):
        print(f"wrote {file}")
    return 0
