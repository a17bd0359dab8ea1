"""Tumour Dice of CMGTrainer vs MultiModalTrainer vs nnUNetTrainer on multi-phase phantoms, same short schedule.

Two scenarios, each a seeded four-phase phantom dataset in nnU-Net raw format, planned with nnU-Net's default
planner (3d_fullres):

* ``misregistered``: every non-reference phase has up to ``--misregistration-mm`` rigid offset per axis, smooth
  elastic displacement and lesion-local extra displacement (the phantom's misregistration model);
* ``aligned``: the same anatomy with perfectly aligned phases (CMG must not be worse there).

Every trainer trains ``--epochs`` × ``--iterations`` on fold ``all`` (identical data, plans and schedule), then
predicts the held-out test cases with nnU-Net's predictor (mirroring on), and nnU-Net's evaluation computes Dice
per label. Output: ``<output>/bench_cmg_quality.json`` and ``.png``.

    python bench/bench_cmg_quality.py --output bench_out/cmg_quality                    # GPU
    python bench/bench_cmg_quality.py --output /tmp/q --device cpu --epochs 1 --iterations 2 --num-training 4 \\
        --num-test 2 --shape 24 48 48                                                  # CPU smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import benchlib

from nnunet_mm.io.figure_style import figure_style

SCENARIOS = {"misregistered": 700, "aligned": 701}


def prepare(scenario: str, *, num_training: int, num_test: int, shape: list[int], misregistration_mm: float,
            num_processes: int) -> str:
    """Write and plan/preprocess the scenario's dataset; returns its name."""
    from nnunet_mm.phantom import write_nnunet_raw

    dataset_id = SCENARIOS[scenario]
    aligned = scenario == "aligned"
    folder = write_nnunet_raw(Path(os.environ["nnUNet_raw"]), dataset_id=dataset_id, name=f"CMGQuality{scenario}",
                              num_training=num_training, num_test=num_test, seed=11, shape_zyx=tuple(shape),
                              overwrite=True, misregistration=not aligned,
                              max_translation_zyx_mm=(misregistration_mm,) * 3)
    benchlib.plan_and_preprocess(dataset_id, "3d_fullres", num_processes)
    return folder.name


def train_and_evaluate(trainer_name: str, dataset_name: str, *, device_name: str, epochs: int, iterations: int
                       ) -> dict:
    """Train one trainer on fold 'all', predict imagesTs, evaluate against labelsTs."""
    trainer, timing = benchlib.train(trainer_name, dataset_name, device_name=device_name, epochs=epochs,
                                     iterations=iterations)
    raw = Path(os.environ["nnUNet_raw"]) / dataset_name
    output = Path(os.environ["nnUNet_results"]) / dataset_name / f"predictions_{trainer_name}"
    dice = benchlib.predict_and_evaluate(trainer, raw / "imagesTs", raw / "labelsTs", output,
                                         device_name=device_name, labels_to_evaluate=[1, 2])
    return {"trainer": trainer_name, "train_seconds": timing["train_seconds"],
            "dice_liver": round(dice[1], 4), "dice_tumour": round(dice[2], 4)}


@figure_style()
def save_chart(report: dict, png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    scenarios = list(report["scenarios"])
    trainers = [r["trainer"] for r in report["scenarios"][scenarios[0]]]
    fig, axis = plt.subplots(figsize=(2.5 * len(scenarios) + 3, 4))
    width = 0.8 / len(trainers)
    for i, trainer in enumerate(trainers):
        values = [next(r["dice_tumour"] for r in report["scenarios"][s] if r["trainer"] == trainer)
                  for s in scenarios]
        bars = axis.bar(np.arange(len(scenarios)) + (i - (len(trainers) - 1) / 2) * width, values, width,
                        label=trainer)
        axis.bar_label(bars, fmt="%.3f", fontsize=8)
    axis.set_xticks(np.arange(len(scenarios)), scenarios)
    axis.set_ylabel("tumour Dice (test cases)")
    axis.set_title(f"{report['device']}, {report['epochs']} epochs × {report['iterations']} iterations", fontsize=9)
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="bench_out/cmg_quality")
    parser.add_argument("--trainers", nargs="+", default=["nnUNetTrainer", "MultiModalTrainer", "CMGTrainer"])
    parser.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--num-training", type=int, default=24)
    parser.add_argument("--num-test", type=int, default=8)
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 128, 128])
    parser.add_argument("--misregistration-mm", type=float, default=6.0)
    parser.add_argument("--num-processes", type=int, default=4)
    args = parser.parse_args(argv)

    import torch
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    benchlib.set_nnunet_paths(output / "work")
    report = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else args.device,
              "epochs": args.epochs, "iterations": args.iterations, "misregistration_mm": args.misregistration_mm,
              "num_training": args.num_training, "num_test": args.num_test, "shape": args.shape, "scenarios": {}}
    for scenario in args.scenarios:
        dataset = prepare(scenario, num_training=args.num_training, num_test=args.num_test, shape=args.shape,
                          misregistration_mm=args.misregistration_mm, num_processes=args.num_processes)
        report["scenarios"][scenario] = []
        for trainer in args.trainers:
            print(f"{scenario}: training {trainer} ...", flush=True)
            report["scenarios"][scenario].append(train_and_evaluate(
                trainer, dataset, device_name=args.device, epochs=args.epochs, iterations=args.iterations))
            print(json.dumps(report["scenarios"][scenario][-1]), flush=True)
    (output / "bench_cmg_quality.json").write_text(json.dumps(report, indent=2))
    save_chart(report, output / "bench_cmg_quality.png")
    print(f"wrote {output / 'bench_cmg_quality.json'} and {output / 'bench_cmg_quality.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
