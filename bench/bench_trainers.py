"""Training and prediction speed, and training memory, of nnU-Net's trainer and every nnunet_mm trainer, on the same
plans and data.

Measures, per trainer, the way nnU-Net's ``nnUNetTrainerBenchmark_5epochs[_noDataLoading]`` do but per iteration:

* ``ms_per_it_no_dataloading``: ``train_step`` on a fixed random batch that already sits on the device (network,
  loss, optimizer, plus whatever the trainer does on the device, e.g. misalignment and modality dropout; CMC's
  unlabeled batch is fixed on the device too);
* ``ms_per_it_with_dataloading``: ``train_step(next(dataloader_train))`` with nnU-Net's real multi-process data
  augmentation (``nnUNet_n_proc_DA`` workers);
* ``predict_s_per_case``: sliding-window prediction (with mirroring) of one full phantom volume, preprocessed, with
  nnU-Net's predictor as ``nnUNetv2_predict`` runs it by default (the network not compiled);
* ``peak_memory_gb``: ``torch.cuda.max_memory_allocated`` over the timed training steps (CUDA only), beside the
  planner's estimate for the trainer's network on these plans (:func:`planner_estimate`).

Compilation is nnU-Net's default: on CUDA the trainers compile the network and the Dice loss (``nnUNet_compile`` is
left as it is: set it only to compare); the warm-up steps, which compile, are not timed (their seconds are reported
as ``warmup_s``), and ``recompiles_during_timing`` says whether dynamo compiled anything new while timing.

Data: a seeded four-phase phantom written in nnU-Net raw format, planned with nnU-Net's default planner, plus an
extra configuration ``3d_bench`` (inheriting ``3d_fullres``) that fixes the patch and batch size, so all trainers
run on identical plans. Each plugin trainer gets what it needs to run its whole step (:func:`trainer_dataset_json`):
SynthTumorTrainer a tumour-contrast statistics file (synthesis probability 1: every sample with liver, the
worst case), MASPriorTrainer the last channel marked as an atlas prior (``noNorm``), CMCTrainer two unlabeled cases
with the consistency terms from the first step, WeakLabelTrainer its mean teacher. Output:
``<output>/bench_trainers.json`` (rewritten after every trainer, so a run stopped midway keeps what it measured) and
``<output>/bench_trainers.png``. A trainer that fails or runs past ``--trainer-timeout`` / ``--deadline-s`` is
recorded with its error and the others go on.

GPU reference (shared/device/README.md, stock nnU-Net 2.8.1 on an H100, 4 channels, 64×160×160, batch 2):
46 ms/it without and 87 ms/it with data loading.

    python bench/bench_trainers.py --output bench_out                 # GPU defaults
    python bench/bench_trainers.py --output bench_out --all-trainers  # every trainer of the plugin
    python bench/bench_trainers.py --output bench_out --device cpu --patch 16 32 32 --case-shape 24 48 48 \\
        --iterations 3 --warmup 1 --num-cases 4                        # a CPU smoke run
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

PROCESS_START = time.monotonic()  # --deadline-s counts from here (nothing heavy is imported before)

DATASET_ID = 599
DATASET_NAME = f"Dataset{DATASET_ID:03d}_BenchPhantom"
CONFIGURATION = "3d_bench"
STOCK = "nnUNetTrainer"
PLUGIN_TRAINERS = ("MultiModalTrainer", "CMGTrainer", "CMCTrainer", "SynthTumorTrainer", "MASPriorTrainer",
                   "WeakLabelTrainer")
ALL_TRAINERS = (STOCK, *PLUGIN_TRAINERS)
STATISTICS_FILE = "tumour_contrast_bench.json"
NUM_UNLABELED = 2

# the goals: trainer / stock, GPU only (fixed batch on the device); predict seconds per case / stock; peak
# training memory / the planner's estimate
SPEED_GOALS = {"MultiModalTrainer": 1.05, "CMGTrainer": 1.5, "CMCTrainer": 2.5, "SynthTumorTrainer": 1.1}
PREDICT_GOAL = 1.3
MEMORY_GOAL_TOLERANCE = 0.10


def _set_paths(workdir: Path) -> None:
    for name, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        os.environ[name] = str(workdir / sub)
        (workdir / sub).mkdir(parents=True, exist_ok=True)


def _preprocessed() -> Path:
    return Path(os.environ["nnUNet_preprocessed"]) / DATASET_NAME


def _raw() -> Path:
    return Path(os.environ["nnUNet_raw"]) / DATASET_NAME


def quick_fingerprint(dataset_id: int, num_processes: int) -> None:
    """nnU-Net's fingerprint extraction with 10^5 foreground intensity samples instead of 10^8 (those take ~30 s even
    on tiny data; a speed benchmark does not need precise intensity statistics); everything else is nnU-Net's."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset

    class QuickFingerprintExtractor(DatasetFingerprintExtractor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.num_foreground_voxels_for_intensitystats = 1e5

    extract_fingerprint_dataset(dataset_id, QuickFingerprintExtractor, num_processes=num_processes,
                                check_dataset_integrity=True)


def prepare_dataset(workdir: Path, *, num_cases: int, case_shape: list[int], patch: list[int], batch_size: int,
                    num_processes: int, quick: bool = False, num_phases: int = 4,
                    base_features: int | None = None) -> None:
    """Phantom → raw dataset → fingerprint, plans, preprocessing; then add the fixed ``3d_bench`` configuration (the
    ``3d_fullres`` U-Net, with ``base_features`` features at the first stage if given) and what the plugin's methods
    need (:func:`prepare_method_data`)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
    from nnunetv2.experiment_planning.plan_and_preprocess_api import (
        extract_fingerprints, plan_experiments, preprocess)

    from nnunet_mm.phantom import write_nnunet_raw

    phases = ("pv", "art", "del", "nc")[:num_phases]
    write_nnunet_raw(workdir / "raw", dataset_id=DATASET_ID, name="BenchPhantom", num_training=num_cases,
                     num_test=1, seed=0, shape_zyx=tuple(case_shape), overwrite=True, phases=phases)
    if quick:
        quick_fingerprint(DATASET_ID, num_processes)
    else:
        extract_fingerprints([DATASET_ID], num_processes=num_processes, check_dataset_integrity=True)
    plan_experiments([DATASET_ID])
    plans_file = workdir / "preprocessed" / DATASET_NAME / "nnUNetPlans.json"
    plans = load_json(plans_file)
    plans["configurations"][CONFIGURATION] = {"inherits_from": "3d_fullres", "patch_size": patch,
                                              "batch_size": batch_size}
    if base_features:  # a narrower U-Net (dry runs): the architecture is replaced as a whole, as nnU-Net inherits
        architecture = copy.deepcopy(plans["configurations"]["3d_fullres"]["architecture"])
        stages = architecture["arch_kwargs"]["n_stages"]
        architecture["arch_kwargs"]["features_per_stage"] = [min(base_features * 2 ** i, 320) for i in range(stages)]
        plans["configurations"][CONFIGURATION]["architecture"] = architecture
    save_json(plans, plans_file, sort_keys=False)
    preprocess([DATASET_ID], configurations=("3d_fullres",), num_processes=(num_processes,))
    prepare_method_data(num_processes)


def prepare_method_data(num_processes: int = 1) -> None:
    """Beside the phantom: ``NUM_UNLABELED`` unlabeled cases (copies of training images in ``imagesUnl``,
    preprocessed for ``3d_bench`` by the plugin) for CMCTrainer, and a tumour-contrast statistics file (one row per
    phase, in normalised intensities) for SynthTumorTrainer."""
    import numpy as np

    from nnunet_mm.cmc.unlabeled import preprocess_unlabeled
    from nnunet_mm.synthesis.statistics import TumourContrastStatistics

    raw, preprocessed = _raw(), _preprocessed()
    folder = raw / "imagesUnl"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    cases = sorted(p.name[:-len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))[:NUM_UNLABELED]
    for index, case in enumerate(cases):
        for image in sorted((raw / "imagesTr").glob(f"{case}_*.nii.gz")):
            shutil.copyfile(image, folder / image.name.replace(case, f"unlabeled_{index:03d}"))
    preprocess_unlabeled(DATASET_ID, CONFIGURATION, num_processes=num_processes)
    phases = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))["nnunet_mm"]["phase_names"]
    contrast = np.array([[-2.0, 3.0, 1.0, -1.0][:len(phases)]])
    TumourContrastStatistics(tuple(phases), contrast, np.zeros_like(contrast), np.zeros_like(contrast),
                             ("real",)).save(preprocessed / STATISTICS_FILE)


def trainer_dataset_json(name: str, *, all_branches: bool = False) -> dict:
    """The preprocessed dataset.json with what ``name`` needs (see the module docstring).

    ``all_branches`` (the compile report) also switches on misalignment in every sample and modality dropout in
    half of them, as the readiness tests do, so every branch of the step is traced; the speed benchmark keeps the
    phantom's own (default) settings.
    """
    dataset_json = json.loads((_preprocessed() / "dataset.json").read_text(encoding="utf-8"))
    block = copy.deepcopy(dataset_json.get("nnunet_mm", {}))
    if all_branches:
        block.update({"seed": 0, "misalignment": {"probability": 1.0}, "modality_dropout": {"probability": 0.5}})
    if name == "SynthTumorTrainer":
        block["synthesis"] = {"probability": 1.0, "statistics_file": str(_preprocessed() / STATISTICS_FILE)}
    if name == "MASPriorTrainer":  # the last channel plays the atlas prior of the liver
        channels = sorted(dataset_json["channel_names"], key=int)
        block["modalities"] = {c: "CT" for c in channels[:-1]} | {channels[-1]: "atlas_prior:liver"}
        dataset_json["channel_names"] = {**dataset_json["channel_names"], channels[-1]: "noNorm"}
    dataset_json["nnunet_mm"] = block
    return dataset_json


def trainer_attributes(name: str, *, all_branches: bool = False) -> dict:
    """Attributes set after construction: CMC's consistency terms from the first step; for the compile report also
    CMG's predicted prototypes in half the samples."""
    attributes = {"CMCTrainer": {"semi_start_fraction": 0.0}}.get(name, {})
    if all_branches and name == "CMGTrainer":
        attributes = {"predicted_prototypes_start": 0.5}
    return attributes


def build_trainer(name: str, device, *, all_branches: bool = False):
    """``name`` through its real constructor on the ``3d_bench`` plans (not initialised)."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    plans = json.loads((_preprocessed() / "nnUNetPlans.json").read_text(encoding="utf-8"))
    plans["continue_training"] = False  # nnUNetTrainer.__init__ pops this key
    trainer_class = recursive_find_trainer_class_by_name(name)
    if trainer_class is None:
        raise RuntimeError(f"nnU-Net cannot find trainer {name} (nnUNet_extTrainer={os.environ.get('nnUNet_extTrainer')})")
    trainer = trainer_class(plans=plans, configuration=CONFIGURATION, fold="all",
                            dataset_json=trainer_dataset_json(name, all_branches=all_branches), device=device)
    for attribute, value in trainer_attributes(name, all_branches=all_branches).items():
        setattr(trainer, attribute, value)
    return trainer


def planner_estimate(network, patch_size, batch_size: int) -> dict:
    """The planner's memory estimate for ``network`` at ``patch_size`` and ``batch_size``, in GB.

    nnU-Net's ``ExperimentPlanner`` estimates with ``network.compute_conv_feature_map_size(patch_size)``
    (``static_estimate_VRAM_usage``: activations of one sample, voxels × channels; the plugin's networks implement
    it for their streams) and accepts a plan when ``estimate / ref_bs * 2 <= reference_val * target_GB /
    corresp_GB``, where ``reference_val`` (``UNet_reference_val_3d`` = 560e6, ``_2d`` = 85e6) is what the
    reference U-Net used at ``ref_bs`` (``UNet_reference_val_corresp_bs_3d`` = 2, ``_2d`` = 12) samples on
    ``corresp_GB`` (``UNet_reference_val_corresp_GB`` = 8) GB; the batch size then follows as
    ``round(reference / estimate * ref_bs)``. So the planner reads ``reference_val`` units of
    ``estimate × batch / ref_bs`` as ``corresp_GB`` GB, and for a batch ``b``::

        GB = estimate * b / ref_bs * corresp_GB / reference_val

    (3D: ``estimate * b * 7.1e-9``). The constants are read from nnU-Net's planner for this dataset. The planner's GB
    are those of a whole GPU (``gpu_memory_target_in_gb``: CUDA context and cuDNN workspaces included), the measured
    peak is ``torch.cuda.max_memory_allocated`` (tensors of the caching allocator only), so the comparison is
    against the estimate as the planner uses it, not against nvidia-smi.
    """
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    planner = ExperimentPlanner(DATASET_ID)
    three_d = len(patch_size) == 3
    reference_val = planner.UNet_reference_val_3d if three_d else planner.UNet_reference_val_2d
    ref_bs = planner.UNet_reference_val_corresp_bs_3d if three_d else planner.UNet_reference_val_corresp_bs_2d
    estimate = int(network.compute_conv_feature_map_size(list(patch_size)))
    gb = estimate * batch_size / ref_bs * planner.UNet_reference_val_corresp_GB / reference_val
    return {"feature_map_size": estimate, "estimate_gb": round(gb, 4), "batch_size": batch_size,
            "reference_val": reference_val, "reference_batch_size": ref_bs,
            "reference_gb": planner.UNet_reference_val_corresp_GB}


class TrainerTimeout(Exception):
    """A trainer ran past its time limit (raised from SIGALRM in the main thread)."""


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise :class:`TrainerTimeout` in the main thread after ``seconds`` (None or <= 0: no limit)."""
    if not seconds or seconds <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def on_alarm(signum, frame):
        raise TrainerTimeout(f"time limit of {seconds:.0f} s reached")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def error_text(error: BaseException, limit: int = 4000) -> str:
    """The exception and the last frames of its traceback, at most ``limit`` characters."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return text[-limit:]


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


class _FixedLoader:
    """An endless loader that returns one batch (already on the device): GPU-only timing of a loader the trainer
    draws from inside its step (CMC's unlabeled cases)."""

    def __init__(self, batch: dict):
        self.batch = batch

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        return self.batch

    def _finish(self) -> None:
        pass


def _to_device(batch: dict, device) -> dict:
    target = batch["target"]
    return {**batch, "data": batch["data"].to(device),
            "target": [t.to(device) for t in target] if isinstance(target, list) else target.to(device)}


def _unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def _finish_loaders(trainer) -> None:
    for name in ("dataloader_train", "dataloader_val", "dataloader_unlabeled"):
        loader = getattr(trainer, name, None)
        if loader is not None and hasattr(loader, "_finish"):
            with contextlib.suppress(Exception):
                loader._finish()


def bench_trainer(trainer_name: str, *, device_name: str, iterations: int, warmup: int, predict: bool = True,
                  record: dict | None = None) -> dict:
    """ms/iteration with and without data loading, peak training memory with the planner's estimate, and
    prediction seconds per case, for one trainer. Fills ``record`` as it goes (a caller keeps what was measured
    before a failure)."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_mm.training.compile_readiness import unwrap

    record = {} if record is None else record
    device = torch.device(device_name)
    trainer = build_trainer(trainer_name, device)
    owned_loaders: list = []  # loaders replaced on the trainer while timing, finished at the end all the same
    try:
        start = time.perf_counter()
        trainer.on_train_start()  # initialize (network, compile on CUDA), loaders and their workers
        trainer.on_train_epoch_start()
        record["setup_s"] = round(time.perf_counter() - start, 2)
        record["compiled"] = type(trainer.network).__name__ == "OptimizedModule"
        network = unwrap(trainer.network)
        patch_size = [int(s) for s in trainer.configuration_manager.patch_size]
        record.update({"batch_size": trainer.batch_size, "patch_size": patch_size,
                       "num_channels": len(trainer.dataset_json["channel_names"]),
                       "network": type(network).__name__,
                       "parameters": int(sum(p.numel() for p in network.parameters()))})
        record["memory_estimate"] = planner_estimate(network, patch_size, trainer.batch_size)

        fixed_batch = _to_device(next(trainer.dataloader_train), device)
        real_unlabeled = getattr(trainer, "dataloader_unlabeled", None)
        owned_loaders.append(real_unlabeled)
        if real_unlabeled is not None:  # CMC: its unlabeled batch, fixed on the device too
            trainer.dataloader_unlabeled = _FixedLoader(_to_device(next(real_unlabeled), device))
        start = time.perf_counter()
        for _ in range(max(1, warmup)):  # compiles on CUDA (not timed)
            trainer.train_step(fixed_batch)
        _sync(device)
        record["warmup_s"] = round(time.perf_counter() - start, 2)
        graphs = _unique_graphs()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        record["ms_per_it_no_dataloading"] = round(
            _time_steps(lambda: trainer.train_step(fixed_batch), device, iterations, 0), 2)
        if device.type == "cuda":
            record["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1024 ** 3, 4)
            record["peak_reserved_gb"] = round(torch.cuda.max_memory_reserved(device) / 1024 ** 3, 4)
            record["peak_memory_vs_estimate"] = round(record["peak_memory_gb"]
                                                      / record["memory_estimate"]["estimate_gb"], 3)
        if real_unlabeled is not None:
            trainer.dataloader_unlabeled = real_unlabeled
        new_graphs = _unique_graphs() - graphs
        for _ in range(max(1, warmup)):  # the workers' first batches (not timed)
            trainer.train_step(next(trainer.dataloader_train))
        graphs = _unique_graphs()
        record["ms_per_it_with_dataloading"] = round(
            _time_steps(lambda: trainer.train_step(next(trainer.dataloader_train)), device, iterations, 0), 2)
        record["recompiles_during_timing"] = new_graphs + _unique_graphs() - graphs
        _finish_loaders(trainer)
        if not predict:
            return record

        trainer.network.eval()
        trainer.set_deep_supervision_enabled(False)
        predictor = nnUNetPredictor(device=device, allow_tqdm=False)
        # as nnUNetv2_predict by default: the plain network (it compiles only with nnUNet_compile=true)
        predictor.manual_initialization(network, trainer.plans_manager, trainer.configuration_manager,
                                        [network.state_dict()], trainer.dataset_json, trainer_name,
                                        trainer.inference_allowed_mirroring_axes)
        files = sorted(str(p) for p in (_raw() / "imagesTs").glob("*.nii.gz"))
        preprocessor = trainer.configuration_manager.preprocessor_class(verbose=False)
        data, _, _ = preprocessor.run_case(files, None, trainer.plans_manager, trainer.configuration_manager,
                                           trainer.dataset_json)
        data = torch.from_numpy(data)
        predictor.predict_logits_from_preprocessed_data(data)  # warm-up (cudnn autotuning)
        _sync(device)
        start = time.perf_counter()
        predictor.predict_logits_from_preprocessed_data(data)
        _sync(device)
        record["predict_s_per_case"] = round(time.perf_counter() - start, 3)
        record["case_shape"] = list(data.shape[1:])
        return record
    finally:
        _finish_loaders(trainer)
        for loader in owned_loaders:
            if loader is not None and hasattr(loader, "_finish"):
                with contextlib.suppress(Exception):
                    loader._finish()


def _release(device_name: str) -> None:
    """Free what a trainer left (its compiled frames, cached GPU memory) before the next one."""
    import torch

    gc.collect()
    with contextlib.suppress(Exception):
        torch._dynamo.reset()
    if device_name.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def add_ratios(results: list[dict]) -> None:
    """Each trainer against ``nnUNetTrainer``: ``*_ratio`` (trainer / stock) and the old ``*_vs_nnUNetTrainer_pct``."""
    reference = next((r for r in results if r["trainer"] == STOCK and r.get("status") == "ok"), None)
    if reference is None:
        return
    for r in results:
        for key in ("ms_per_it_no_dataloading", "ms_per_it_with_dataloading", "predict_s_per_case"):
            if r.get(key) is not None and reference.get(key):
                r[f"{key}_ratio"] = round(r[key] / reference[key], 3)
                r[f"{key}_vs_nnUNetTrainer_pct"] = round(100.0 * (r[key] / reference[key] - 1.0), 1)


def goal_table(results: list[dict], on_gpu: bool = True) -> list[dict]:
    """The issue's goals beside the measured numbers (``met`` None where nothing was measured, and everywhere off
    the GPU: the goals are GPU goals)."""
    rows = []
    by_name = {r["trainer"]: r for r in results}
    for name, goal in SPEED_GOALS.items():
        value = by_name.get(name, {}).get("ms_per_it_no_dataloading_ratio")
        rows.append({"goal": f"{name} GPU-only ms/it <= {goal}x stock", "trainer": name, "limit": goal,
                     "measured": value, "met": None if value is None else value <= goal})
    for r in results:
        if r["trainer"] == STOCK:
            continue
        value = r.get("predict_s_per_case_ratio")
        rows.append({"goal": f"{r['trainer']} predict s/case <= {PREDICT_GOAL}x stock", "trainer": r["trainer"],
                     "limit": PREDICT_GOAL, "measured": value, "met": None if value is None else value <= PREDICT_GOAL})
    for r in results:
        value = r.get("peak_memory_vs_estimate")
        rows.append({"goal": f"{r['trainer']} peak memory within {MEMORY_GOAL_TOLERANCE:.0%} of the planner's estimate",
                     "trainer": r["trainer"], "limit": MEMORY_GOAL_TOLERANCE, "measured": value,
                     "met": None if value is None else abs(value - 1.0) <= MEMORY_GOAL_TOLERANCE})
    if not on_gpu:
        for row in rows:
            row["met"] = None
    return rows


def write_json(path: Path, report: dict) -> None:
    from nnunet_mm.io.staging import atomic_file

    with atomic_file(path) as partial:
        partial.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")


def save_chart(results: list[dict], png: Path, title: str) -> None:
    """Grouped bars: ms/iteration without and with data loading, per trainer (the plugin's figure style)."""
    from nnunet_mm.io.figure_style import figure_style

    with figure_style():
        _draw_chart(results, png, title)


def _draw_chart(results: list[dict], png: Path, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from nnunet_mm.io.staging import atomic_file

    names = [r["trainer"] for r in results]
    x = np.arange(len(names))
    fig, axis = plt.subplots(figsize=(1.8 * len(names) + 3, 4))
    for offset, key, label in ((-0.2, "ms_per_it_no_dataloading", "GPU only (fixed batch)"),
                               (0.2, "ms_per_it_with_dataloading", "with data loading")):
        values = [r.get(key) or 0.0 for r in results]
        bars = axis.bar(x + offset, values, width=0.4, label=label)
        axis.bar_label(bars, fmt="%.1f", fontsize=8)
    axis.set_xticks(x, names, rotation=15, fontsize=8)
    axis.set_ylabel("ms / iteration")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    fig.tight_layout()
    with atomic_file(png) as partial:
        fig.savefig(partial, dpi=110, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="bench_out", help="output folder [default: %(default)s]")
    parser.add_argument("--workdir", default=None, help="nnU-Net folders [default: <output>/work]")
    parser.add_argument("--trainers", nargs="+", default=["nnUNetTrainer", "MultiModalTrainer", "CMGTrainer"])
    parser.add_argument("--all-trainers", action="store_true", help=f"every trainer: {' '.join(ALL_TRAINERS)}")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 160, 160])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--case-shape", type=int, nargs=3, default=[96, 224, 224])
    parser.add_argument("--num-cases", type=int, default=8)
    parser.add_argument("--num-phases", type=int, default=4, choices=(2, 3, 4), help="channels of the phantom")
    parser.add_argument("--base-features", type=int, default=None,
                        help="features of the first stage of 3d_bench (doubling per stage) [default: the plans']")
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--num-processes", type=int, default=4, help="planning/preprocessing processes")
    parser.add_argument("--quick-fingerprint", action="store_true",
                        help="fingerprint with 1e5 intensity samples instead of 1e8 (saves ~30 s)")
    parser.add_argument("--skip-prepare", action="store_true", help="reuse an already prepared --workdir")
    parser.add_argument("--prepare-only", action="store_true", help="prepare the data, benchmark nothing")
    parser.add_argument("--no-predict", action="store_true", help="skip the prediction timing")
    parser.add_argument("--trainer-timeout", type=float, default=None, help="seconds per trainer (none: no limit)")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="seconds for all trainers: a trainer is stopped at the deadline, later ones skipped")
    args = parser.parse_args(argv)

    started = PROCESS_START
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    workdir = Path(args.workdir).resolve() if args.workdir else output / "work"
    _set_paths(workdir)
    if not args.skip_prepare:
        prepare_dataset(workdir, num_cases=args.num_cases, case_shape=args.case_shape, patch=args.patch,
                        batch_size=args.batch_size, num_processes=args.num_processes, quick=args.quick_fingerprint,
                        num_phases=args.num_phases, base_features=args.base_features)
        print(f"prepared {_preprocessed()} in {time.monotonic() - started:.1f} s", flush=True)
    if args.prepare_only:
        return 0
    import torch

    trainers = list(ALL_TRAINERS) if args.all_trainers else args.trainers
    device_text = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    report = {"device": device_text, "device_type": args.device.split(":")[0], "torch": torch.__version__,
              "python": sys.version.split()[0], "nnUNet_n_proc_DA": os.environ.get("nnUNet_n_proc_DA"),
              "nnUNet_compile": os.environ.get("nnUNet_compile"), "iterations": args.iterations,
              "warmup": args.warmup, "trainers": trainers, "results": []}
    results = report["results"]
    json_path = output / "bench_trainers.json"
    for index, name in enumerate(trainers):
        record = {"trainer": name, "status": "running"}
        results.append(record)
        left = None if args.deadline_s is None else args.deadline_s - (time.monotonic() - started)
        if left is not None and left < 5:
            record.update(status="skipped", error=f"part deadline of {args.deadline_s:.0f} s reached")
            continue
        limit = min(x for x in (args.trainer_timeout, left) if x is not None) if (
            args.trainer_timeout is not None or left is not None) else None
        write_json(json_path, report)
        print(f"benchmarking {name} ...", flush=True)
        start = time.perf_counter()
        try:
            with time_limit(limit):
                bench_trainer(name, device_name=args.device, iterations=args.iterations, warmup=args.warmup,
                              predict=not args.no_predict, record=record)
            record["status"] = "ok"
        except TrainerTimeout as error:
            record.update(status="timed out", error=str(error))
        except Exception as error:  # noqa: BLE001 - every trainer's failure is recorded, the others go on
            record.update(status="failed", error=error_text(error))
        record["seconds"] = round(time.perf_counter() - start, 1)
        _release(args.device)
        add_ratios(results)
        report["goals"] = goal_table(results, args.device.startswith("cuda"))
        write_json(json_path, report)
        print(json.dumps({k: v for k, v in record.items() if k != "error"}), flush=True)
        if record.get("error"):
            print(f"{name} {record['status']}: {record['error']}", flush=True)
    add_ratios(results)
    report["goals"] = goal_table(results, args.device.startswith("cuda"))
    report["seconds"] = round(time.monotonic() - started, 1)
    write_json(json_path, report)
    measured = [r for r in results if r.get("ms_per_it_no_dataloading") is not None]
    if measured:
        save_chart(measured, output / "bench_trainers.png",
                   f"{device_text}, {measured[0].get('num_channels')} ch, patch {args.patch}, batch {args.batch_size}")
    print(f"wrote {json_path} and {output / 'bench_trainers.png'}")
    return 0


if __name__ == "__main__":
    from nnunet_mm.io.console import tolerate_unencodable_output

    tolerate_unencodable_output()
    sys.exit(main())
