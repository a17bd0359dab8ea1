"""CMC label-fraction experiment: few labels + unlabeled cases vs few labels only vs all labels, same schedule.

Scenarios (each written, converted and planned with nnU-Net's default planner, 3d_fullres):

* ``paired``: two co-registered phases of the multi-phase phantom (a paired multi-channel dataset; labels 1 liver,
  2 tumour);
* ``amos``: the AMOS 2022 layout of the converter tests (``tests/dataset_conversion/layout_unpaired.py``: CT and
  MR-like scans of different phantoms, one channel, modality per case) converted with ``Dataset504_AMOS``; its
  labelled validation cases become the test set. Labels evaluated: the organs the fixture paints.

Arms, all ``CMCTrainer`` (so the network and the schedule are identical and only the data differ), fold ``all``:

* ``full``: every training case labelled, no unlabeled cases;
* ``few_supervised``: ``--fraction`` of the cases labelled (``nnunet_mm label-fraction``), unlabeled ones removed;
* ``few_plus_unlabeled``: the same labelled cases plus the rest as unlabeled cases (``imagesUnl``, preprocessed by
  ``nnunet_mm preprocess-unlabeled``), consistency terms from ``--semi-start`` × epochs on;
* ``stock_full`` (``--stock-reference``): ``nnUNetTrainer`` on all labels, for the step-time ratio.

Goals from the issue: ``few_plus_unlabeled`` ≥ 95 % of ``full`` and ≥ +0.05 Dice over ``few_supervised``; CMC step
time ≤ 2.5× ``nnUNetTrainer``. Output: ``<output>/bench_cmc_label_fraction.json`` and ``.png``.

    python bench/bench_cmc_label_fraction.py --output bench_out/cmc                      # GPU, defaults
    nnUNet_n_proc_DA=2 python bench/bench_cmc_label_fraction.py --output /tmp/cmc --device cpu --epochs 8 \\
        --iterations 12 --num-training 20 --num-test 6 --shape 16 48 48                 # CPU, small
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from pathlib import Path

import benchlib

from nnunet_mm.io.figure_style import figure_style

SCENARIO_IDS = {"paired": 720, "amos": 730}  # source id; +1 few_plus_unlabeled, +2 few_supervised
AMOS_FIXTURE_ORGANS = [1, 2, 3, 6, 8, 9]


def write_source(scenario: str, *, num_training: int, num_test: int, shape: list[int], workdir: Path) -> tuple[int,
                                                                                                              list[int]]:
    """Write the fully labelled source dataset of a scenario into nnUNet_raw; returns (dataset id, labels)."""
    import os

    dataset_id = SCENARIO_IDS[scenario]
    raw = Path(os.environ["nnUNet_raw"])
    if scenario == "paired":
        from nnunet_mm.phantom import write_nnunet_raw
        write_nnunet_raw(raw, dataset_id=dataset_id, name="CMCPaired", num_training=num_training, num_test=num_test,
                         seed=21, shape_zyx=tuple(shape), phases=("pv", "art"), misregistration=False,
                         overwrite=True)
        return dataset_id, [1, 2]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "dataset_conversion"))
    from layout_unpaired import write_amos  # the converter tests' AMOS layout (fixture volumes are 12×32×32)

    from nnunet_mm.dataset_conversion.Dataset504_AMOS import convert
    per_modality, test_per_modality = num_training // 2, max(1, num_test // 2)
    training = tuple(range(1, per_modality + 1)) + tuple(range(501, 501 + per_modality))
    test = tuple(range(100, 100 + test_per_modality)) + tuple(range(600, 600 + test_per_modality))
    source = workdir / "amos_source"
    shutil.rmtree(source, ignore_errors=True)
    write_amos(source, training=training, validation=test, test=(), coronal=())
    convert(source, dataset_id=dataset_id, dataset_name="CMCAmos", include_validation=False, overwrite=True)
    return dataset_id, AMOS_FIXTURE_ORGANS


def make_arms(source_id: int, fraction: float) -> dict[str, int]:
    """Label-fraction datasets of the source: few labels + unlabeled, and the same few labels alone."""
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json

    from nnunet_mm.cmc.label_fraction import make_label_fraction_dataset
    from nnunet_mm.cmc.settings import UNLABELED_DIR_KEY
    from nnunet_mm.cmc.unlabeled import preprocess_unlabeled
    from nnunet_mm.settings import BLOCK_KEY, block_of

    semi = make_label_fraction_dataset(source_id, fraction, target_id=source_id + 1, overwrite=True)
    supervised = make_label_fraction_dataset(source_id, fraction, target_id=source_id + 2,
                                             target_name=semi.name.split("_", 1)[1] + "_supervised", overwrite=True)
    shutil.rmtree(supervised / "imagesUnl")  # the same labelled cases, and no unlabeled ones
    dataset_json_file = str(supervised / "dataset.json")
    dataset_json = load_json(dataset_json_file)
    dataset_json[BLOCK_KEY] = {k: v for k, v in block_of(dataset_json, dataset_json_file).items()
                               if k != UNLABELED_DIR_KEY}
    save_json(dataset_json, dataset_json_file, sort_keys=False)
    for dataset_id in (source_id, source_id + 1, source_id + 2):
        benchlib.plan_and_preprocess(dataset_id)
    preprocess_unlabeled(source_id + 1, "3d_fullres")
    return {"full": source_id, "few_plus_unlabeled": source_id + 1, "few_supervised": source_id + 2}


def run_scenario(scenario: str, args: argparse.Namespace, workdir: Path) -> dict:
    import os

    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    source_id, labels = write_source(scenario, num_training=args.num_training, num_test=args.num_test,
                                     shape=args.shape, workdir=workdir)
    arms = make_arms(source_id, args.fraction)
    raw = Path(os.environ["nnUNet_raw"]) / maybe_convert_to_dataset_name(source_id)
    runs = [(arm, "CMCTrainer", dataset_id) for arm, dataset_id in arms.items()]
    if args.stock_reference:
        runs.append(("stock_full", "nnUNetTrainer", source_id))
    results = {}
    for arm, trainer_name, dataset_id in runs:
        print(f"{scenario}: {arm} ({trainer_name}, dataset {dataset_id}) ...", flush=True)
        trainer, timing, _ = benchlib.train(trainer_name, maybe_convert_to_dataset_name(dataset_id),
                                         device_name=args.device, epochs=args.epochs, iterations=args.iterations,
                                         attributes={"semi_start_fraction": args.semi_start}
                                         if trainer_name == "CMCTrainer" else None)
        dice = benchlib.predict_and_evaluate(trainer, raw / "imagesTs", raw / "labelsTs",
                                             workdir / f"pred_{scenario}_{arm}", device_name=args.device,
                                             labels_to_evaluate=labels)
        present = [d for d in dice.values() if not math.isnan(d)]
        results[arm] = {"trainer": trainer_name, "dataset_id": dataset_id, **timing,
                        "dice_per_label": {str(k): round(v, 4) for k, v in dice.items()},
                        "mean_dice": round(sum(present) / len(present), 4) if present else float("nan")}
        print(json.dumps(results[arm]), flush=True)
    full, semi, sup = (results[a]["mean_dice"] for a in ("full", "few_plus_unlabeled", "few_supervised"))
    summary = {"semi_vs_full_ratio": round(semi / full, 3) if full else None,
               "semi_minus_supervised": round(semi - sup, 4),
               "goal_95pct_of_full": bool(full and semi >= 0.95 * full),
               "goal_plus_5_dice": bool(semi - sup >= 0.05)}
    if "stock_full" in results:
        summary["step_time_ratio_cmc_semi_vs_stock"] = round(results["few_plus_unlabeled"]["step_ms_median"]
                                                             / results["stock_full"]["step_ms_median"], 2)
        summary["goal_step_time_2_5x"] = summary["step_time_ratio_cmc_semi_vs_stock"] <= 2.5
    return {"arms": results, "summary": summary}


@figure_style()
def save_chart(report: dict, png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    scenarios = list(report["scenarios"])
    arms = ["few_supervised", "few_plus_unlabeled", "full"]
    fig, axis = plt.subplots(figsize=(2.8 * len(scenarios) + 3, 4))
    width = 0.8 / len(arms)
    for i, arm in enumerate(arms):
        values = [report["scenarios"][s]["arms"][arm]["mean_dice"] for s in scenarios]
        bars = axis.bar(np.arange(len(scenarios)) + (i - 1) * width, values, width, label=arm)
        axis.bar_label(bars, fmt="%.3f", fontsize=8)
    axis.set_xticks(np.arange(len(scenarios)), scenarios)
    axis.set_ylabel("mean Dice over labels (test cases)")
    axis.set_title(f"CMCTrainer, {report['fraction']:.0%} labels; {report['device']}, {report['epochs']} epochs × "
                   f"{report['iterations']} it", fontsize=9)
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="bench_out/cmc_label_fraction")
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIO_IDS), choices=list(SCENARIO_IDS))
    parser.add_argument("--fraction", type=float, default=0.1, help="share of labelled training cases [0.1]")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--semi-start", type=float, default=0.3,
                        help="consistency terms start at this share of the epochs [0.3; the paper's 0.7 assumes "
                             "500 epochs]")
    parser.add_argument("--num-training", type=int, default=40)
    parser.add_argument("--num-test", type=int, default=10)
    parser.add_argument("--shape", type=int, nargs=3, default=[32, 96, 96], help="phantom shape z y x (paired)")
    parser.add_argument("--no-stock-reference", dest="stock_reference", action="store_false",
                        help="skip nnUNetTrainer (step-time reference)")
    args = parser.parse_args(argv)

    import torch
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    benchlib.set_nnunet_paths(output / "work")
    report = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else args.device,
              **{k: v for k, v in vars(args).items() if k not in ("output", "scenarios", "device")}, "scenarios": {}}
    for scenario in args.scenarios:
        report["scenarios"][scenario] = run_scenario(scenario, args, output / "work")
        print(scenario, json.dumps(report["scenarios"][scenario]["summary"]), flush=True)
        (output / "bench_cmc_label_fraction.json").write_text(json.dumps(report, indent=2))
    save_chart(report, output / "bench_cmc_label_fraction.png")
    print(f"wrote {output / 'bench_cmc_label_fraction.json'} and {output / 'bench_cmc_label_fraction.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
