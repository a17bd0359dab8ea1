"""Is every trainer ready for ``torch.compile``? Graph breaks and recompiles of each trainer's network, per trainer.

For ``nnUNetTrainer`` and every nnunet_mm trainer, on the plans and data of ``bench/bench_trainers.py`` (the fixed
``3d_bench`` configuration; prepared by it, or here without ``--skip-prepare``), with every branch of the step on
(misalignment in every sample, modality dropout in half, CMC's consistency terms, CMG's predicted prototypes in half
the samples, synthetic tumours in every sample with liver):

* ``training_forward``: graph breaks of the network call a real ``train_step`` makes (recorded with
  ``record_network_call``, then ``graph_breaks``: dynamo's explain, under the step's autocast);
* ``inference_forward``: graph breaks of the prediction forward (eval, deep supervision off, one patch, no grad);
* ``frames_per_step``: frames compiled so far after each of ``--steps`` training steps, the network and the Dice
  loss compiled the way nnU-Net's ``initialize`` does (``nnunet_compile(CompileCounter(backend))``), on batches
  that vary: real batches from the trainer's loader (nnU-Net's sampling and augmentation; single-threaded off CUDA,
  where a few tiny batches do not repay worker start-up), one with an empty mask (all background) and one all foreground (every
  voxel the top label). ``recompiles``: frames compiled after the first step, i.e. what
  changed batches made dynamo compile again (0 is what a compiled step needs);
* ``precision`` (:func:`gradient_agreement`): cosine of the gradient under the step's autocast (float16 on CUDA,
  bfloat16 on the CPU) with the float32 gradient, on the uncompiled network (``--no-precision`` skips it).

Backend: ``inductor`` on CUDA (what nnU-Net users get), ``eager`` elsewhere (dynamo capture only, fast); ``--backend``
overrides. A trainer that fails or runs past ``--trainer-timeout`` / ``--deadline-s`` is recorded with its error and
the others go on. Output: ``<output>/bench_compile.json``, rewritten after every trainer.

    python bench/bench_compile.py --output bench_out/compile --workdir bench_out/work --skip-prepare
    python bench/bench_compile.py --output /tmp/compile --device cpu --patch 16 32 32 --case-shape 16 32 32 \\
        --num-cases 4 --quick-fingerprint                               # prepares its own tiny data
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import bench_trainers as bt

STEP_KINDS = ("real", "empty mask", "real", "all foreground", "real", "real")


@contextlib.contextmanager
def _single_threaded_loading(enabled: bool = True):
    """nnU-Net's single-threaded augmenter for the loaders built inside (``nnUNet_n_proc_DA=0``; nnU-Net reads the
    variable when it builds a loader): on the CPU's tiny patches a few batches do not repay worker start-up; on a GPU
    machine's large patches the workers are faster (``enabled=False`` keeps the environment's setting)."""
    if not enabled:
        yield
        return
    previous = os.environ.get("nnUNet_n_proc_DA")
    os.environ["nnUNet_n_proc_DA"] = "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("nnUNet_n_proc_DA", None)
        else:
            os.environ["nnUNet_n_proc_DA"] = previous


def _batches(trainer, kinds: list[str]) -> list[dict]:
    """One batch per step kind from the trainer's own training loader (nnU-Net's sampling and augmentation)."""
    from nnunet_mm.training.compile_readiness import batch_with_target

    with _single_threaded_loading(trainer.device.type != "cuda"):
        loader, validation_loader = trainer.get_dataloaders()
    try:
        top_label = max(int(v) for v in trainer.label_manager.all_labels)
        values = {"real": None, "empty mask": 0, "all foreground": top_label}
        return [batch_with_target(next(loader), values[kind]) for kind in kinds]
    finally:
        for owned in (loader, validation_loader):
            if hasattr(owned, "_finish"):
                owned._finish()


def _autocast(trainer):
    """The step's mixed-precision context: the plugin trainers' own, nnU-Net's (float16 on CUDA) for the stock one."""
    import torch
    from nnunetv2.utilities.helpers import dummy_context

    if hasattr(trainer, "autocast_context"):
        return trainer.autocast_context()
    return torch.autocast(trainer.device.type, enabled=True) if trainer.device.type == "cuda" else dummy_context()


def compile_report(name: str, *, device_name: str, backend: str, steps: int, record: dict | None = None) -> dict:
    """Graph breaks of the training and inference forward and compiled frames per step for one trainer (fills
    ``record`` as it goes)."""
    import torch

    from nnunet_mm.training.compile_readiness import (CompileCounter, graph_breaks, nnunet_compile,
                                                      record_network_call, unwrap)

    record = {} if record is None else record
    device = torch.device(device_name)
    torch._dynamo.reset()
    counter = CompileCounter(backend)
    trainer = bt.build_trainer(name, device, all_branches=True)
    unlabeled = None
    try:
        with nnunet_compile(counter):  # nnU-Net's own initialize compiles the network and the Dice loss
            trainer.initialize()
        if name == "CMCTrainer":  # on_train_start's unlabeled loader, without the rest of on_train_start
            folder = trainer.unlabeled_cases_folder()
            with _single_threaded_loading(device.type != "cuda"):
                unlabeled = trainer.dataloader_unlabeled = None if folder is None else \
                    trainer._make_unlabeled_loader(folder)
        kinds = [STEP_KINDS[i % len(STEP_KINDS)] for i in range(steps)]
        batches = _batches(trainer, kinds)
        record["step_kinds"] = kinds
        frames: list[int] = []
        start = time.perf_counter()
        with record_network_call(trainer.network) as calls:
            trainer.train_step(batches[0])
        frames.append(counter.frames)
        record["first_step_s"] = round(time.perf_counter() - start, 2)
        for batch in batches[1:]:
            trainer.train_step(batch)
            frames.append(counter.frames)
        record.update(frames_per_step=frames, frames=counter.frames, recompiles=counter.frames - frames[0],
                      compiled_ops=counter.ops, steps_s=round(time.perf_counter() - start, 2),
                      network_calls_per_step=len(calls))

        network = unwrap(trainer.network)
        network.train()
        call = calls[0]
        with _autocast(trainer):
            record["training_forward"] = graph_breaks(network, *call.args, **call.kwargs).as_dict()
        del calls, call
        network.eval()
        trainer.set_deep_supervision_enabled(False)
        patch = [int(s) for s in trainer.configuration_manager.patch_size]
        x = torch.randn(1, batches[0]["data"].shape[1], *patch, device=device)
        with torch.no_grad(), _autocast(trainer):
            record["inference_forward"] = graph_breaks(network, x).as_dict()
        return record
    finally:
        if unlabeled is not None and hasattr(unlabeled, "_finish"):
            unlabeled._finish()
        torch._dynamo.reset()


def gradient_agreement(name: str, *, device_name: str, record: dict | None = None) -> dict:
    """How far the step's mixed precision moves the gradient: one batch, the same weights and augmentation draw,
    the gradient in float32 and under the step's autocast (float16 on CUDA, as nnU-Net trains; bfloat16 on the
    CPU), compared by cosine; the loss ratio and whether everything stayed finite. The network is not compiled here
    (the compiled graphs are the compile report's). nnU-Net's own trainer has no ``autocast_context`` and is skipped.

    CMC's unlabeled batch is fixed and CMG takes teacher-forced prototypes only, so both precisions see the same
    inputs (predicted prototypes come from an argmax, which precision may flip).
    """
    import contextlib
    import itertools

    import torch

    record = {} if record is None else record
    device = torch.device(device_name)
    trainer = bt.build_trainer(name, device, all_branches=True)
    if not hasattr(trainer, "autocast_context"):
        record["skipped"] = "nnU-Net's own trainer (no autocast_context)"
        return record
    previous = os.environ.get("nnUNet_compile")
    os.environ["nnUNet_compile"] = "f"
    try:
        trainer.initialize()
    finally:
        os.environ.pop("nnUNet_compile") if previous is None else os.environ.__setitem__("nnUNet_compile", previous)
    if name == "CMCTrainer":
        folder = trainer.unlabeled_cases_folder()
        if folder is not None:
            with _single_threaded_loading(device.type != "cuda"):
                loader = trainer._make_unlabeled_loader(folder)
            trainer.dataloader_unlabeled = itertools.repeat(next(loader))
            if hasattr(loader, "_finish"):
                loader._finish()
    if name == "CMGTrainer":
        trainer.predicted_prototypes_start = trainer.predicted_prototypes_end = 0.0
    batch = _batches(trainer, ["real"])[0]
    start = {key: value.detach().clone() for key, value in trainer.network.state_dict().items()}
    trainer.optimizer.step = lambda *args, **kwargs: None  # the same weights for both precisions
    low = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, init_scale=1.0, growth_interval=10**6)  # an overflow shows as inf
    scaler.step = lambda optimizer, *args, **kwargs: None

    def step(dtype):
        trainer.network.load_state_dict(start)
        trainer.augmentation_generator.manual_seed(7)
        trainer.autocast_context = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None \
            else contextlib.nullcontext
        trainer.grad_scaler = scaler if dtype is torch.float16 else None
        loss = float(trainer.train_step(batch)["loss"])
        gradient = torch.cat([p.grad.flatten().float() if p.grad is not None else torch.zeros(p.numel(), device=device)
                              for p in trainer.network.parameters()])
        return loss, gradient

    loss32, gradient32 = step(None)
    loss, gradient = step(low)
    record.update(autocast_dtype=str(low).replace("torch.", ""), loss_float32=round(loss32, 5),
                  loss_autocast=round(loss, 5), finite=bool(torch.isfinite(gradient).all()),
                  gradient_cosine=round(float(torch.nn.functional.cosine_similarity(gradient, gradient32, dim=0)), 4))
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="folder of bench_compile.json")
    parser.add_argument("--workdir", default=None, help="nnU-Net folders [default: <output>/work]")
    parser.add_argument("--trainers", nargs="+", default=list(bt.ALL_TRAINERS))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backend", default=None, help="dynamo backend [default: inductor on CUDA, eager elsewhere]")
    parser.add_argument("--no-precision", action="store_true",
                        help="skip the gradient agreement of float32 and the step's autocast")
    parser.add_argument("--steps", type=int, default=len(STEP_KINDS), help="training steps [default: %(default)s]")
    parser.add_argument("--skip-prepare", action="store_true", help="reuse bench_trainers.py's prepared --workdir")
    parser.add_argument("--patch", type=int, nargs=3, default=[64, 160, 160])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--case-shape", type=int, nargs=3, default=[96, 224, 224])
    parser.add_argument("--num-cases", type=int, default=8)
    parser.add_argument("--num-processes", type=int, default=4)
    parser.add_argument("--num-phases", type=int, default=4, choices=(2, 3, 4))
    parser.add_argument("--base-features", type=int, default=None)
    parser.add_argument("--quick-fingerprint", action="store_true")
    parser.add_argument("--trainer-timeout", type=float, default=None, help="seconds per trainer (none: no limit)")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="seconds for all trainers: a trainer is stopped at the deadline, later ones skipped")
    args = parser.parse_args(argv)

    started = bt.PROCESS_START
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    workdir = Path(args.workdir).resolve() if args.workdir else output / "work"
    bt._set_paths(workdir)
    os.environ["nnUNet_results"] = str(output / "results")  # its own: the speed part may run beside it
    if not args.skip_prepare:
        bt.prepare_dataset(workdir, num_cases=args.num_cases, case_shape=args.case_shape, patch=args.patch,
                           batch_size=args.batch_size, num_processes=args.num_processes, quick=args.quick_fingerprint,
                           num_phases=args.num_phases, base_features=args.base_features)
    import torch

    backend = args.backend or ("inductor" if args.device.startswith("cuda") else "eager")
    report = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "backend": backend, "steps": args.steps, "trainers": args.trainers,
              "results": []}
    json_path = output / "bench_compile.json"
    for name in args.trainers:
        record = {"trainer": name, "status": "running"}
        report["results"].append(record)
        left = None if args.deadline_s is None else args.deadline_s - (time.monotonic() - started)
        if left is not None and left < 5:
            record.update(status="skipped", error=f"part deadline of {args.deadline_s:.0f} s reached")
            continue
        limits = [x for x in (args.trainer_timeout, left) if x is not None]
        bt.write_json(json_path, report)
        print(f"compile report for {name} ({backend}) ...", flush=True)
        start = time.perf_counter()
        try:
            with bt.time_limit(min(limits) if limits else None):
                compile_report(name, device_name=args.device, backend=backend, steps=args.steps, record=record)
                if not args.no_precision:
                    record["precision"] = gradient_agreement(name, device_name=args.device)
            record["status"] = "ok"
        except bt.TrainerTimeout as error:
            record.update(status="timed out", error=str(error))
        except Exception as error:  # noqa: BLE001 - every trainer's failure is recorded, the others go on
            record.update(status="failed", error=bt.error_text(error))
        record["seconds"] = round(time.perf_counter() - start, 1)
        bt._release(args.device)
        bt.write_json(json_path, report)
        print(json.dumps({k: v for k, v in record.items() if k != "error"}), flush=True)
        if record.get("error"):
            print(f"{name} {record['status']}: {record['error']}", flush=True)
    report["seconds"] = round(time.monotonic() - started, 1)
    bt.write_json(json_path, report)
    print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    from nnunet_mm.io.console import tolerate_unencodable_output

    tolerate_unencodable_output()
    sys.exit(main())
