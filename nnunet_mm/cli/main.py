"""``nnunet_mm``: the plugin's command line, in the style of nnU-Net's own commands.

Sub-commands:
    phantom   write seeded multi-phase liver CT phantoms in several layouts
    convert   convert a public/raw dataset layout into an nnU-Net raw dataset (``nnunet_mm convert list``)
    predict   nnU-Net prediction for cases that lack some input channels
    demo      the whole cycle on a phantom: convert, plan, train, predict, evaluate
    env       nnU-Net paths, trainer discovery (nnUNet_extTrainer), package/torch/CUDA versions, trainers found
    compare   paired comparison of trained models (arms × seeds): Dice, lesion detection, bootstrap CI, Wilcoxon

Each method package adds its own commands through a ``register(subparsers)`` function in its ``cli`` module
(:data:`COMMAND_MODULES`): CMG ``plan``, ``phase-labels``, ``cmg-maps``; CMC ``preprocess-unlabeled``,
``label-fraction``; synthesis ``synth-*``, ``make-normal``, ``keep-tumours-in-liver``; weak ``weak-*``; atlas ``mas*``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

import nnunet_mm
from nnunet_mm.cli.common import (add_device_argument, add_model_arguments, check_checkpoints, model_folder,
                                  parse_fold, run_handler, set_handler, torch_device)
from nnunet_mm.cli.env import run_env
from nnunet_mm.io.console import tolerate_unencodable_output


# modules of the method packages that add their own sub-commands: each has ``register(subparsers)``, and every parser it
# adds gets its handler from nnunet_mm.cli.common.set_handler
COMMAND_MODULES: tuple[str, ...] = ("nnunet_mm.cmg.cli", "nnunet_mm.cmc.cli", "nnunet_mm.synthesis.cli",
                                    "nnunet_mm.synthesis.cli_models", "nnunet_mm.weak.cli", "nnunet_mm.atlas.cli",
                                    "nnunet_mm.evaluation.cli")


def _parse_channels(text: str) -> list[int]:
    try:
        channels = [int(c) for c in text.replace(" ", "").split(",") if c != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated channel indices like 0,2; got {text!r}") from None
    if not channels:
        raise argparse.ArgumentTypeError("expected at least one channel index")
    return channels


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=nnunet_mm.__name__,
        description="nnunet_mm: multimodal segmentation (misregistered, missing or unlabeled modalities) on top of "
                    "nnU-Net v2. Training and standard prediction use nnU-Net's own commands, e.g. "
                    "'nnUNetv2_train 511 3d_fullres 0 -tr MultiModalTrainer'.")
    parser.add_argument("--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    phantom = sub.add_parser("phantom", help="write seeded multi-phase liver CT phantoms",
                             description="Arguments after 'phantom' go to nnunet_mm.phantom (see "
                                         "'nnunet_mm phantom --help').", add_help=False)
    phantom.add_argument("args", nargs=argparse.REMAINDER, help="arguments of nnunet_mm.phantom")

    convert = sub.add_parser("convert", help="convert a dataset into nnU-Net raw format",
                             description="'nnunet_mm convert list' lists the converters; "
                                         "'nnunet_mm convert 511 --help' shows one converter's options.")
    convert.add_argument("dataset", help="dataset id (e.g. 511), converter name, or 'list'")
    convert.add_argument("args", nargs=argparse.REMAINDER, help="arguments of that converter")

    predict = sub.add_parser(
        "predict", help="predict cases with missing channels, or new cases of an atlas-prior model",
        description="Like nnUNetv2_predict, for cases that lack some channels: missing channels are filled the way "
                    "the model was trained (modality dropout mode in the model's dataset.json) after nnU-Net's "
                    "normalisation. The reference channel must be present. A model trained with atlas prior "
                    "channels (-tr MASPriorTrainer on a dataset from 'nnunet_mm mas') is recognised: cases without "
                    "prior files get them from the model's atlases with the registration and fusion recorded in "
                    "its dataset.json (written to OUTPUT/atlas_priors, with a QA PNG per case, and reused by the "
                    "next run), or zero priors with --priors zeros (what prior dropout gave in training). Options "
                    "that mirror nnUNetv2_predict take nnU-Net's spelling (--disable_tta) or the dashed one "
                    "(--disable-tta).")
    predict.add_argument("-i", required=True, help="input folder with CASE_XXXX<file_ending> files")
    predict.add_argument("-o", required=True, help="output folder")
    add_model_arguments(predict, trainer="MultiModalTrainer", several_folds=True)
    predict.add_argument("--available", type=_parse_channels, default=None,
                         help="channels every case provides, e.g. 0,2; default: detect per case from the files")
    predict.add_argument("-step_size", "--step-size", dest="step_size", type=float, default=0.5,
                         help="sliding-window step, as a fraction of the patch size [default: 0.5]")
    predict.add_argument("--disable_tta", "--disable-tta", dest="disable_tta", action="store_true",
                         help="no mirroring at test time")
    predict.add_argument("--save_probabilities", "--save-probabilities", dest="save_probabilities",
                         action="store_true", help="also write the class probabilities (.npz and .pkl per case)")
    predict.add_argument("-nps", type=int, default=1, help="processes for export [default: 1]")
    add_device_argument(predict)
    predict.add_argument("--disable_progress_bar", "--disable-progress-bar", dest="disable_progress_bar",
                         action="store_true", help="no progress bar")
    predict.add_argument("--replace-non-finite", action="store_true",
                         help="predict input files holding NaN/inf voxels from copies with those voxels set to the "
                              "image's lowest finite value (recorded in missing_channels.json) instead of refusing "
                              "them")
    predict.add_argument("--priors", choices=("atlas", "zeros"), default="atlas",
                         help="atlas-prior models: register the model's atlases to cases without prior files "
                              "(atlas), or give them zero priors as prior dropout did in training (zeros) "
                              "[default: atlas]")
    predict.add_argument("--atlas", default=None,
                         help="atlas-prior models: the atlas dataset folder, when it moved since 'nnunet_mm mas' "
                              "[default: the folder the model's dataset.json records]")
    set_handler(predict, _run_predict)

    demo = sub.add_parser("demo", help="run the full cycle on a phantom dataset", add_help=False,
                          description="Arguments after 'demo' go to nnunet_mm.demo.")
    demo.add_argument("args", nargs=argparse.REMAINDER, help="arguments of nnunet_mm.demo")

    env = sub.add_parser(
        "env", help="show nnU-Net paths, trainer discovery, package and CUDA versions, and the trainers nnU-Net finds",
        description="Print the nnU-Net path variables, whether the start-up hook put the plugin's trainer folder "
                    "into nnUNet_extTrainer, the versions of nnunet_mm, nnU-Net, torch (CUDA build, GPUs), "
                    "dynamic_network_architectures, batchgeneratorsv2, SimpleITK and MONAI, and every plugin "
                    "trainer as nnU-Net's own lookup (nnUNetv2_train -tr) finds it. Exit status 1 when nnU-Net "
                    "would not find one.")
    set_handler(env, run_env)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def _run_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    if not Path(args.i).is_dir():
        raise FileNotFoundError(f"-i {args.i}: input folder not found.")
    folder = model_folder(args)
    folds = [parse_fold(f) for f in args.f]
    check_checkpoints(folder, folds, args.chk)
    device = torch_device(args.device)
    from nnunet_mm.atlas.predict import atlas_prior_channels
    from nnunet_mm.inference import predict_with_missing_channels

    derived = atlas_prior_channels(folder, mode=args.priors, atlas_dataset=Path(args.atlas) if args.atlas else None,
                                   device=str(device), show_progress=not args.disable_progress_bar)
    report = predict_with_missing_channels(
        Path(args.i), Path(args.o), folder, folds=folds, checkpoint_name=args.chk,
        available=args.available, device=device, tile_step_size=args.step_size,
        use_mirroring=not args.disable_tta,
        save_probabilities=args.save_probabilities, num_processes_export=args.nps,
        allow_tqdm=not args.disable_progress_bar, replace_non_finite=args.replace_non_finite, derived=derived)
    for case, record in report.items():
        for channel, replaced in record.get("non_finite_replaced", {}).items():
            print(f"{case}: channel {channel}: {replaced['voxels']} NaN/inf voxel(s) of {replaced['file']} replaced "
                  f"by {replaced['value']:g}")
    prior_sources = {case: r["derived"] for case, r in report.items() if "derived" in r}
    if prior_sources:
        counts = {source: sum(s == source for s in prior_sources.values())
                  for source in sorted(set(prior_sources.values()))}
        print(f"atlas priors: {', '.join(f'{n} {source}' for source, n in counts.items())} (files and QA in "
              f"{Path(args.o) / 'atlas_priors'})")
    filled = {case: r["filled"] for case, r in report.items() if r["filled"]}
    print(f"predicted {len(report)} case(s) into {args.o}; filled missing channels in {len(filled)} case(s)"
          + (f": {filled}" if filled else ""))
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
    tolerate_unencodable_output()
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
    args = build_parser().parse_args(argv)
    if getattr(args, "handler", None) is not None:
        return run_handler(args)
    raise AssertionError(f"unhandled command {args.command}")  # argparse restricts the choices


if __name__ == "__main__":
    sys.exit(main())
