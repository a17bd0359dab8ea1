"""One rank of the DDP readiness test (:mod:`test_ddp`): every plugin trainer built and stepped under a ``gloo``
process group on the CPU, the way ``nnUNetv2_train -num_gpus N`` runs it on GPUs.

Only what cannot work on a CPU is changed: after construction (where nnU-Net forces ``cuda:<rank>``) the trainer's
device is set to the CPU and its CUDA grad scaler removed, and nnU-Net's ``DDP(network, device_ids=[rank])`` is
made to drop ``device_ids`` for a CPU module (:class:`CpuDDP`, patched in for the name ``DDP`` of nnU-Net's trainer
module). Everything else (``is_ddp``/``local_rank``, the per-rank batch size, ``convert_sync_batchnorm``, the DDP
wrapper with ``find_unused_parameters=False``, the Dice loss with ``ddp=True`` and the 1e-6 weight of the lowest
deep-supervision output) is nnU-Net's own code path.

Each rank writes what it found per trainer (:func:`check_trainer`) to ``results_rank<r>.json`` after every trainer,
so that a crash or hang still leaves the trainers checked so far, and a failing trainer can be named.
"""
from __future__ import annotations

import gc
import json
import os
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

WORLD_SIZE = 2
STEPS = 2  # the second step is where DDP reports parameters that got no gradient in the first
PROBE_BATCH = 16  # samples of the identical input each rank augments (enough that prior dropout draws differ)
COLLECTIVE_TIMEOUT_S = 60  # a rank whose partner crashed gives up instead of waiting the default 30 min
GRAD_RTOL, GRAD_ATOL = 1e-5, 1e-7


@dataclass(frozen=True)
class WorkerConfig:
    """What the spawned ranks need: the ``nnUNet_*`` environment, the preprocessed dataset (its plans give the
    global batch size), the trainers to check, the rendezvous file and the folder for the result files."""

    environment: dict[str, str]
    preprocessed: str
    trainers: tuple[str, ...]
    init_file: str
    results: str


class CpuDDP(DistributedDataParallel):
    """``DistributedDataParallel`` that drops ``device_ids`` for a module on the CPU (they name CUDA devices, which
    the CPU module does not have); everything else is passed on unchanged."""

    def __init__(self, module: torch.nn.Module, device_ids: list[int] | None = None, **kwargs: Any):
        on_cpu = all(p.device.type == "cpu" for p in module.parameters())
        super().__init__(module, device_ids=None if on_cpu else device_ids, **kwargs)


def result_file(results: Path, rank: int) -> Path:
    """The JSON file rank ``rank`` writes its findings to."""
    return results / f"results_rank{rank}.json"


def run(rank: int, config: WorkerConfig) -> None:
    """Entry point of one spawned rank: join the gloo group, check every trainer, write the findings."""
    os.environ.update(config.environment)
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{config.init_file}", rank=rank, world_size=WORLD_SIZE,
                            timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer_module

    nnunet_trainer_module.DDP = CpuDDP
    findings: dict[str, dict[str, Any]] = {}
    output = result_file(Path(config.results), rank)
    try:
        for name in config.trainers:
            try:
                findings[name] = check_trainer(name, Path(config.preprocessed))
            except Exception:  # noqa: BLE001 (reported per trainer; the test names it)
                findings[name] = {"error": traceback.format_exc()}
            _write_json(output, findings)
            gc.collect()
            # both ranks finish a trainer before the next starts (a rank that failed early waits here)
            dist.barrier()
    finally:
        _write_json(output, findings)
        dist.destroy_process_group()


def _write_json(path: Path, content: dict) -> None:
    """``content`` as UTF-8 JSON, replaced atomically (the test may read it after a rank was killed)."""
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(content, indent=1), encoding="utf-8")
    os.replace(partial, path)


# ----------------------------------------------------------------------------------------------------------------
# the checks of one trainer


def build_ddp_trainer(name: str, preprocessed: Path):
    """``name`` built by :func:`trainer_zoo.build_trainer` under the process group, moved to the CPU, initialised
    (nnU-Net's DDP wrapping), and, for CMCTrainer, given its unlabeled loader as ``on_train_start`` does."""
    from trainer_zoo import build_trainer

    trainer = build_trainer(name, preprocessed, initialize=False)
    trainer.device = torch.device("cpu")  # nnU-Net forced cuda:<rank>
    trainer.grad_scaler = None  # nnU-Net made a CUDA grad scaler for that device
    trainer.initialize()
    if name == "CMCTrainer":
        trainer.dataloader_unlabeled = trainer._make_unlabeled_loader(trainer.unlabeled_cases_folder())
    return trainer


def check_trainer(name: str, preprocessed: Path) -> dict[str, Any]:
    """What one rank finds about ``name`` under DDP (the test judges it):

    * ``setup``: ``is_ddp``, ``local_rank``, per-rank batch size, whether the network is nnU-Net's DDP wrapper with
      ``find_unused_parameters=False``, the Dice loss's ``ddp`` flag;
    * ``batches_differ``: the two ranks' first training batches (nnU-Net's loader and augmentation) differ;
    * ``steps``: per ``train_step`` its logged values, the parameters without gradient, the parameters whose
      gradients differ between the ranks, and those that differ after the optimizer step;
    * ``epoch_end``: what ``on_train_epoch_end`` logged for the epoch of these steps (nnU-Net's ``train_losses``
      and the trainer's ``extra_log_keys``, each gathered across the ranks there);
    * ``augmentation``: each rank's generator seed, and whether ``augment_multimodal`` of an identical input
      (same on both ranks) differs between the ranks, drawn before the first step from the generator as
      ``initialize`` seeded it (later, data-dependent draws such as the tumour synthesis would make the ranks'
      generators diverge even from equal seeds);
    * ``unlabeled_loader`` (CMCTrainer), ``teacher`` (WeakLabelTrainer): the per-rank extras.
    """
    from trainer_zoo import fixed_batches

    trainer = build_ddp_trainer(name, preprocessed)
    findings: dict[str, Any] = {"setup": _setup(trainer), "augmentation": _augmentation(trainer)}
    teacher = getattr(trainer, "teacher", None)
    teacher_before = None if teacher is None else [t.detach().clone() for t in teacher.parameters()]
    batches = fixed_batches(trainer, STEPS)
    findings["batches_differ"] = _differs_across_ranks(batches[0]["data"])
    findings["steps"] = []
    outputs = []
    for batch in batches:
        logged = trainer.train_step(batch)
        outputs.append(logged)
        findings["steps"].append({"logged": {key: float(value) for key, value in logged.items()},
                                  **_gradients_and_parameters(trainer.network)})
    findings["epoch_end"] = _epoch_end(trainer, outputs)
    if name == "CMCTrainer":
        findings["unlabeled_loader"] = trainer.dataloader_unlabeled is not None
    if name == "WeakLabelTrainer" or teacher is not None:
        findings["teacher"] = _teacher(trainer, teacher, teacher_before)
    if hasattr(getattr(trainer, "dataloader_unlabeled", None), "_finish"):
        trainer.dataloader_unlabeled._finish()
    return findings


def _setup(trainer) -> dict[str, Any]:
    network = trainer.network
    loss = trainer.loss
    dice_and_ce = getattr(loss, "loss", loss)  # inside nnU-Net's DeepSupervisionWrapper
    dice = getattr(dice_and_ce, "dc", None)
    return {"is_ddp": bool(trainer.is_ddp), "local_rank": int(trainer.local_rank),
            "batch_size": int(trainer.batch_size), "device": str(trainer.device),
            "ddp_wrapped": isinstance(network, DistributedDataParallel),
            "find_unused_parameters": bool(getattr(network, "find_unused_parameters", True)),
            "dice_ddp": bool(getattr(dice, "ddp", False)),
            "lowest_ds_weight": float(loss.weight_factors[-1]) if hasattr(loss, "weight_factors") else None}


def _gather(tensor: torch.Tensor) -> list[torch.Tensor]:
    """``tensor`` (same shape on every rank) from every rank, as float on the CPU."""
    local = tensor.detach().float().cpu().contiguous()
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    return gathered


def _differs_across_ranks(tensor: torch.Tensor) -> bool:
    first, *others = _gather(tensor)
    return any(not torch.equal(first, other) for other in others)


def _mismatches(named: list[tuple[str, torch.Tensor]], rtol: float, atol: float) -> list[str]:
    """The names whose tensors are not allclose on every rank (one gather of all of them)."""
    if not named:
        return []
    flat = torch.cat([tensor.detach().float().reshape(-1) for _, tensor in named])
    first, *others = _gather(flat)
    bad: list[str] = []
    offset = 0
    for parameter_name, tensor in named:
        size = tensor.numel()
        if any(not torch.allclose(first[offset:offset + size], other[offset:offset + size], rtol=rtol, atol=atol)
               for other in others):
            bad.append(parameter_name)
        offset += size
    return bad


def _gradients_and_parameters(network: torch.nn.Module) -> dict[str, Any]:
    """After a step: trainable parameters without gradient, and those whose gradient / value differs between ranks
    (gradients after DDP's all-reduce and nnU-Net's clipping; values after the optimizer step)."""
    trainable = [(n, p) for n, p in network.named_parameters() if p.requires_grad]
    without_grad = [n for n, p in trainable if p.grad is None]
    with_grad = [(n, p.grad) for n, p in trainable if p.grad is not None]
    norms = torch.stack([g.float().norm() for _, g in with_grad]) if with_grad else torch.zeros(1)
    without_grad_any_rank = _any_rank(bool(without_grad))  # then the ranks' gradient lists may not line up
    return {"num_parameters": len(trainable), "without_grad": without_grad,
            "without_grad_any_rank": without_grad_any_rank, "gradient_norm": float(norms.norm()),
            "gradient_mismatch": ["(not compared: some parameters have no gradient)"] if without_grad_any_rank
            else _mismatches(with_grad, GRAD_RTOL, GRAD_ATOL),
            "parameter_mismatch": _mismatches(trainable, 0.0, 0.0)}


def _any_rank(flag: bool) -> bool:
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _epoch_end(trainer, outputs: list[dict]) -> dict[str, float]:
    """The values ``on_train_epoch_end`` logs for the current epoch from the steps' ``outputs`` (the loss and each
    extra logged value, averaged over the ranks by nnU-Net's and MultiModalTrainer's all-gather)."""
    trainer.on_train_epoch_end(outputs)
    logged = trainer.logger.local_logger.my_fantastic_logging
    keys = ("train_losses", *trainer.extra_log_keys)
    return {key: float(logged[key][trainer.current_epoch]) for key in keys}


def _augmentation(trainer) -> dict[str, Any]:
    """Each rank's generator seed, and whether ``augment_multimodal`` of the same input differs between ranks (the
    generator's state is restored afterwards, so the steps draw what they would have drawn)."""
    generator = trainer.augmentation_generator
    state = generator.get_state()
    probe_generator = torch.Generator().manual_seed(1234)  # the same input on every rank
    patch = tuple(trainer.configuration_manager.patch_size)
    probe = torch.randn((PROBE_BATCH, trainer.num_input_channels, *patch), generator=probe_generator)
    augmented, _ = trainer.augment_multimodal(probe.to(trainer.device))
    generator.set_state(state)
    return {"seed": int(generator.initial_seed()), "changes_input": not torch.equal(augmented.cpu(), probe),
            "differs_across_ranks": _differs_across_ranks(augmented)}


def _teacher(trainer, teacher: torch.nn.Module | None, before: list[torch.Tensor] | None) -> dict[str, Any]:
    """The EMA teacher of this rank: whether it exists, is a plain module (not DDP-wrapped, not the student), was
    updated by the steps (differs from ``before``) and agrees with the other ranks' teachers after them."""
    if teacher is None:
        return {"exists": False}
    student = trainer.unwrapped_network
    return {"exists": True, "ddp_wrapped": isinstance(teacher, DistributedDataParallel),
            "is_student": teacher is student or teacher is trainer.network,
            "updated": any(not torch.equal(now, then) for now, then in zip(teacher.parameters(), before)),
            "mismatch": _mismatches(list(teacher.state_dict().items()), GRAD_RTOL, GRAD_ATOL)}
