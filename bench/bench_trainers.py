"""Training and prediction speed of nnU-Net's trainer and every nnunet_mm trainer, on the same plans and data.

Measures, per trainer, the way nnU-Net's ``nnUNetTrainerBenchmark_5epochs[_noDataLoading]`` do but per iteration:

* ``ms_per_it_no_dataloading``: ``train_step`` on a fixed random batch that already sits on the device (network,
  loss, optimizer, plus whatever the trainer does on the device, e.g. misalignment and modality dropout);
* ``ms_per_it_with_dataloading``: ``train_step(next(dataloader_train))`` with nnU-Net's real multi-process data
  augmentation (``nnUNet_n_proc_DA`` workers);
* ``predict_s_per_case``: sliding-window prediction (with mirroring) of one full phantom volume, preprocessed.

Data: a seeded four-phase phantom written in nnU-Net raw format, planned with nnU-Net's default planner, plus an
extra configuration ``3d_bench`` (inheriting ``3d_fullres``) that fixes the patch and batch size, so all trainers
run on identical plans. Output: ``<output>/bench_trainers.json`` and ``<output>/bench_trainers.png``.

GPU reference (shared/device/README.md, stock nnU-Net 2.8.1 on an H100, 4 channels, 64×160×160, batch 2):
46 ms/it without and 87 ms/it with data loading.

    python bench/bench_trainers.py --output bench_out                 # GPU defaults
    python bench/bench_trainers.py --output bench_out --device cpu --patch 16 32 32 --case-shape 24 48 48 \\
        --iterations 3 --warmup 1 --num-cases 4                        # a CPU smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from nnunet_mm.io.figure_style import figure_style

DATASET_ID = 599
CONFIGURATION = "3d_bench"


def _set_paths(workdir: Path) -> None:
    for name, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        os.environ[name] = str(workdir / sub)
        (workdir / sub).mkdir(parents=True, exist_ok=True)


def prepare_dataset(workdir: Path, *, num_cases: int, case_shape: list[int], patch: list[int], batch_size: int,
                    num_processes: int) -> None:
    """Phantom → raw dataset → fingerprint, plans, preprocessing; then add the fixed ``3d_bench`` configuration."""
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints, plan_experiments, preprocess)

    from nnunet_mm.phantom import write_nnunet_raw

    write_nnunet_raw(workdir / "raw", dataset_id=DATASET_ID, name="BenchPhantom", num_training=num_cases,
                     num_test=1, seed=0, shape_zyx=tuple(case_shape), overwrite=True)
    extract_fingerprints([DATASET_ID], num_processes=num_processes, check_dataset_integrity=True)
    plan_experiments([DATASET_ID])
    plans_file = workdir / "preprocessed" / f"Dataset{DATASET_ID}_BenchPhantom" / "nnUNetPlans.json"
    plans = load_json(plans_file)
    plans["configurations"][CONFIGURATION] = {"inherits_from": "3d_fullres", "patch_size": patch,
                                              "batch_size": batch_size}
    save_json(plans, plans_file, sort_keys=False)
    preprocess([DATASET_ID], configurations=("3d_fullres",), num_processes=(num_processes,))


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(step, device, iterations: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    _sync(device)
    return (time.perf_counter() - start) / iterations * 1000.0


def bench_trainer(trainer_name: str, *, device_name: str, iterations: int, warmup: int) -> dict:
    """ms/iteration with and without data loading, and prediction seconds per case, for one trainer."""
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    device = torch.device(device_name)
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / f"Dataset{DATASET_ID}_BenchPhantom"
    plans = load_json(preprocessed / "nnUNetPlans.json")
    plans["continue_training"] = False  # nnUNetTrainer.__init__ pops this key
    dataset_json = load_json(preprocessed / "dataset.json")
    trainer_class = recursive_find_trainer_class_by_name(trainer_name)
    trainer = trainer_class(plans=plans, configuration=CONFIGURATION, fold="all", dataset_json=dataset_json,
                            device=device)
    trainer.on_train_start()
    trainer.on_train_epoch_start()

    fixed_batch = next(trainer.dataloader_train)
    fixed_batch = {"data": fixed_batch["data"].to(device),
                   "target": [t.to(device) for t in fixed_batch["target"]]}
    no_loading = _time_steps(lambda: trainer.train_step(fixed_batch), device, iterations, warmup)
    with_loading = _time_steps(lambda: trainer.train_step(next(trainer.dataloader_train)), device, iterations,
                               warmup)
    trainer.dataloader_train._finish()
    trainer.dataloader_val._finish()

    trainer.network.eval()
    trainer.set_deep_supervision_enabled(False)
    predictor = nnUNetPredictor(device=device, allow_tqdm=False)
    network = trainer.network.module if trainer.is_ddp else trainer.network
    predictor.manual_initialization(network, trainer.plans_manager, trainer.configuration_manager,
                                    [network.state_dict()],
                                    dataset_json, trainer_name, trainer.inference_allowed_mirroring_axes)
    raw = Path(os.environ["nnUNet_raw"]) / f"Dataset{DATASET_ID}_BenchPhantom" / "imagesTs"
    files = sorted(str(p) for p in raw.glob("*.nii.gz"))
    preprocessor = trainer.configuration_manager.preprocessor_class(verbose=False)
    data, _, _ = preprocessor.run_case(files, None, trainer.plans_manager, trainer.configuration_manager,
                                       dataset_json)
    data = torch.from_numpy(data)
    predictor.predict_logits_from_preprocessed_data(data)  # warm-up (cudnn autotuning, compile)
    _sync(device)
    start = time.perf_counter()
    predictor.predict_logits_from_preprocessed_data(data)
    _sync(device)
    predict_seconds = time.perf_counter() - start
    return {"trainer": trainer_name, "ms_per_it_no_dataloading": round(no_loading, 2),
            "ms_per_it_with_dataloading": round(with_loading, 2), "predict_s_per_case": round(predict_seconds, 3),
            "batch_size": trainer.batch_size, "patch_size": list(trainer.configuration_manager.patch_size),
            "num_channels": len(dataset_json["channel_names"]), "case_shape": list(data.shape[1:])}


@figure_style()
def save_chart(results: list[dict], png: Path, title: str) -> None:
    """Grouped bars: ms/iteration without and with data loading, per trainer."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [r["trainer"] for r in results]
    x = np.arange(len(names))
    fig, axis = plt.subplots(figsize=(1.8 * len(names) + 3, 4))
    for offset, key, label in ((-0.2, "ms_per_it_no_dataloading", "GPU only (fixed batch)"),
                               (0.2, "ms_per_it_with_dataloading", "with data loading")):
        values = [r[key] for r in results]
        bars = axis.bar(x + offset, values, width=0.4, label=label)
        axis.bar_label(bars, fmt="%.1f", fontsize=8)
    axis.set_xticks(x, names, rotation=15, fontsize=8)
    axis.set_ylabel("ms / iteration")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="bench_out", help="output folder [default: %(default)s]")
    parser.add_argument("--workdir", default=None, help="nnU-Net folders [default: <output>/work]")
    parser.add_argument("--trainers", nargs="+", default=["nnUNetTrainer", "MultiModalTrainer", "CMGTrainer"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 160, 160])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--case-shape", type=int, nargs=3, default=[96, 224, 224])
    parser.add_argument("--num-cases", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--num-processes", type=int, default=4, help="planning/preprocessing processes")
    parser.add_argument("--skip-prepare", action="store_true", help="reuse an already prepared --workdir")
    args = parser.parse_args(argv)

    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    workdir = Path(args.workdir).resolve() if args.workdir else output / "work"
    _set_paths(workdir)
    if not args.skip_prepare:
        prepare_dataset(workdir, num_cases=args.num_cases, case_shape=args.case_shape, patch=args.patch,
                        batch_size=args.batch_size, num_processes=args.num_processes)
    import torch
    results = []
    for name in args.trainers:
        print(f"benchmarking {name} ...", flush=True)
        results.append(bench_trainer(name, device_name=args.device, iterations=args.iterations,
                                     warmup=args.warmup))
        print(json.dumps(results[-1]), flush=True)
    reference = next((r for r in results if r["trainer"] == "nnUNetTrainer"), None)
    if reference is not None:
        for r in results:
            for key in ("ms_per_it_no_dataloading", "ms_per_it_with_dataloading"):
                r[f"{key}_vs_nnUNetTrainer_pct"] = round(100.0 * (r[key] / reference[key] - 1.0), 1)
    device_text = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    report = {"device": device_text, "torch": torch.__version__, "python": sys.version.split()[0],
              "nnUNet_n_proc_DA": os.environ.get("nnUNet_n_proc_DA"), "iterations": args.iterations,
              "warmup": args.warmup, "results": results}
    (output / "bench_trainers.json").write_text(json.dumps(report, indent=2))
    save_chart(results, output / "bench_trainers.png",
               f"{device_text}, {results[0]['num_channels']} ch, patch {args.patch}, batch {args.batch_size}")
    print(f"wrote {output / 'bench_trainers.json'} and {output / 'bench_trainers.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
