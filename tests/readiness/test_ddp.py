"""Every plugin trainer trains under DistributedDataParallel, as ``nnUNetv2_train -num_gpus 2`` runs it.

Two ranks (``torch.distributed`` with the ``gloo`` backend, on the CPU, spawned once for all trainers) build each
trainer of :data:`trainer_zoo.PLUGIN_TRAINERS` under the process group and run nnU-Net's own DDP path (see
:mod:`ddp_worker` for the two CPU adaptations). The ``2d`` configuration gets a global batch size of 4, so nnU-Net
gives each rank 2 samples. Verified per trainer:

1. two consecutive ``train_step`` calls succeed on both ranks (the second is where DDP with
   ``find_unused_parameters=False`` reports parameters that got no gradient), with nnU-Net's DDP wrapper in place;
2. after each step every trainable parameter has a gradient, the gradients agree across the ranks, and the
   parameters are identical across the ranks after the optimizer step;
3. the ranks differ where they must: different training batches, different generator seeds, and different
   ``augment_multimodal`` draws on an identical input;
4. the epoch end (``on_train_epoch_end``) logs, on every rank, the mean over both ranks' steps of the loss and of
   each extra logged value (nnU-Net's and MultiModalTrainer's all-gather);
5. per-rank extras: CMCTrainer's unlabeled loader exists on both ranks and its consistency terms are non-zero;
   WeakLabelTrainer's EMA teacher exists on both ranks (not DDP-wrapped), is updated, and agrees across ranks.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch.multiprocessing as mp
from ddp_worker import STEPS, WORLD_SIZE, WorkerConfig, result_file, run
from planned_phantom import DATASET_NAME
from trainer_zoo import PLUGIN_TRAINERS

GLOBAL_BATCH_SIZE = 4  # 2 samples per rank
SPAWN_TIMEOUT_S = 600  # far above the ~30-60 s the ranks need; a hung collective is killed, not waited for


def ddp_dataset(source: Path, destination_root: Path) -> Path:
    """A copy of the preprocessed dataset ``source`` whose ``2d`` configuration has the global batch size
    :data:`GLOBAL_BATCH_SIZE` (the shared folder stays untouched)."""
    destination = destination_root / DATASET_NAME
    shutil.copytree(source, destination)
    plans_file = destination / "nnUNetPlans.json"
    plans = json.loads(plans_file.read_text(encoding="utf-8"))
    plans["configurations"]["2d"]["batch_size"] = GLOBAL_BATCH_SIZE
    plans_file.write_text(json.dumps(plans, indent=1), encoding="utf-8")
    return destination


def run_ranks(config: WorkerConfig, timeout_s: float) -> str | None:
    """Spawn the ranks and wait for them; None when both exited cleanly, else what went wrong (a rank's exit or
    the timeout, after which the ranks are killed)."""
    context = mp.start_processes(run, args=(config,), nprocs=WORLD_SIZE, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                return f"the ranks did not finish within {timeout_s:.0f} s"
    except mp.ProcessRaisedException as error:
        return f"a rank raised: {error}"
    except mp.ProcessExitedException as error:
        return f"a rank exited: {error}"
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
                process.join()
    return None


def read_findings(results: Path) -> list[dict[str, dict[str, Any]]]:
    """Each rank's findings per trainer ({} for a rank that wrote nothing)."""
    files = [result_file(results, rank) for rank in range(WORLD_SIZE)]
    return [json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {} for f in files]


def step_problems(step: int, found: dict[str, Any]) -> list[str]:
    """Problems of one rank's step: parameters without gradient, gradients or parameters differing across ranks."""
    problems = []
    if found["without_grad_any_rank"]:
        problems.append(f"step {step}: parameters without gradient {found['without_grad'][:5]} (DDP with "
                        f"find_unused_parameters=False cannot train them)")
    if found["gradient_norm"] == 0.0:
        problems.append(f"step {step}: all gradients are zero")
    if found["gradient_mismatch"]:
        problems.append(f"step {step}: gradients differ across ranks: {found['gradient_mismatch'][:5]}")
    if found["parameter_mismatch"]:
        problems.append(f"step {step}: parameters differ across ranks after the optimizer step: "
                        f"{found['parameter_mismatch'][:5]}")
    return problems


def rank_problems(name: str, rank: int, found: dict[str, Any] | None) -> list[str]:
    """Everything wrong with trainer ``name`` on rank ``rank`` (see the module docstring for the checks)."""
    if found is None:
        return ["no findings (the rank died or hung before this trainer)"]
    if "error" in found:
        return [f"raised:\n{found['error']}"]
    setup = found["setup"]
    problems = []
    expected_setup = {"is_ddp": True, "local_rank": rank, "batch_size": GLOBAL_BATCH_SIZE // WORLD_SIZE,
                      "device": "cpu", "ddp_wrapped": True, "find_unused_parameters": False, "dice_ddp": True}
    problems += [f"setup {key} = {setup[key]!r}, expected {value!r}" for key, value in expected_setup.items()
                 if setup[key] != value]
    if setup["lowest_ds_weight"] is not None and setup["lowest_ds_weight"] <= 0:
        problems.append(f"the lowest deep-supervision output has weight {setup['lowest_ds_weight']} (nnU-Net "
                        f"gives it 1e-6 under DDP)")
    if len(found["steps"]) != STEPS:
        problems.append(f"{len(found['steps'])} steps ran, expected {STEPS}")
    for step, step_found in enumerate(found["steps"], start=1):
        problems += step_problems(step, step_found)
    if not found["batches_differ"]:
        problems.append("both ranks trained on the same batch")
    augmentation = found["augmentation"]
    if not augmentation["changes_input"]:
        problems.append("augment_multimodal left the probe input unchanged")
    if not augmentation["differs_across_ranks"]:
        problems.append(f"augment_multimodal drew the same augmentation on both ranks (seed {augmentation['seed']})")
    if name == "CMCTrainer":
        if not found.get("unlabeled_loader"):
            problems.append("no unlabeled loader on this rank")
        for step, step_found in enumerate(found["steps"], start=1):
            zero = [key for key in ("csc_loss", "cac_loss") if not step_found["logged"].get(key, 0.0) > 0.0]
            if zero:
                problems.append(f"step {step}: consistency terms {zero} are zero")
    if name == "WeakLabelTrainer":
        teacher = found.get("teacher", {"exists": False})
        if not teacher["exists"]:
            problems.append("no EMA teacher on this rank")
        else:
            problems += [text for flag, text in ((teacher["ddp_wrapped"], "the teacher is DDP-wrapped"),
                                                 (teacher["is_student"], "the teacher is the student"),
                                                 (not teacher["updated"], "the teacher was not updated"),
                                                 (bool(teacher["mismatch"]),
                                                  f"the teachers differ across ranks: {teacher['mismatch'][:5]}"))
                         if flag]
    return problems


def cross_rank_problems(name: str, findings: list[dict[str, dict[str, Any]]]) -> list[str]:
    """What needs both ranks' findings: distinct generator seeds, and every rank's epoch-end log being the mean over
    both ranks' steps (loss and extra logged values)."""
    per_rank = [found.get(name, {}) for found in findings]
    if any("epoch_end" not in found for found in per_rank):
        return []  # the rank problems say why
    problems = []
    seeds = [found["augmentation"]["seed"] for found in per_rank]
    if len(set(seeds)) != len(seeds):
        problems.append(f"{name}: the ranks' augmentation generators have the same seed ({seeds})")
    for key, logged_key in (("train_losses", "loss"), *((k, k) for k in per_rank[0]["epoch_end"]
                                                        if k != "train_losses")):
        values = [step["logged"][logged_key] for found in per_rank for step in found["steps"]]
        expected = sum(values) / len(values)
        problems += [f"{name} (rank {rank}): the epoch end logged {key} = {found['epoch_end'][key]:.6g}, not the "
                     f"mean over both ranks' steps {expected:.6g}" for rank, found in enumerate(per_rank)
                     if not math.isclose(found["epoch_end"][key], expected, rel_tol=1e-5, abs_tol=1e-7)]
    return problems


def test_every_trainer_trains_under_ddp(zoo, tmp_path, monkeypatch):
    """Every plugin trainer's step under nnU-Net's DDP wrapping on two gloo ranks (see the module docstring)."""
    preprocessed = ddp_dataset(zoo.preprocessed, tmp_path / "pre")
    results = tmp_path / "ddp_results"
    results.mkdir()
    environment = {**zoo.environment(), "nnUNet_preprocessed": str(preprocessed.parent), "OMP_NUM_THREADS": "1"}
    for key, value in environment.items():  # the spawned ranks start with this environment (torch reads OMP_*)
        monkeypatch.setenv(key, value)
    config = WorkerConfig(environment=environment, preprocessed=str(preprocessed), trainers=PLUGIN_TRAINERS,
                          init_file=str(tmp_path / "ddp_init"), results=str(results))

    failure = run_ranks(config, SPAWN_TIMEOUT_S)

    findings = read_findings(results)
    problems = [f"{name} (rank {rank}): {problem}" for name in PLUGIN_TRAINERS for rank in range(WORLD_SIZE)
                for problem in rank_problems(name, rank, findings[rank].get(name))]
    problems += [problem for name in PLUGIN_TRAINERS for problem in cross_rank_problems(name, findings)]
    assert not problems and failure is None, "\n".join(([failure] if failure else []) + problems)
