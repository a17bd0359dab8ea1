"""Commands of the weak-supervision pipeline (CLTN, paper 003).

    weak-train-gan   train (or continue) the label-transfer GAN on a raw dataset's diseased and normal images
    weak-export      pseudo masks from the GAN's attention masks → a new raw dataset (then WeakLabelTrainer)
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_mm.cli.common import add_device_argument, add_target_dataset_arguments, set_handler, torch_device


def register(subparsers) -> None:
    """Add the sub-commands of this module to ``nnunet_mm``'s parser."""
    train = subparsers.add_parser(
        "weak-train-gan", help="train the CLTN label-transfer GAN from image-level labels (GPU recommended)",
        description="Read the diseased and normal 2D images of a raw dataset (2D images with 'nnunet_mm'.'image_labels'"
                    " in dataset.json, or axial slices of 3D volumes, tumour-free slices being normal) and train the "
                    "label-transfer GAN. Writes OUTPUT/cltn_checkpoint.pt (resumable with --continue), "
                    "OUTPUT/generator_ab.safetensors and OUTPUT/cltn_losses.png.")
    train.add_argument("-d", required=True, help="dataset name or id in $nnUNet_raw")
    train.add_argument("-o", "--output", required=True, help="model folder")
    train.add_argument("--iterations", type=int, default=7000, help="total iterations [default: %(default)s, paper]")
    train.add_argument("--size", type=int, default=256,
                       help="image side in pixels; the attention mask is a quarter of it (64 x 64 at 256, the paper; "
                            "below 64 px it is too coarse to outline a lesion) [default: %(default)s]")
    train.add_argument("--batch-size", type=int, default=1, help="images per step [default: %(default)s, paper]")
    train.add_argument("--weights", choices=("brats", "isic"), default="brats",
                       help="the paper's loss weights for this kind of data [default: %(default)s]")
    train.add_argument("--base-channels", type=int, default=54, help="generator stem channels [default: 54, paper]")
    train.add_argument("--res-blocks", type=int, default=4, help="residual blocks [default: 4, paper]")
    train.add_argument("--discriminator-channels", type=int, default=64,
                       help="discriminator stem channels [default: 64, paper]")
    train.add_argument("--discriminate-composites", action="store_true",
                       help="also show the composites to the discriminators as fakes (the public code judges them "
                            "only in the generator's loss, the default)")
    train.add_argument("--lesion-labels", default=None,
                       help="comma-separated label values that make a 3D slice diseased [default: any foreground]")
    train.add_argument("--save-every", type=int, default=500, help="checkpoint interval [default: %(default)s]")
    train.add_argument("--seed", type=int, default=0, help="seed of initialisation and sampling [default: 0]")
    add_device_argument(train)
    resume = train.add_mutually_exclusive_group()
    resume.add_argument("--continue", dest="resume", action="store_true", help="continue OUTPUT's checkpoint")
    resume.add_argument("--overwrite", action="store_true", help="start afresh, replacing OUTPUT's checkpoint")
    set_handler(train, run_train_gan)

    export = subparsers.add_parser(
        "weak-export", help="pseudo masks from the GAN → a new raw dataset for WeakLabelTrainer",
        description="Binarise G_AB's attention masks (Otsu or Otsu-based watershed) inside the image foreground and "
                    "write DatasetTARGET with the images, the pseudo masks as labelsTr (normal cases all "
                    "background), labels {background, lesion, ignore}, the image labels inline, pseudo_masks.png and,"
                    " when the source has masks, pseudo_mask_dice.json.")
    export.add_argument("-d", required=True, help="source dataset name or id in $nnUNet_raw")
    export.add_argument("-m", "--model", required=True, help="model folder of weak-train-gan")
    add_target_dataset_arguments(export, default_name="<source name>PseudoMasks")
    export.add_argument("--method", choices=("otsu", "watershed"), default="otsu",
                        help="binarisation of the attention masks [default: %(default)s]")
    export.add_argument("--polarity", choices=("auto", "attention", "inverted"), default="auto",
                        help="which side of the attention mask is the lesion: auto decides from the normal images "
                             "(the side unlike healthy tissue), attention keeps the GAN's mask, inverted flips it "
                             "[default: auto]")
    export.add_argument("--lesion-labels", default=None, help="true-mask values counted as lesion in the Dice report")
    add_device_argument(export)
    export.add_argument("--overwrite", action="store_true", help="replace an existing target dataset")
    set_handler(export, run_export, also_reports=(RuntimeError,))


def _raw_dataset_folder(dataset: str) -> Path:
    from nnunetv2.paths import nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    if not nnUNet_raw:
        raise FileNotFoundError("nnUNet_raw is not set; export nnUNet_raw=/path/to/nnUNet_raw.")
    return Path(nnUNet_raw) / maybe_convert_to_dataset_name(dataset)


def _lesion_labels(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"--lesion-labels must be comma-separated integers, got {text!r}.") from None


def run_train_gan(args: argparse.Namespace) -> int:
    """``nnunet_mm weak-train-gan``."""
    from nnunet_mm.weak.cltn_gan import CLTNConfig, train_label_transfer_gan
    from nnunet_mm.weak.cltn_losses import loss_weights_preset
    from nnunet_mm.weak.weak_images import load_weak_images

    folder = _raw_dataset_folder(args.d)
    if not (folder / "dataset.json").is_file():
        raise FileNotFoundError(f"{folder / 'dataset.json'}: not found; expected an nnU-Net raw dataset.")
    lesion_labels = _lesion_labels(args.lesion_labels)
    device = torch_device(args.device)
    images = load_weak_images(folder, size=args.size, lesion_labels=lesion_labels, progress=True)
    config = CLTNConfig(in_channels=images[0].image.shape[0] if images else 1, image_size=args.size,
                        base_channels=args.base_channels, num_res_blocks=args.res_blocks,
                        discriminator_channels=args.discriminator_channels,
                        loss_weights=loss_weights_preset(args.weights),
                        discriminate_composites=args.discriminate_composites)
    checkpoint = train_label_transfer_gan(images, Path(args.output), iterations=args.iterations, config=config,
                                          batch_size=args.batch_size, resume=args.resume, overwrite=args.overwrite,
                                          device=device, seed=args.seed, save_every=args.save_every)
    print(f"wrote {checkpoint}; next: nnunet_mm weak-export -d {args.d} -m {args.output} --target-id ID")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """``nnunet_mm weak-export``."""
    from nnunet_mm.io.staging import new_dataset_folder
    from nnunet_mm.weak.pseudo_masks import export_pseudo_mask_dataset

    source = _raw_dataset_folder(args.d)
    name = args.target_name or f"{source.name.split('_', 1)[1]}PseudoMasks"
    target = new_dataset_folder(args.target_id, name,
                                output_root=Path(args.output_root) if args.output_root else source.parent)
    if not Path(args.model).is_dir():
        raise FileNotFoundError(f"-m {args.model}: model folder not found (train it with 'nnunet_mm weak-train-gan').")
    lesion_labels = _lesion_labels(args.lesion_labels)
    device = torch_device(args.device)
    export_pseudo_mask_dataset(source, Path(args.model), target, method=args.method, polarity=args.polarity,
                               lesion_labels=lesion_labels, overwrite=args.overwrite, device=device)
    print(f"wrote {target}; next: nnUNetv2_plan_and_preprocess -d {args.target_id} -c 2d && "
          f"nnUNetv2_train {args.target_id} 2d 0 -tr WeakLabelTrainer")
    return 0
