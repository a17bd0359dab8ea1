"""``nnunet_mm mas`` / ``mas-train`` / ``mas-distill``: multi-atlas priors across modalities (paper 004)."""
from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_mm.cli.common import set_handler


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the multi-atlas sub-commands."""
    mas = subparsers.add_parser(
        "mas", help="register atlases of another modality, fuse their labels, write prior channels",
        description="For every case of the target dataset (imagesTr and imagesTs), register K atlases of the atlas "
                    "dataset, warp and fuse their labels and write a new raw dataset: the target's files plus one "
                    "prior probability channel per foreground class (channel name noNorm). Train it with "
                    "'nnUNetv2_train ID CONFIG FOLD -tr MASPriorTrainer'; predict its imagesTs with nnUNetv2_predict.")
    mas.add_argument("-t", "--target", required=True, help="target dataset (id, name or folder)")
    mas.add_argument("-a", "--atlas", required=True, help="labelled atlas dataset (id, name or folder)")
    mas.add_argument("-o", "--output-id", type=int, required=True, help="id of the new dataset")
    mas.add_argument("--output-name", default=None, help="name after the id [default: <target>_MASPrior]")
    mas.add_argument("--output-root", default=None, help="[default: $nnUNet_raw]")
    mas.add_argument("-k", "--num-atlases", type=int, default=5, help="atlases per target [default: 5]")
    mas.add_argument("--fusion", default="majority", choices=("majority", "staple", "local", "simnet"),
                     help="label fusion [default: majority]")
    mas.add_argument("--registration", default="simpleitk", choices=("simpleitk", "learned"),
                     help="registration backend [default: simpleitk]")
    mas.add_argument("--model", default=None, help="folder written by 'nnunet_mm mas-train' (learned / simnet)")
    mas.add_argument("--stages", default="rigid,affine,bspline", help="SimpleITK stages [default: %(default)s]")
    mas.add_argument("--iterations", type=int, default=100, help="rigid/affine iterations per level [100]")
    mas.add_argument("--bspline-iterations", type=int, default=50, help="B-spline iterations per level [50]")
    mas.add_argument("--bspline-grid-mm", type=float, default=30.0, help="B-spline control-point spacing [30]")
    mas.add_argument("--threads", type=int, default=0, help="SimpleITK threads [default: all cores]")
    mas.add_argument("--target-channel", type=int, default=None, help="[default: the reference channel]")
    mas.add_argument("--atlas-channel", type=int, default=0)
    mas.add_argument("--cache", default=None, help="cache of warped atlases [default: <output-root>/"
                                                   ".nnunet_mm_mas_cache]")
    mas.add_argument("--overwrite", action="store_true", help="replace an existing output dataset")
    mas.add_argument("-device", default="cpu", help="device of the learned networks [default: cpu]")
    set_handler(mas, _run_mas, also_reports=(RuntimeError,))

    train = subparsers.add_parser(
        "mas-train", help="train the learned registration (BiRegNet) and fusion (SimNet) networks",
        description="Train BiRegNet (bi-directional deformations, attention-gated decoder, multi-scale label Dice "
                    "both ways + image round-trip term) on (atlas, labelled target) pairs, then SimNet on pairs "
                    "warped by it. Use the folder with 'nnunet_mm mas --registration learned --fusion simnet "
                    "--model DIR'.")
    train.add_argument("-a", "--atlas", required=True, help="labelled atlas dataset (id, name or folder)")
    train.add_argument("-t", "--target", required=True, help="target dataset with labelled training cases")
    train.add_argument("-o", "--output", required=True, help="model folder to write")
    train.add_argument("--grid", type=int, nargs="+", default=[32, 64, 64], help="network grid [32 64 64]")
    train.add_argument("--levels", type=int, default=3, help="down-sampling levels [3]")
    train.add_argument("--channels", type=int, default=4, help="BiRegNet base channels c [4]")
    train.add_argument("--iterations", type=int, default=1500, help="BiRegNet steps [1500, the paper's]")
    train.add_argument("--simnet-iterations", type=int, default=2000, help="SimNet steps (0: none) [2000]")
    train.add_argument("--bending-weight", type=float, default=0.0, help="bending energy weight [0]")
    train.add_argument("--batch-size", type=int, default=2)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("-device", default="cpu", help="torch device [default: cpu]")
    train.add_argument("--overwrite", action="store_true")
    set_handler(train, _run_mas_train)

    distill = subparsers.add_parser(
        "mas-distill", help="fused atlas labels (uncertain voxels = ignore) as labels for a plain nnU-Net",
        description="From a dataset written by 'nnunet_mm mas', write a new raw dataset with the target's image "
                    "channels and the fused labels as labelsTr; voxels whose winning fused probability is below the "
                    "threshold get nnU-Net's ignore label. Train it with nnUNetTrainer.")
    distill.add_argument("-d", required=True, help="MAS dataset (id, name or folder)")
    distill.add_argument("-o", "--output-id", type=int, required=True)
    distill.add_argument("--output-name", default=None)
    distill.add_argument("--threshold", type=float, default=0.6, help="confidence threshold tau [0.6]")
    distill.add_argument("--output-root", default=None, help="[default: $nnUNet_raw]")
    distill.add_argument("--overwrite", action="store_true")
    set_handler(distill, _run_mas_distill)


def _run_mas(args: argparse.Namespace) -> int:
    from nnunet_mm.atlas.mas import MASSettings, SimpleITKRegistration, build_mas_dataset
    from nnunet_mm.atlas.registration import RegistrationSettings

    settings = MASSettings(num_atlases=args.num_atlases, fusion=args.fusion, target_channel=args.target_channel,
                           atlas_channel=args.atlas_channel)
    simnet = backend = None
    if args.registration == "learned" or args.fusion == "simnet":
        if args.model is None:
            raise ValueError("--registration learned and --fusion simnet need --model DIR (from 'nnunet_mm "
                             "mas-train').")
        from nnunet_mm.atlas.learned import load_learned_mas

        learned_backend, simnet = load_learned_mas(Path(args.model), device=args.device)
        if args.registration == "learned":
            backend = learned_backend
    if backend is None:
        backend = SimpleITKRegistration(RegistrationSettings(
            stages=tuple(s.strip() for s in args.stages.split(",") if s.strip()), iterations=args.iterations,
            bspline_iterations=args.bspline_iterations, bspline_grid_spacing_mm=args.bspline_grid_mm,
            num_threads=args.threads))
    folder = build_mas_dataset(_dataset(args.target), _dataset(args.atlas), output_id=args.output_id,
                               output_name=args.output_name, settings=settings, backend=backend, simnet=simnet,
                               output_root=Path(args.output_root) if args.output_root else None,
                               cache_dir=Path(args.cache) if args.cache else None, overwrite=args.overwrite)
    print(f"wrote {folder} (QA: {folder / 'nnunet_mm_qa'}); next: nnUNetv2_plan_and_preprocess -d {args.output_id} "
          f"&& nnUNetv2_train {args.output_id} 3d_fullres 0 -tr MASPriorTrainer")
    return 0


def _run_mas_train(args: argparse.Namespace) -> int:
    from nnunet_mm.atlas.learned import LearnedMASConfig, train_learned_mas
    from nnunet_mm.io.raw_dataset import open_raw_dataset

    labels = open_raw_dataset(_dataset(args.target)).dataset_json["labels"]
    config = LearnedMASConfig(grid_shape=tuple(args.grid), num_classes=len(labels), base_channels=args.channels,
                              num_levels=args.levels, bending_weight=args.bending_weight)
    summary = train_learned_mas(_dataset(args.atlas), _dataset(args.target), Path(args.output), config=config,
                                iterations=args.iterations, simnet_iterations=args.simnet_iterations,
                                batch_size=args.batch_size, device=args.device, seed=args.seed,
                                overwrite=args.overwrite)
    before, after = summary["train_pair_dice_before_after"]
    print(f"wrote {args.output}; training pairs: foreground Dice {before:.3f} unregistered -> {after:.3f} warped "
          f"({summary['total_seconds']:.0f} s)")
    return 0


def _run_mas_distill(args: argparse.Namespace) -> int:
    from nnunet_mm.atlas.distill import build_distilled_dataset

    folder = build_distilled_dataset(_dataset(args.d), output_id=args.output_id, output_name=args.output_name,
                                     confidence_threshold=args.threshold,
                                     output_root=Path(args.output_root) if args.output_root else None,
                                     overwrite=args.overwrite)
    print(f"wrote {folder}; next: nnUNetv2_plan_and_preprocess -d {args.output_id} && "
          f"nnUNetv2_train {args.output_id} 3d_fullres 0")
    return 0


def _dataset(text: str) -> int | str | Path:
    """A dataset id (``"702"``), name or folder path from the command line."""
    if text.isdigit():
        return int(text)
    return Path(text) if ("/" in text or Path(text).is_dir()) else text
