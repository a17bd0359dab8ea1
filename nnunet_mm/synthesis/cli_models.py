"""Commands of the synthetic-tumour pipeline (Diff4MMLiTS, paper 002), part B: the networks, trained here.

    train-inpainter     train the 2D FFC inpainter on the raw dataset's tumour-free liver slices
    make-normal         new raw dataset: every tumour case also as a tumour-free "<case>_normal" case per phase
    train-autoencoder   train the 3D autoencoder on the preprocessed cases of a configuration
    train-diffusion     train the mask-conditioned latent diffusion model on real tumour crops
    synth-pool          pre-generate a pool of synthetic-tumour patches with the latent diffusion model

Model folders default to ``$nnUNet_preprocessed/<dataset>/nnunet_mm_synthesis/{inpainter,autoencoder,
latent_diffusion}``; the last is where ``SynthTumorTrainer`` looks for ``"synthesizer": "diffusion"``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nnunet_mm.cli.common import (add_dataset_arguments, add_device_argument, add_target_dataset_arguments,
                                  set_handler, torch_device)

SYNTHESIS_FOLDER = "nnunet_mm_synthesis"


def register(subparsers) -> None:
    """Add the sub-commands of this module to ``nnunet_mm``'s parser."""
    inpainter = subparsers.add_parser(
        "train-inpainter", help="train the FFC inpainter (normal-CT generator) from scratch",
        description="Train the 2D LaMa-style FFC inpainter on axial liver slices without tumour of every phase of "
                    "$nnUNet_raw/<dataset> (imagesTr/labelsTr), with random large holes on the liver. Writes "
                    "inpainter.safetensors, config.json, checkpoint_latest.pt and losses.png.")
    inpainter.add_argument("-d", required=True, help="dataset name or id (raw dataset)")
    inpainter.add_argument("-o", "--output", default=None,
                           help="model folder [default: $nnUNet_preprocessed/<dataset>/nnunet_mm_synthesis/inpainter]")
    inpainter.add_argument("--steps", type=int, default=20000, help="training steps [default: %(default)s]")
    inpainter.add_argument("--batch-size", type=int, default=8, help="slices per step [default: %(default)s]")
    inpainter.add_argument("--patch-size", type=int, default=256, help="crop side, multiple of 8 [default: 256]")
    inpainter.add_argument("--base-channels", type=int, default=64, help="ngf [default: 64, LaMa]")
    inpainter.add_argument("--blocks", type=int, default=9, help="FFC residual blocks [default: 9, LaMa]")
    inpainter.add_argument("--no-gan", action="store_true", help="L1 losses only (no discriminator)")
    inpainter.add_argument("--max-slices-per-case", type=int, default=32,
                           help="tumour-free liver slices read per case and phase [default: %(default)s]")
    _add_training_arguments(inpainter)
    set_handler(inpainter, run_train_inpainter, also_reports=(RuntimeError,))

    normal = subparsers.add_parser(
        "make-normal", help="new raw dataset with a tumour-free normal case per tumour case",
        description="Remove every tumour of $nnUNet_raw/<dataset> by inpainting all phases inside the removal mask "
                    "(closing 5x5 + dilation 3x3 of the tumour label, per slice) and write a new raw dataset with "
                    "the original cases plus '<case>_normal' cases (label: tumour -> liver), normal_cases.json and "
                    "normal_cases.png. The source is only read.")
    normal.add_argument("-d", required=True, help="source dataset name or id")
    add_target_dataset_arguments(normal, default_name="<source name>_normal")
    normal.add_argument("--inpainter", choices=("ffc", "median"), default="ffc",
                        help="'ffc' (trained with train-inpainter) or the 'median' filter baseline [default: ffc]")
    normal.add_argument("-m", "--model", default=None,
                        help="inpainter folder [default: $nnUNet_preprocessed/<dataset>/nnunet_mm_synthesis/inpainter]")
    normal.add_argument("--no-originals", action="store_true", help="write only the normal cases")
    add_device_argument(normal, what="the ffc inpainter")
    normal.add_argument("--overwrite", action="store_true", help="replace an existing target dataset")
    set_handler(normal, run_make_normal)

    autoencoder = subparsers.add_parser(
        "train-autoencoder", help="train the 3D autoencoder of the latent-diffusion synthesizer",
        description="Train a 3D KL autoencoder (MONAI AutoencoderKL, downsampling 4) from scratch on random crops "
                    "of every phase of the preprocessed cases of a configuration (nnU-Net's normalised space).")
    add_dataset_arguments(autoencoder)
    autoencoder.add_argument("-o", "--output", default=None, help="model folder [default: $nnUNet_preprocessed/"
                                                                   "<dataset>/nnunet_mm_synthesis/autoencoder]")
    autoencoder.add_argument("--steps", type=int, default=20000, help="training steps [default: %(default)s]")
    autoencoder.add_argument("--batch-size", type=int, default=2, help="crops per step [default: %(default)s]")
    autoencoder.add_argument("--patch-size", type=int, nargs=3, default=(64, 64, 64),
                             help="crop size in voxels [default: 64 64 64]")
    autoencoder.add_argument("--channels", type=int, nargs="+", default=(32, 64, 64),
                             help="channels per resolution level [default: 32 64 64]")
    autoencoder.add_argument("--latent-channels", type=int, default=8, help="channels of the latent [default: 8]")
    autoencoder.add_argument("--norm-groups", type=int, default=16, help="GroupNorm groups [default: 16]")
    autoencoder.add_argument("--adversarial-start", type=int, default=2000,
                             help="step from which the adversarial loss is on [default: %(default)s]")
    autoencoder.add_argument("--discriminator-layers", type=int, default=3,
                             help="layers of the patch discriminator [default: 3]")
    _add_training_arguments(autoencoder)
    set_handler(autoencoder, run_train_autoencoder)

    diffusion = subparsers.add_parser(
        "train-diffusion", help="train the mask-conditioned latent diffusion model on real tumours",
        description="Train MONAI's DiffusionModelUNet in the autoencoder's latent space on crops centred on real "
                    "tumours of the preprocessed cases, conditioned on the masked image latent, the tumour mask and "
                    "the phase (ε-prediction, L2). SynthTumorTrainer uses the result with "
                    "\"synthesis\": {\"synthesizer\": \"diffusion\"}.")
    add_dataset_arguments(diffusion)
    diffusion.add_argument("--autoencoder", default=None, help="autoencoder folder [default: $nnUNet_preprocessed/"
                                                               "<dataset>/nnunet_mm_synthesis/autoencoder]")
    diffusion.add_argument("-o", "--output", default=None, help="model folder [default: $nnUNet_preprocessed/"
                                                                 "<dataset>/nnunet_mm_synthesis/latent_diffusion]")
    diffusion.add_argument("--steps", type=int, default=30000, help="training steps [default: %(default)s]")
    diffusion.add_argument("--batch-size", type=int, default=2, help="crops per step [default: %(default)s]")
    diffusion.add_argument("--patch-size", type=int, nargs=3, default=(64, 64, 64),
                           help="crop size in voxels [default: 64 64 64]")
    diffusion.add_argument("--channels", type=int, nargs="+", default=(64, 128, 256),
                           help="denoiser channels per resolution level [default: 64 128 256]")
    diffusion.add_argument("--norm-groups", type=int, default=32, help="GroupNorm groups [default: 32]")
    diffusion.add_argument("--head-channels", type=int, default=32,
                           help="channels per attention head [default: 32]")
    diffusion.add_argument("--inference-steps", type=int, default=50, help="DDIM steps [default: 50]")
    _add_training_arguments(diffusion)
    set_handler(diffusion, run_train_diffusion)

    pool = subparsers.add_parser(
        "synth-pool", help="pre-generate synthetic-tumour patches with the latent diffusion model",
        description="Draw tumour masks in the tumour-free liver of liver-centred crops of the preprocessed cases "
                    "(the dataset's synthesis mask settings) and paint them with the latent diffusion model. Every "
                    "patch is written as an nnU-Net preprocessed case (pool_XXXX.b2nd, _seg.b2nd, .pkl) that "
                    "SynthTumorTrainer reads with \"synthesis\": {\"synthesizer\": \"pool\"}; plus pool.json (the "
                    "configuration it belongs to) and pool.png.")
    add_dataset_arguments(pool)
    pool.add_argument("-m", "--model", default=None, help="latent-diffusion folder [default: the dataset's]")
    pool.add_argument("-n", "--num-samples", type=int, required=True, help="patches to generate")
    pool.add_argument("-o", "--output", default=None,
                      help="output folder (staged and renamed) [default: $nnUNet_preprocessed/<dataset>/"
                           "nnunet_mm_synthesis/pool_<configuration>, where SynthTumorTrainer looks]")
    pool.add_argument("--patch-size", type=int, nargs=3, default=None,
                      help="crop size of a pooled patch [default: the configuration's patch size]")
    pool.add_argument("--seed", type=int, default=0, help="seed of masks and sampling [default: 0]")
    add_device_argument(pool)
    pool.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    set_handler(pool, run_synth_pool)


def _add_training_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and sampling [default: 0]")
    parser.add_argument("--checkpoint-every", type=int, default=500,
                        help="steps between checkpoints [default: %(default)s]")
    add_device_argument(parser)
    parser.add_argument("--resume", action="store_true", help="continue from checkpoint_latest.pt (up to --steps)")
    parser.add_argument("--overwrite", action="store_true", help="start again in an existing model folder")


def _dataset_name(dataset: str) -> str:
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    return maybe_convert_to_dataset_name(dataset)


def _synthesis_folder(dataset_name: str) -> Path:
    from nnunetv2.paths import nnUNet_preprocessed

    return Path(nnUNet_preprocessed) / dataset_name / SYNTHESIS_FOLDER


def run_train_inpainter(args: argparse.Namespace) -> int:
    from nnunetv2.paths import nnUNet_raw

    from nnunet_mm.synthesis.inpainting import InpainterConfig, train_inpainter
    from nnunet_mm.settings import read_settings
    from nnunet_mm.synthesis.model_data import liver_slices, read_dataset_json
    from nnunet_mm.synthesis.normal_cases import dataset_labels

    name = _dataset_name(args.d)
    raw = Path(nnUNet_raw) / name
    dataset_json = read_dataset_json(raw)
    liver, tumour = dataset_labels(read_settings(dataset_json, str(raw / "dataset.json")), dataset_json["labels"])
    config = InpainterConfig(base_channels=args.base_channels, num_blocks=args.blocks, patch_size=args.patch_size,
                             batch_size=args.batch_size, steps=args.steps,
                             adversarial_weight=0.0 if args.no_gan else InpainterConfig.adversarial_weight,
                             feature_matching_weight=0.0 if args.no_gan else
                             InpainterConfig.feature_matching_weight,
                             checkpoint_every=args.checkpoint_every, seed=args.seed)
    device = torch_device(args.device)
    slices = liver_slices(raw, patch_size=config.patch_size, liver_label=liver, tumour_label=tumour,
                          max_slices_per_case=args.max_slices_per_case, seed=args.seed)
    folder = Path(args.output) if args.output else _synthesis_folder(name) / "inpainter"
    result = train_inpainter(slices, config, folder, device=device, resume=args.resume,
                             overwrite=args.overwrite)
    print(f"trained the inpainter on {len(slices.images)} slices for {result.step} steps: {result.folder}")
    return 0


def run_make_normal(args: argparse.Namespace) -> int:
    from nnunetv2.paths import nnUNet_raw

    from nnunet_mm.io.staging import new_dataset_folder
    from nnunet_mm.synthesis.normal_cases import make_normal_dataset

    name = _dataset_name(args.d)
    source = Path(nnUNet_raw) / name
    target_name = args.target_name or f"{name.split('_', 1)[1] if '_' in name else name}_normal"
    target = new_dataset_folder(args.target_id, target_name,
                                output_root=Path(args.output_root) if args.output_root else None)
    model = device = None
    if args.inpainter == "ffc":
        model = Path(args.model) if args.model else _synthesis_folder(name) / "inpainter"
        if not model.is_dir():
            raise FileNotFoundError(f"{model}: no trained inpainter; run 'nnunet_mm train-inpainter -d {args.d}', "
                                    f"pass -m FOLDER, or use --inpainter median.")
        device = torch_device(args.device)
    result = make_normal_dataset(source, target, method=args.inpainter, model_folder=model,
                                 device=device, include_originals=not args.no_originals,
                                 dataset_name=target.name, overwrite=args.overwrite)
    print(f"wrote {result.folder} with {len(result.normal_cases)} normal case(s); next: "
          f"nnUNetv2_plan_and_preprocess -d {args.target_id}")
    return 0


def run_train_autoencoder(args: argparse.Namespace) -> int:
    from nnunet_mm.synthesis.autoencoder import AutoencoderConfig, train_autoencoder
    from nnunet_mm.synthesis.model_data import PreprocessedCrops
    from nnunet_mm.synthesis.cli import preprocessed_dataset
    from nnunet_mm.synthesis.normal_cases import dataset_labels

    folder, dataset_json, settings, configuration = preprocessed_dataset(args)
    liver, tumour = dataset_labels(settings, dataset_json["labels"])
    device = torch_device(args.device)
    config = AutoencoderConfig(channels=tuple(args.channels), latent_channels=args.latent_channels,
                               norm_num_groups=args.norm_groups, patch_size=tuple(args.patch_size),
                               batch_size=args.batch_size, steps=args.steps,
                               adversarial_start=args.adversarial_start,
                               discriminator_layers=args.discriminator_layers,
                               checkpoint_every=args.checkpoint_every, seed=args.seed)
    crops = PreprocessedCrops(folder / configuration.data_identifier, config.patch_size,
                              center_labels=(liver, tumour))
    output = Path(args.output) if args.output else folder / SYNTHESIS_FOLDER / "autoencoder"
    result = train_autoencoder(crops, config, output, device=device, resume=args.resume,
                               overwrite=args.overwrite)
    print(f"trained the autoencoder for {result.step} steps: {result.folder}")
    return 0


def run_train_diffusion(args: argparse.Namespace) -> int:
    from nnunet_mm.synthesis.latent_diffusion import (DiffusionConfig, configuration_record,
                                                      default_autoencoder_folder, default_model_folder,
                                                      train_diffusion)
    from nnunet_mm.synthesis.model_data import PreprocessedCrops
    from nnunet_mm.synthesis.cli import preprocessed_dataset
    from nnunet_mm.synthesis.normal_cases import dataset_labels

    folder, dataset_json, settings, configuration = preprocessed_dataset(args)
    _, tumour = dataset_labels(settings, dataset_json["labels"])
    autoencoder = Path(args.autoencoder) if args.autoencoder else default_autoencoder_folder(folder)
    if not autoencoder.is_dir():
        raise FileNotFoundError(f"{autoencoder}: no trained autoencoder; run 'nnunet_mm train-autoencoder -d {args.d} "
                                f"-c {args.c}' first or pass --autoencoder FOLDER.")
    device = torch_device(args.device)
    levels = len(args.channels)
    config = DiffusionConfig(channels=tuple(args.channels), attention_levels=(False,) * (levels - 1) + (True,),
                             num_head_channels=args.head_channels, norm_num_groups=args.norm_groups,
                             patch_size=tuple(args.patch_size), batch_size=args.batch_size, steps=args.steps,
                             num_inference_steps=args.inference_steps, checkpoint_every=args.checkpoint_every,
                             seed=args.seed)
    crops = PreprocessedCrops(folder / configuration.data_identifier, config.patch_size, center_labels=(tumour,),
                              foreground_fraction=1.0, reference_channel=settings.multimodal.reference_channel)
    output = Path(args.output) if args.output else default_model_folder(folder)
    result = train_diffusion(crops, autoencoder, config, output, tumour_label=tumour,
                             phase_names=settings.multimodal.phase_names,
                             configuration=configuration_record(args.c, configuration),
                             device=device, resume=args.resume, overwrite=args.overwrite)
    print(f"trained the latent diffusion model for {result.step} steps: {result.folder}")
    return 0


def run_synth_pool(args: argparse.Namespace) -> int:
    from nnunet_mm.synthesis.cli import preprocessed_dataset
    from nnunet_mm.synthesis.latent_diffusion import configuration_record, default_model_folder, write_synthetic_pool
    from nnunet_mm.synthesis.pool import default_pool_folder

    folder, dataset_json, settings, configuration = preprocessed_dataset(args)
    model = Path(args.model) if args.model else default_model_folder(folder)
    if not model.is_dir():
        raise FileNotFoundError(f"{model}: no latent diffusion model; run 'nnunet_mm train-diffusion -d {args.d} "
                                f"-c {args.c}' first or pass -m FOLDER.")
    device = torch_device(args.device)
    output = Path(args.output) if args.output else default_pool_folder(folder, args.c)
    result = write_synthetic_pool(folder / configuration.data_identifier, dataset_json, model, output,
                                  num_samples=args.num_samples, spacing=configuration.spacing,
                                  patch_size=args.patch_size or configuration.patch_size, seed=args.seed,
                                  device=device,
                                  overwrite=args.overwrite, configuration=configuration_record(args.c, configuration))
    print(f"wrote {args.num_samples} synthetic patch(es) to {result}; train with them: set \"synthesis\": "
          f"{{\"synthesizer\": \"pool\"}} in {folder / 'dataset.json'}"
          + ("" if args.output is None else f" and \"pool_folder\": \"{result}\"")
          + f", then nnUNetv2_train {args.d} {args.c} FOLD -tr SynthTumorTrainer")
    return 0
