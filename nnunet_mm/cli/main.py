"""``nnunet_mm``: the plugin's command line, in the style of nnU-Net's own commands.

Sub-commands:
    phantom   write seeded multi-phase liver CT phantoms in several layouts
    convert   convert a public/raw dataset layout into an nnU-Net raw dataset (``nnunet_mm convert list``)
    predict   nnU-Net prediction for cases that lack some input channels
    demo      the whole cycle on a phantom: convert, plan, train, predict, evaluate
    env       show how nnU-Net finds the plugin's trainers (nnUNet_extTrainer) and the nnU-Net paths
"""
from __future__ import annotations

import argparse
import json
import importlib
import logging
import os
import sys
from typing import Sequence


# modules of nnunet_mm.cli that add their own sub-commands: each has ``register(subparsers)``, and every parser it
# adds sets ``handler`` (``parser.set_defaults(handler=fn)``, ``fn(args) -> int``)
COMMAND_MODULES: tuple[str, ...] = ("synthesis", "synthesis_models", "weak", "atlas")


def _parse_channels(text: str) -> list[int]:
    try:
        channels = [int(c) for c in text.replace(" ", "").split(",") if c != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated channel indices like 0,2; got {text!r}") from None
    if not channels:
        raise argparse.ArgumentTypeError("expected at least one channel index")
    return channels


def _add_preprocessing_arguments(parser: argparse.ArgumentParser) -> None:
    """``-d -c -p -np`` of the plugin's post-preprocessing steps."""
    parser.add_argument("-d", required=True, help="dataset name or id")
    parser.add_argument("-c", default="3d_fullres", help="configuration [default: %(default)s]")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier [default: %(default)s]")
    parser.add_argument("-np", type=int, default=1, help="processes [default: 1]")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet_mm",
        description="nnunet_mm: multimodal segmentation (misregistered, missing or unlabeled modalities) on top of "
                    "nnU-Net v2. Training and standard prediction use nnU-Net's own commands, e.g. "
                    "'nnUNetv2_train 511 3d_fullres 0 -tr MultiModalTrainer'.")
    parser.add_argument("--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    phantom = sub.add_parser("phantom", help="write seeded multi-phase liver CT phantoms",
                             description="Arguments after 'phantom' go to nnunet_mm.phantom (see "
                                         "'nnunet_mm phantom --help').", add_help=False)
    phantom.add_argument("args", nargs=argparse.REMAINDER)

    convert = sub.add_parser("convert", help="convert a dataset into nnU-Net raw format",
                             description="'nnunet_mm convert list' lists the converters; "
                                         "'nnunet_mm convert 511 --help' shows one converter's options.")
    convert.add_argument("dataset", help="dataset id (e.g. 511), converter name, or 'list'")
    convert.add_argument("args", nargs=argparse.REMAINDER, help="arguments of that converter")

    predict = sub.add_parser(
        "predict", help="predict cases with missing channels",
        description="Like nnUNetv2_predict, for cases that lack some channels: missing channels are filled the way "
                    "the model was trained (modality dropout mode in the model's dataset.json) after nnU-Net's "
                    "normalisation. The reference channel must be present.")
    predict.add_argument("-i", required=True, help="input folder with CASE_XXXX<file_ending> files")
    predict.add_argument("-o", required=True, help="output folder")
    model = predict.add_mutually_exclusive_group(required=True)
    model.add_argument("-d", help="dataset name or id (with -tr, -p, -c: the model folder in nnUNet_results)")
    model.add_argument("-m", "--model_folder", help="model folder (instead of -d/-tr/-p/-c)")
    predict.add_argument("-tr", default="MultiModalTrainer", help="trainer name [default: %(default)s]")
    predict.add_argument("-p", default="nnUNetPlans", help="plans identifier [default: %(default)s]")
    predict.add_argument("-c", default="3d_fullres", help="configuration [default: %(default)s]")
    predict.add_argument("-f", nargs="+", default=["0"], help="folds [default: 0]; 'all' for fold_all")
    predict.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint file [default: %(default)s]")
    predict.add_argument("--available", type=_parse_channels, default=None,
                         help="channels every case provides, e.g. 0,2; default: detect per case from the files")
    predict.add_argument("-step_size", type=float, default=0.5, help="sliding-window step [default: 0.5]")
    predict.add_argument("--disable_tta", action="store_true", help="no mirroring at test time")
    predict.add_argument("--save_probabilities", action="store_true")
    predict.add_argument("-nps", type=int, default=1, help="processes for export [default: 1]")
    predict.add_argument("-device", default=None, choices=("cuda", "cpu", "mps"),
                         help="device [default: cuda if available, else cpu]")
    predict.add_argument("--disable_progress_bar", action="store_true")

    demo = sub.add_parser("demo", help="run the full cycle on a phantom dataset", add_help=False,
                          description="Arguments after 'demo' go to nnunet_mm.demo.")
    demo.add_argument("args", nargs=argparse.REMAINDER)

    plan = sub.add_parser(
        "plan", help="plan a dataset with a plugin planner (nnU-Net's -pl only searches nnU-Net itself)",
        description="Extract the fingerprint if missing, plan with a plugin planner and preprocess what the plans "
                    "need that does not exist yet. Then train with '-p <plans name>'.")
    plan.add_argument("-d", required=True, type=int, help="dataset id")
    plan.add_argument("-pl", default="CMGPlanner", choices=("CMGPlanner",), help="planner [default: %(default)s]")
    plan.add_argument("-gpu_memory_target", type=float, default=None,
                      help="GPU memory (GB) to size patch and batch for [default: the planner's, 8]")
    plan.add_argument("-c", nargs="+", default=["2d", "3d_fullres"], help="configurations to preprocess "
                      "[default: 2d 3d_fullres]")
    plan.add_argument("-np", type=int, default=2, help="processes for fingerprint and preprocessing [default: 2]")

    phases = sub.add_parser(
        "phase-labels", help="add a '<configuration>_phases' configuration with per-phase labels (e.g. MPTH)",
        description="After nnUNetv2_plan_and_preprocess: preprocess the dataset's per-phase labels (the folder named "
                    "by 'phase_labels_dir' in dataset.json) as extra segmentation channels of a new configuration "
                    "'<c>_phases'. Train it with e.g. 'nnUNetv2_train 501 3d_fullres_phases 0 -tr CMGTrainer'.")
    _add_preprocessing_arguments(phases)

    unlabeled = sub.add_parser(
        "preprocess-unlabeled", help="preprocess the unlabeled cases (imagesUnl) for semi-supervised trainers",
        description="After nnUNetv2_plan_and_preprocess: preprocess the images in the folder named by "
                    "'unlabeled_dir' in dataset.json (default imagesUnl) with the configuration's plans into "
                    "<data_identifier>_unlabeled. The labeled data are untouched.")
    _add_preprocessing_arguments(unlabeled)

    fraction = sub.add_parser(
        "label-fraction", help="new raw dataset keeping only a fraction of the labels (rest in imagesUnl)",
        description="Write a new raw dataset from a fully labeled one: FRACTION of the training cases keep their "
                    "labels (per modality when dataset.json has per_case_modality), the others move to imagesUnl "
                    "(their labels to labelsUnl_heldout, for evaluation only); splits over the labeled cases.")
    fraction.add_argument("-d", required=True, help="source dataset name or id")
    fraction.add_argument("--fraction", type=float, required=True, help="share of labeled cases, in (0, 1)")
    fraction.add_argument("--target-id", type=int, required=True, help="id of the new dataset")
    fraction.add_argument("--target-name", default=None, help="default: <source name>_labeled<percent>pct")
    fraction.add_argument("--seed", type=int, default=0, help="seed of the case draw [default: 0]")
    fraction.add_argument("--output-root", default=None, help="default: $nnUNet_raw")
    fraction.add_argument("--overwrite", action="store_true", help="replace an existing target dataset")

    maps = sub.add_parser("cmg-maps", help="save a CMG model's guidance maps and predictions of one case as PNG")
    maps.add_argument("-i", required=True, help="folder with the case's CASE_XXXX<file_ending> files")
    maps.add_argument("--case", required=True, help="case identifier (CASE)")
    maps.add_argument("-o", required=True, help="output PNG")
    maps_model = maps.add_mutually_exclusive_group(required=True)
    maps_model.add_argument("-d", help="dataset name or id (with -tr, -p, -c)")
    maps_model.add_argument("-m", "--model_folder", help="model folder (instead of -d/-tr/-p/-c)")
    maps.add_argument("-tr", default="CMGTrainer", help="trainer [default: %(default)s]")
    maps.add_argument("-p", default="nnUNetPlans", help="plans identifier [default: %(default)s]")
    maps.add_argument("-c", default="3d_fullres", help="configuration [default: %(default)s]")
    maps.add_argument("-f", default="0", help="fold [default: 0]")
    maps.add_argument("-chk", default="checkpoint_final.pth")
    maps.add_argument("--class_index", type=int, default=None, help="class to show [default: the highest label]")
    maps.add_argument("-device", default=None, choices=("cuda", "cpu", "mps"))

    sub.add_parser("env", help="show trainer discovery (nnUNet_extTrainer) and the nnU-Net paths")
    for module_name in COMMAND_MODULES:
        importlib.import_module(f"nnunet_mm.cli.{module_name}").register(sub)
    return parser


def _run_cmg_maps(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nnunet_mm.inference.missing_channels import find_case_channel_files
    from nnunet_mm.visualize.cmg_maps import save_guidance_figure

    if args.model_folder:
        model_folder = Path(args.model_folder)
    else:
        from nnunetv2.paths import nnUNet_results
        from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
        model_folder = (Path(nnUNet_results) / maybe_convert_to_dataset_name(args.d) /
                        f"{args.tr}__{args.p}__{args.c}")
    dataset_json = json.loads((model_folder / "dataset.json").read_text())
    files = find_case_channel_files(Path(args.i), dataset_json["file_ending"],
                                    len(dataset_json["channel_names"])).get(args.case)
    if not files:
        print(f"nnunet_mm cmg-maps: no files {args.case}_XXXX{dataset_json['file_ending']} in {args.i}",
              file=sys.stderr)
        return 1
    missing = [c for c in range(len(dataset_json["channel_names"])) if c not in files]
    if missing:
        print(f"nnunet_mm cmg-maps: {args.i}: case {args.case} lacks channel(s) {missing}", file=sys.stderr)
        return 1
    fold = args.f if args.f == "all" else int(args.f)
    device = args.device or ("cuda" if _cuda_available() else "cpu")
    png = save_guidance_figure(model_folder, [files[c] for c in sorted(files)], Path(args.o), fold=fold,
                               checkpoint=args.chk, device=device, class_index=args.class_index)
    print(f"wrote {png}")
    return 0


def _run_label_fraction(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nnunet_mm.data.label_fraction import make_label_fraction_dataset
    try:
        target = make_label_fraction_dataset(args.d, args.fraction, target_id=args.target_id,
                                             target_name=args.target_name, seed=args.seed,
                                             output_root=Path(args.output_root) if args.output_root else None,
                                             overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {target}; next: nnUNetv2_plan_and_preprocess -d {args.target_id} && "
          f"nnunet_mm preprocess-unlabeled -d {args.target_id} -c 3d_fullres")
    return 0


def _run_plan(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from nnunetv2.experiment_planning.plan_and_preprocess_api import (extract_fingerprint_dataset,
                                                                       plan_experiment_dataset, preprocess_dataset)
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_mm.planners.cmg_planner import CMGPlanner

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


def _cuda_available() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a dependency
        return False


def _run_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from nnunet_mm.inference import predict_with_missing_channels

    if args.model_folder is not None:
        model_folder = Path(args.model_folder)
    else:
        from nnunetv2.utilities.file_path_utilities import get_output_folder
        model_folder = Path(get_output_folder(args.d, args.tr, args.p, args.c))
    if not model_folder.is_dir():
        print(f"nnunet_mm predict: model folder {model_folder} does not exist (train first, or check -d/-tr/-p/-c).",
              file=sys.stderr)
        return 2
    folds = [f if f == "all" else int(f) for f in args.f]
    report = predict_with_missing_channels(
        Path(args.i), Path(args.o), model_folder, folds=folds, checkpoint_name=args.chk, available=args.available,
        device=torch.device(args.device or ("cuda" if _cuda_available() else "cpu")), tile_step_size=args.step_size, use_mirroring=not args.disable_tta,
        save_probabilities=args.save_probabilities, num_processes_export=args.nps,
        allow_tqdm=not args.disable_progress_bar)
    filled = {case: r["filled"] for case, r in report.items() if r["filled"]}
    print(f"predicted {len(report)} case(s) into {args.o}; filled missing channels in {len(filled)} case(s)"
          + (f": {filled}" if filled else ""))
    return 0


def _run_env() -> int:
    import _nnunet_mm_ext

    folder = _nnunet_mm_ext.trainer_shim_folder()
    value = os.environ.get("nnUNet_extTrainer", "")
    listed = folder is not None and any(os.path.normpath(p) == os.path.normpath(folder)
                                        for p in value.split(os.pathsep) if p)
    print(f"trainer shim folder : {folder}")
    print(f"nnUNet_extTrainer   : {value or '(unset)'}")
    print(f"hook active         : {'yes' if listed else 'NO'}")
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        print(f"{name:<20}: {os.environ.get(name, '(unset)')}")
    if not listed:
        print("\nnnU-Net will not find the nnunet_mm trainers in this environment (the start-up hook did not run, "
              "e.g. an install with --target or python -S). Set it yourself:\n"
              f"  export nnUNet_extTrainer={value + os.pathsep if value else ''}{folder}")
        return 1
    return 0


def _run_convert(dataset: str, argv: list[str]) -> int:
    from nnunet_mm.dataset_conversion import available_converters, converter_module_name
    if dataset == "list":
        for dataset_id, name in available_converters().items():
            print(f"{dataset_id}  {name}")
        return 0
    try:
        name = converter_module_name(dataset)
    except KeyError as error:
        print(f"nnunet_mm convert: {error.args[0]}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"nnunet_mm.dataset_conversion.{name}")
    program = sys.argv[0]
    sys.argv[0] = f"nnunet_mm convert {dataset}"  # argparse names the program after sys.argv[0] in --help/errors
    try:
        return module.main(argv)
    finally:
        sys.argv[0] = program


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in argv[:1]
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")
    if verbose:
        argv = argv[1:]
    # sub-commands that own their arguments: hand everything after the name to their parser unchanged
    if argv and argv[0] == "phantom":
        from nnunet_mm import phantom
        return phantom.main(argv[1:])
    if argv and argv[0] == "demo":
        from nnunet_mm import demo
        return demo.main(argv[1:])
    if len(argv) >= 2 and argv[0] == "convert" and not argv[1].startswith("-"):
        return _run_convert(argv[1], argv[2:])
    args = _build_parser().parse_args(argv)
    if getattr(args, "handler", None) is not None:
        return args.handler(args)
    if args.command == "predict":
        return _run_predict(args)
    if args.command == "env":
        return _run_env()
    if args.command == "plan":
        return _run_plan(args)
    if args.command == "cmg-maps":
        return _run_cmg_maps(args)
    if args.command == "preprocess-unlabeled":
        from nnunet_mm.preprocessing.unlabeled import preprocess_unlabeled
        folder = preprocess_unlabeled(args.d, args.c, args.p, args.np)
        print(f"preprocessed unlabeled cases into {folder}")
        return 0
    if args.command == "label-fraction":
        return _run_label_fraction(args)
    if args.command == "phase-labels":
        from nnunet_mm.preprocessing.phase_labels import add_phase_label_configuration
        name = add_phase_label_configuration(args.d, args.c, args.p, args.np)
        print(f"added configuration {name}; train with: nnUNetv2_train {args.d} {name} 0 -tr CMGTrainer")
        return 0
    raise AssertionError(f"unhandled command {args.command}")  # argparse restricts the choices


if __name__ == "__main__":
    sys.exit(main())
