"""The CMC commands of ``nnunet_mm``: ``preprocess-unlabeled`` and ``label-fraction``."""
from __future__ import annotations

import argparse

from nnunet_mm.cli.common import add_preprocessing_arguments, add_target_dataset_arguments, set_handler


def register(subparsers) -> None:
    """Add the CMC sub-commands to ``nnunet_mm``'s parser."""
    unlabeled = subparsers.add_parser(
        "preprocess-unlabeled", help="preprocess the unlabeled cases (imagesUnl) for semi-supervised trainers",
        description="After nnUNetv2_plan_and_preprocess: preprocess the images in the folder named by "
                    "'unlabeled_dir' in dataset.json (default imagesUnl) with the configuration's plans into "
                    "<data_identifier>_unlabeled. The labeled data are untouched.")
    add_preprocessing_arguments(unlabeled)
    set_handler(unlabeled, _run_preprocess_unlabeled)

    fraction = subparsers.add_parser(
        "label-fraction", help="new raw dataset keeping only a fraction of the labels (rest in imagesUnl)",
        description="Write a new raw dataset from a fully labeled one: FRACTION of the training cases keep their "
                    "labels (per modality when dataset.json has per_case_modality), the others move to imagesUnl "
                    "(their labels to labelsUnl_heldout, for evaluation only); splits over the labeled cases.")
    fraction.add_argument("-d", required=True, help="source dataset name or id")
    fraction.add_argument("--fraction", type=float, required=True, help="share of labeled cases, in (0, 1)")
    add_target_dataset_arguments(fraction, default_name="<source name>_labeled<percent>pct")
    fraction.add_argument("--seed", type=int, default=0, help="seed of the case draw [default: 0]")
    fraction.add_argument("--overwrite", action="store_true", help="replace an existing target dataset")
    set_handler(fraction, _run_label_fraction)


def _run_preprocess_unlabeled(args: argparse.Namespace) -> int:
    from nnunet_mm.cmc.unlabeled import preprocess_unlabeled

    folder = preprocess_unlabeled(args.d, args.c, args.p, args.np)
    print(f"preprocessed unlabeled cases into {folder}")
    return 0


def _run_label_fraction(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nnunet_mm.cmc.label_fraction import make_label_fraction_dataset

    output_root = Path(args.output_root) if args.output_root else None
    target = make_label_fraction_dataset(args.d, args.fraction, target_id=args.target_id, target_name=args.target_name,
                                         seed=args.seed, output_root=output_root, overwrite=args.overwrite)
    print(f"wrote {target}; next: nnUNetv2_plan_and_preprocess -d {args.target_id} && "
          f"nnunet_mm preprocess-unlabeled -d {args.target_id} -c 3d_fullres")
    return 0
