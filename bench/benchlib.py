"""Pieces shared by the benchmark scripts: nnU-Net paths in a work folder, in-process training with per-step timing,
prediction of a raw test folder and nnU-Net's evaluation.

The scripts run as ``python bench/<script>.py``, so this module is importable as ``benchlib`` from them.
"""
from __future__ import annotations

import os
import time
from pathlib import Path


def set_nnunet_paths(workdir: Path) -> None:
    """Point nnU-Net's three path variables into ``workdir`` (raw, preprocessed, results) and create them."""
    for name, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        os.environ[name] = str(workdir / sub)
        (workdir / sub).mkdir(parents=True, exist_ok=True)


def plan_and_preprocess(dataset_id: int, configuration: str = "3d_fullres", num_processes: int = 2) -> None:
    """nnU-Net's fingerprint, default planner and preprocessing for one configuration (API, in this process)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprints, plan_experiments,
                                                                       preprocess)

    extract_fingerprints([dataset_id], num_processes=num_processes)
    plan_experiments([dataset_id])
    preprocess([dataset_id], configurations=(configuration,), num_processes=(num_processes,))


def copy_plans(source_name: str, target_name: str, *, plans_identifier: str = "nnUNetPlans",
               keep_configuration=None) -> None:
    """Plan once: the source dataset's plans (renamed; only the configurations ``keep_configuration(name)`` accepts,
    all by default) and fingerprint, and the target's raw dataset.json, into the target's preprocessed folder, ready
    for nnU-Net's ``preprocess_dataset`` of the target (a dataset with the same images and other labels)."""
    import json
    import shutil

    preprocessed = Path(os.environ["nnUNet_preprocessed"])
    source, target = preprocessed / source_name, preprocessed / target_name
    target.mkdir(parents=True, exist_ok=True)
    plans = json.loads((source / f"{plans_identifier}.json").read_text(encoding="utf-8"))
    plans["dataset_name"] = target_name
    if keep_configuration is not None:
        plans["configurations"] = {k: v for k, v in plans["configurations"].items() if keep_configuration(k)}
    (target / f"{plans_identifier}.json").write_text(json.dumps(plans, indent=2), encoding="utf-8")
    shutil.copy2(source / "dataset_fingerprint.json", target / "dataset_fingerprint.json")
    shutil.copy2(Path(os.environ["nnUNet_raw"]) / target_name / "dataset.json", target / "dataset.json")


def train(trainer_name: str, dataset_name: str, *, device_name: str, epochs: int, iterations: int,
          configuration: str = "3d_fullres", attributes: dict | None = None, warmup_steps: int = 3,
          output_folder_base: Path | None = None, seed: int | None = None, snapshot_epochs: tuple[int, ...] = ()):
    """Train ``trainer_name`` on fold 'all' with a given schedule; returns (trainer, timing dict, snapshots).

    ``attributes`` are set on the trainer after construction (e.g. ``{"semi_start_fraction": 0.3}``). Timing:
    wall seconds of the whole run and the median seconds per ``train_step`` after ``warmup_steps`` steps (CUDA
    synchronised, so the number is the step's real cost, data loading excluded).

    ``output_folder_base`` replaces nnU-Net's ``results/<dataset>/<trainer>__<plans>__<configuration>`` folder (one
    per seed, so that runs of one arm do not overwrite each other). ``seed`` seeds Python, NumPy and torch and the
    plugin's augmentation generator (the block's ``seed``), so a run repeats. ``snapshots`` maps each epoch count in
    ``snapshot_epochs`` (epochs completed) to a CPU copy of the network's weights at that point.
    """
    import random

    import numpy as np
    import torch
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    from nnunet_mm.settings import BLOCK_KEY

    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / dataset_name
    plans = load_json(str(preprocessed / "nnUNetPlans.json"))
    plans["continue_training"] = False
    dataset_json = load_json(str(preprocessed / "dataset.json"))
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        dataset_json.setdefault(BLOCK_KEY, {})["seed"] = int(seed)
    trainer_class = recursive_find_trainer_class_by_name(trainer_name)
    if trainer_class is None:
        raise RuntimeError(f"nnU-Net cannot find trainer {trainer_name} (is nnUNet_extTrainer set? 'nnunet_mm env')")
    trainer = trainer_class(plans=plans, configuration=configuration, fold="all", dataset_json=dataset_json,
                            device=torch.device(device_name))
    if output_folder_base is not None:
        trainer.output_folder_base = str(output_folder_base)
        trainer.output_folder = str(Path(output_folder_base) / "fold_all")
        trainer.log_file = str(Path(trainer.output_folder) / Path(trainer.log_file).name)
        Path(trainer.output_folder).mkdir(parents=True, exist_ok=True)
    trainer.num_epochs, trainer.num_iterations_per_epoch = epochs, iterations
    trainer.num_val_iterations_per_epoch = max(1, iterations // 5)
    for name, value in (attributes or {}).items():
        setattr(trainer, name, value)

    step_seconds: list[float] = []
    original_step = trainer.train_step

    def timed_step(batch: dict) -> dict:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        start = time.perf_counter()
        result = original_step(batch)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize(trainer.device)
        step_seconds.append(time.perf_counter() - start)
        return result

    snapshots: dict[int, dict] = {}
    original_epoch_end = trainer.on_epoch_end

    def epoch_end_with_snapshots() -> None:
        original_epoch_end()  # increments current_epoch
        if trainer.current_epoch in snapshot_epochs:
            weights = trainer.network.module.state_dict() if trainer.is_ddp else trainer.network.state_dict()
            snapshots[trainer.current_epoch] = {k: v.detach().cpu().clone() for k, v in weights.items()}

    trainer.train_step = timed_step
    trainer.on_epoch_end = epoch_end_with_snapshots
    start = time.perf_counter()
    trainer.run_training()
    measured = step_seconds[warmup_steps:] or step_seconds
    return trainer, {"train_seconds": round(time.perf_counter() - start, 1),
                     "step_ms_median": round(1000 * float(np.median(measured)), 1), "steps": len(step_seconds)}, \
        snapshots


def predict_folder(model_folder: Path, images: Path, output: Path, *, device_name: str,
                   weights: dict | None = None) -> None:
    """Predict every case of ``images`` with nnU-Net's predictor (mirroring on) from a trained model folder (fold
    'all'), optionally with other ``weights`` than its final checkpoint (a snapshot from :func:`train`). Runs in
    this process (nnU-Net's sequential path): on small test sets, worker start-up would cost more than it saves."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device(device_name), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=("all",))
    if weights is not None:
        predictor.list_of_parameters = [weights]
    output.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential(str(images), str(output), save_probabilities=False, overwrite=True)


def predict_and_evaluate(trainer, images: Path, labels: Path, output: Path, *, device_name: str,
                         labels_to_evaluate: list[int]) -> dict[int, float]:
    """Predict ``images`` with the trained model folder (nnU-Net's predictor, mirroring on) and return nnU-Net's
    mean Dice per label against ``labels``."""
    import torch
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device(device_name), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(Path(trainer.output_folder_base)), use_folds=("all",))
    predictor.predict_from_files(str(images), str(output), save_probabilities=False, overwrite=True,
                                 num_processes_preprocessing=1, num_processes_segmentation_export=1)
    metrics = compute_metrics_on_folder(str(labels), str(output), str(output / "summary.json"), SimpleITKIO(),
                                        trainer.dataset_json["file_ending"], labels_to_evaluate, num_processes=1)
    return {int(k): float(v["Dice"]) for k, v in metrics["mean"].items()}
