"""``nnunet_mm mas`` / ``mas-train`` / ``mas-distill``: multi-atlas priors across modalities (paper 004)."""
from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_mm.cli.common import (add_deprecated_alias, add_device_argument, add_target_dataset_arguments,
                                  dataset_name, parse_fold, set_handler, torch_device)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the multi-atlas sub-commands."""
    mas = subparsers.add_parser(
        "mas", help="register atlases of another modality, fuse their labels, write prior channels",
        description="For every case of the target dataset (imagesTr and imagesTs), register K atlases of the atlas "
                    "dataset, warp and fuse their labels and write a new raw dataset: the target's files plus one "
                    "prior probability channel (channel name noNorm) per class the atlases label (every foreground "
                    "class that every atlas labels, lesions excepted; --prior-classes to choose). The dataset.json "
                    "records how the priors were made. Train it with 'nnUNetv2_train ID CONFIG FOLD -tr "
                    "MASPriorTrainer'; predict new cases (image channels only, nnU-Net naming) with 'nnunet_mm "
                    "predict -i IN -o OUT -d ID -c CONFIG -tr MASPriorTrainer -f FOLD', which makes their priors "
                    "the same way.")
    mas.add_argument("-d", required=True, help="target dataset (id, name or folder)")
    add_deprecated_alias(mas, "-t", "-d")
    add_deprecated_alias(mas, "--target", "-d")
    mas.add_argument("-a", "--atlas", required=True, help="labelled atlas dataset (id, name or folder)")
    add_target_dataset_arguments(mas, default_name="<target name>_MASPrior")
    add_deprecated_alias(mas, "-o", "--target-id")
    add_deprecated_alias(mas, "--output-id", "--target-id")
    add_deprecated_alias(mas, "--output-name", "--target-name")
    mas.add_argument("-k", "--num-atlases", type=int, default=None,
                     help="atlases registered to each target [default: 5, or every atlas when there are fewer]; "
                          "more than the atlas dataset has is refused")
    mas.add_argument("--prior-classes", default=None,
                     help="comma-separated class names that get a prior channel [default: every foreground class "
                          "that every atlas labels, except lesions (tumor, lesion, ...)]")
    mas.add_argument("--fusion", default="majority", choices=("majority", "staple", "local", "simnet"),
                     help="label fusion [default: majority]")
    mas.add_argument("--registration", default="simpleitk", choices=("simpleitk", "learned"),
                     help="registration backend [default: simpleitk]")
    mas.add_argument("-m", "--model", default=None,
                     help="model folder written by 'nnunet_mm mas-train' (for --registration learned or "
                          "--fusion simnet)")
    mas.add_argument("--stages", default="rigid,affine,bspline", help="SimpleITK stages [default: %(default)s]")
    mas.add_argument("--iterations", type=int, default=100, help="rigid/affine iterations per level [default: 100]")
    mas.add_argument("--bspline-iterations", type=int, default=50,
                     help="B-spline iterations per level [default: 50]")
    mas.add_argument("--bspline-grid-mm", type=float, default=30.0,
                     help="B-spline control-point spacing in mm [default: 30]")
    mas.add_argument("-np", type=int, default=0, help="SimpleITK registration threads [default: 0, all cores]")
    add_deprecated_alias(mas, "--threads", "-np")
    mas.add_argument("--target-channel", type=int, default=None,
                     help="channel of the target registered to [default: the reference channel]")
    mas.add_argument("--atlas-channel", type=int, default=0,
                     help="channel of the atlas registered [default: 0]")
    mas.add_argument("--cache", default=None, help="cache of warped atlases [default: <output-root>/"
                                                   ".nnunet_mm_mas_cache]")
    mas.add_argument("--overwrite", action="store_true", help="replace an existing output dataset")
    add_device_argument(mas, what="the learned networks (--registration learned, --fusion simnet)")
    set_handler(mas, _run_mas, also_reports=(RuntimeError,))

    train = subparsers.add_parser(
        "mas-train", help="train the learned registration (BiRegNet) and fusion (SimNet) networks",
        description="Train BiRegNet (bi-directional deformations, attention-gated decoder, multi-scale label Dice "
                    "both ways + image round-trip term) on (atlas, labelled target) pairs, then SimNet on pairs "
                    "warped by it. Use the folder with 'nnunet_mm mas --registration learned --fusion simnet "
                    "-m DIR'.")
    train.add_argument("-d", required=True, help="target dataset with labelled training cases (id, name or folder)")
    add_deprecated_alias(train, "-t", "-d")
    add_deprecated_alias(train, "--target", "-d")
    train.add_argument("-a", "--atlas", required=True, help="labelled atlas dataset (id, name or folder)")
    train.add_argument("-o", "--output", required=True, help="model folder to write")
    train.add_argument("--grid", type=int, nargs="+", default=[32, 64, 64],
                       help="network grid the images are resized to [default: 32 64 64]")
    train.add_argument("--levels", type=int, default=3, help="down-sampling levels [default: 3]")
    train.add_argument("--channels", type=int, default=4, help="BiRegNet base channels c [default: 4]")
    train.add_argument("--iterations", type=int, default=1500, help="BiRegNet steps [default: 1500, the paper's]")
    train.add_argument("--simnet-iterations", type=int, default=2000,
                       help="SimNet steps (0: no SimNet) [default: 2000]")
    train.add_argument("--bending-weight", type=float, default=0.0, help="bending energy weight [default: 0]")
    train.add_argument("--batch-size", type=int, default=2, help="atlas-target pairs per step [default: 2]")
    train.add_argument("--seed", type=int, default=0, help="seed of initialisation and sampling [default: 0]")
    train.add_argument("--fold", default="0",
                       help="fold of the target's split (the one 'nnunet_mm mas' writes) whose training cases the "
                            "networks learn from; its validation and the test cases get priors from the frozen "
                            "networks. Train the nnU-Net fold with the same number. 'all': every training case "
                            "(leaks into every fold's validation) [default: 0]")
    add_device_argument(train)
    train.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    set_handler(train, _run_mas_train)

    distill = subparsers.add_parser(
        "mas-distill", help="fused atlas labels (uncertain voxels = ignore) as labels for a plain nnU-Net",
        description="From a dataset written by 'nnunet_mm mas', write a new raw dataset with the target's image "
                    "channels and the fused labels as labelsTr; voxels whose winning fused probability is below the "
                    "threshold get nnU-Net's ignore label. Train it with nnUNetTrainer.")
    distill.add_argument("-d", required=True, help="MAS dataset (id, name or folder)")
    add_target_dataset_arguments(distill, default_name="<MAS dataset name>_Distilled")
    add_deprecated_alias(distill, "-o", "--target-id")
    add_deprecated_alias(distill, "--output-id", "--target-id")
    add_deprecated_alias(distill, "--output-name", "--target-name")
    distill.add_argument("--threshold", type=float, default=0.6,
                         help="confidence threshold tau in (0.5, 1]: voxels below it get the ignore label "
                              "[default: 0.6]")
    distill.add_argument("--overwrite", action="store_true", help="replace an existing output dataset")
    set_handler(distill, _run_mas_distill)


def _run_mas(args: argparse.Namespace) -> int:
    from nnunet_mm.atlas.mas import MASSettings, SimpleITKRegistration, build_mas_dataset
    from nnunet_mm.atlas.registration import RegistrationSettings

    target, atlas = _dataset(args.d, "-d"), _dataset(args.atlas, "-a")
    settings = MASSettings(num_atlases=args.num_atlases, fusion=args.fusion, target_channel=args.target_channel,
                           atlas_channel=args.atlas_channel)
    simnet = backend = None
    if args.registration == "learned" or args.fusion == "simnet":
        if args.model is None:
            raise ValueError("--registration learned and --fusion simnet need -m DIR (from 'nnunet_mm mas-train').")
        if not Path(args.model).is_dir():
            raise FileNotFoundError(f"-m {args.model}: model folder not found (train it with 'nnunet_mm mas-train').")
        device = torch_device(args.device)
        from nnunet_mm.atlas.learned import load_learned_mas

        learned_backend, simnet = load_learned_mas(Path(args.model), device=str(device))
        if args.registration == "learned":
            backend = learned_backend
    if backend is None:
        backend = SimpleITKRegistration(RegistrationSettings(
            stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()), iterations=args.iterations,
            bspline_iterations=args.bspline_iterations, bspline_grid_spacing_mm=args.bspline_grid_mm,
            num_threads=args.np))
    folder = build_mas_dataset(target, atlas, output_id=args.target_id, output_name=args.target_name,
                               settings=settings, backend=backend, simnet=simnet,
                               output_root=Path(args.output_root) if args.output_root else None,
                               cache_dir=Path(args.cache) if args.cache else None, overwrite=args.overwrite,
                               prior_classes=None if args.prior_classes is None else
                               [c.strip() for c in args.prior_classes.split(",") if c.strip()])
    print(f"wrote {folder} (QA: {folder / 'nnunet_mm_qa'}); next: nnUNetv2_plan_and_preprocess -d {args.target_id} "
          f"&& nnUNetv2_train {args.target_id} 3d_fullres 0 -tr MASPriorTrainer; new cases: nnunet_mm predict -i IN "
          f"-o OUT -d {args.target_id} -c 3d_fullres -tr MASPriorTrainer -f 0")
    return 0


def _run_mas_train(args: argparse.Namespace) -> int:
    from nnunet_mm.atlas.learned import LearnedMASConfig, train_learned_mas
    from nnunet_mm.io.raw_dataset import open_raw_dataset

    target, atlas = _dataset(args.d, "-d"), _dataset(args.atlas, "-a")
    labels = open_raw_dataset(target).dataset_json["labels"]
    config = LearnedMASConfig(grid_shape=tuple(args.grid), num_classes=len(labels), base_channels=args.channels,
                              num_levels=args.levels, bending_weight=args.bending_weight)
    device = torch_device(args.device)
    summary = train_learned_mas(atlas, target, Path(args.output), config=config,
                                iterations=args.iterations, simnet_iterations=args.simnet_iterations,
                                batch_size=args.batch_size, device=str(device), seed=args.seed,
                                fold=parse_fold(args.fold), overwrite=args.overwrite)
    before, after = summary["train_pair_dice_before_after"]
    print(f"wrote {args.output}; training pairs: foreground Dice {before:.3f} unregistered -> {after:.3f} warped "
          f"({summary['total_seconds']:.0f} s)")
    return 0


def _run_mas_distill(args: argparse.Namespace) -> int:
    from nnunet_mm.atlas.distill import build_distilled_dataset

    folder = build_distilled_dataset(_dataset(args.d, "-d"), output_id=args.target_id, output_name=args.target_name,
                                     confidence_threshold=args.threshold,
                                     output_root=Path(args.output_root) if args.output_root else None,
                                     overwrite=args.overwrite)
    print(f"wrote {folder}; next: nnUNetv2_plan_and_preprocess -d {args.target_id} && "
          f"nnUNetv2_train {args.target_id} 3d_fullres 0")
    return 0


def _dataset(text: str, option: str) -> str | Path:
    """A dataset given as a folder (a path, or an existing folder) or as an id or name that nnU-Net finds
    (:func:`nnunet_mm.cli.common.dataset_name`), checked before any work.

    Raises:
        FileNotFoundError: a folder without dataset.json.
        ValueError: an id or name nnU-Net does not find.
    """
    if "/" in text or (not text.isdigit() and Path(text).is_dir()):
        folder = Path(text)
        if not (folder / "dataset.json").is_file():
            raise FileNotFoundError(f"{option} {text}: {folder / 'dataset.json'} not found; expected an nnU-Net raw "
                                    f"dataset folder.")
        return folder
    return dataset_name(text, option)
