"""The CMG commands of ``nnunet_mm``: ``plan`` (CMGPlanner), ``phase-labels``, ``cmg-maps``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nnunet_mm.cli.common import (add_deprecated_alias, add_device_argument, add_model_arguments,
                                  add_preprocessing_arguments, check_checkpoints, model_folder, parse_fold,
                                  set_handler, torch_device)


def register(subparsers) -> None:
    """Add the CMG sub-commands to ``nnunet_mm``'s parser."""
    plan = subparsers.add_parser(
        "plan", help="plan a dataset with a plugin planner (nnU-Net's -pl only searches nnU-Net itself)",
        description="Extract the fingerprint if missing, plan with a plugin planner and preprocess what the plans "
                    "need that does not exist yet. Then train with '-p <plans name>'.")
    plan.add_argument("-d", required=True, type=int, help="dataset id")
    plan.add_argument("-pl", default="CMGPlanner", choices=("CMGPlanner",), help="planner [default: %(default)s]")
    plan.add_argument("-gpu_memory_target", "--gpu-memory-target", dest="gpu_memory_target", type=float,
                      default=None, help="GPU memory (GB) to size patch and batch for [default: the planner's, 8]")
    plan.add_argument("-c", nargs="+", default=["2d", "3d_fullres"], help="configurations to preprocess "
                      "[default: 2d 3d_fullres]")
    plan.add_argument("-np", type=int, default=2, help="processes for fingerprint and preprocessing [default: 2]")
    set_handler(plan, _run_plan)

    phases = subparsers.add_parser(
        "phase-labels", help="add a '<configuration>_phases' configuration with per-phase labels (e.g. MPTH)",
        description="After nnUNetv2_plan_and_preprocess: preprocess the dataset's per-phase labels (the folder named "
                    "by 'phase_labels_dir' in dataset.json) as extra segmentation channels of a new configuration "
                    "'<c>_phases'. Train it with e.g. 'nnUNetv2_train 501 3d_fullres_phases 0 -tr CMGTrainer'.")
    add_preprocessing_arguments(phases)
    set_handler(phases, _run_phase_labels)

    maps = subparsers.add_parser(
        "cmg-maps", help="save a CMG model's guidance maps and predictions of one case as PNG",
        description="Predict one case with a trained CMGTrainer model and save a PNG with, per phase, the image, "
                    "the cross-modal guidance map of every guidance level and the prediction. The model folder, "
                    "its trainer, the checkpoint and the case's files are checked before the model is loaded.")
    maps.add_argument("-i", required=True, help="folder with the case's CASE_XXXX<file_ending> files")
    maps.add_argument("--case", required=True, help="case identifier (CASE)")
    maps.add_argument("-o", required=True, help="output PNG")
    add_model_arguments(maps, trainer="CMGTrainer", several_folds=False)
    maps.add_argument("--class-index", type=int, default=None,
                      help="label value whose guidance is shown [default: the highest label]")
    add_deprecated_alias(maps, "--class_index", "--class-index")
    add_device_argument(maps)
    set_handler(maps, _run_cmg_maps)


def _run_plan(args: argparse.Namespace) -> int:
    import os

    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprint_dataset,
                                                                       plan_experiment_dataset, preprocess_dataset)
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_mm.cmg.planner import CMGPlanner

    dataset_name = maybe_convert_to_dataset_name(args.d)
    folder = Path(nnUNet_preprocessed) / dataset_name
    if not (folder / "dataset_fingerprint.json").is_file():
        extract_fingerprint_dataset(args.d, num_processes=args.np, check_dataset_integrity=True)
    _, plans_name = plan_experiment_dataset(args.d, {"CMGPlanner": CMGPlanner}[args.pl],
                                            gpu_memory_target_in_gb=args.gpu_memory_target)
    plans = PlansManager(str(folder / f"{plans_name}.json"))
    missing = [c for c in args.c if c in plans.available_configurations
               and not (folder / plans.get_configuration(c).data_identifier).is_dir()]
    if missing:
        preprocess_dataset(args.d, plans_name, configurations=tuple(missing),
                           num_processes=tuple([args.np] * len(missing)))
    for configuration in args.c:
        if configuration in plans.available_configurations:
            cm = plans.get_configuration(configuration)
            print(f"{configuration}: patch {cm.patch_size}, batch {cm.batch_size}, features "
                  f"{cm.network_arch_init_kwargs['features_per_stage']}")
    print(f"wrote {folder / (plans_name + '.json')}; train with: nnUNetv2_train {args.d} 3d_fullres 0 "
          f"-tr CMGTrainer -p {plans_name}{os.linesep}", end="")
    return 0


def _run_phase_labels(args: argparse.Namespace) -> int:
    from nnunet_mm.cmg.phase_labels import add_phase_label_configuration

    name = add_phase_label_configuration(args.d, args.c, args.p, args.np)
    print(f"added configuration {name}; train with: nnUNetv2_train {args.d} {name} 0 -tr CMGTrainer")
    return 0


def _check_cmg_model(folder: Path) -> None:
    """The model folder ``<Trainer>__<plans>__<configuration>`` was trained with CMGTrainer or a subclass (a folder
    renamed otherwise is checked after loading, by the network's class)."""
    from nnunet_mm.cli.env import nnunet_trainer_class
    from nnunet_mm.cmg.trainer import CMGTrainer

    trainer_name, separator, _ = folder.name.partition("__")
    if not separator:
        return
    try:
        trainer = nnunet_trainer_class(trainer_name)
    except ValueError as error:
        raise ValueError(f"{folder}: {error}") from None
    if not issubclass(trainer, CMGTrainer):
        raise ValueError(f"{folder}: a {trainer_name} model, not a CMGTrainer one; guidance maps exist only for "
                         f"CMGTrainer models (pass -tr CMGTrainer, or -m with a CMGTrainer__... folder).")


def _case_files(folder: Path, dataset_json: dict, args: argparse.Namespace) -> list[Path]:
    """The files of ``--case`` in ``-i``, one per channel of the model."""
    from nnunet_mm.io.raw_dataset import available_channel_files

    num_channels = len(dataset_json["channel_names"])
    files = available_channel_files(Path(args.i), dataset_json["file_ending"], num_channels,
                                    source=str(folder / "dataset.json")).get(args.case)
    if not files:
        raise FileNotFoundError(f"-i {args.i}: no files {args.case}_XXXX{dataset_json['file_ending']} of case "
                                f"{args.case!r}.")
    missing = [c for c in range(num_channels) if c not in files]
    if missing:
        raise ValueError(f"{args.i}: case {args.case} lacks channel(s) {missing} of the model's {num_channels}.")
    return [files[c] for c in sorted(files)]


def _run_cmg_maps(args: argparse.Namespace) -> int:
    folder = model_folder(args)
    dataset_json_file = folder / "dataset.json"
    if not dataset_json_file.is_file():
        raise FileNotFoundError(f"{dataset_json_file}: not found; is {folder} an nnU-Net model folder?")
    dataset_json = json.loads(dataset_json_file.read_text(encoding="utf-8"))
    foreground = sorted(v for name, v in dataset_json["labels"].items()
                        if isinstance(v, int) and v != 0 and name != "ignore")
    if args.class_index is not None and args.class_index not in foreground:
        raise ValueError(f"--class-index {args.class_index}: not a foreground label of {dataset_json_file}; pass "
                         f"one of {foreground}.")
    fold = parse_fold(args.f)
    check_checkpoints(folder, [fold], args.chk)
    files = _case_files(folder, dataset_json, args)
    _check_cmg_model(folder)
    device = torch_device(args.device)
    from nnunet_mm.cmg.guidance_maps import save_guidance_figure

    png = save_guidance_figure(folder, files, Path(args.o), fold=fold, checkpoint=args.chk, device=device,
                               class_index=args.class_index)
    print(f"wrote {png}")
    return 0
