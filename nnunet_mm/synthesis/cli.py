"""Commands of the synthetic-tumour pipeline (Diff4MMLiTS, paper 002), part A.

    synth-stats             fit the real tumour-vs-liver statistics per phase (handcrafted synthesizer)
    synth-preview           PNG grid of synthetic tumours next to real ones, per phase
    keep-tumours-in-liver   post-process predicted segmentations: drop tumour components outside the liver
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from nnunet_mm.cli.common import (add_dataset_arguments, add_deprecated_alias, add_device_argument, set_handler,
                                  torch_device)


def register(subparsers) -> None:
    """Add the sub-commands of this module to ``nnunet_mm``'s parser."""
    stats = subparsers.add_parser(
        "synth-stats", help="fit per-phase tumour-vs-liver statistics for the handcrafted tumour synthesizer",
        description="After nnUNetv2_plan_and_preprocess: measure, for every real tumour of the preprocessed "
                    "training cases and every phase, the tumour-minus-liver contrast and the texture in nnU-Net's "
                    "normalised space, and store them in <preprocessed>/<dataset>/nnunet_mm_synthesis/"
                    "tumour_contrast_<data_identifier>.json, where SynthTumorTrainer reads them.")
    add_dataset_arguments(stats)
    stats.add_argument("-f", dest="fold", default=None,
                       help="use only this fold's training cases (splits_final.json) [default: all cases]")
    add_deprecated_alias(stats, "--fold", "-f")
    stats.add_argument("-o", "--output", default=None, help="output JSON [default: beside the preprocessed data]")
    stats.add_argument("--overwrite", action="store_true", help="replace an existing statistics file")
    set_handler(stats, run_synth_stats)

    preview = subparsers.add_parser(
        "synth-preview", help="PNG grid of synthetic tumours next to real ones, one column per phase",
        description="Paint synthetic tumours into the healthy liver of preprocessed cases with the dataset's "
                    "synthesizer settings and show them beside real tumours.")
    add_dataset_arguments(preview)
    preview.add_argument("-o", "--output", required=True, help="output PNG")
    preview.add_argument("-n", "--num-examples", type=int, default=4, help="real and synthetic rows [default: 4]")
    preview.add_argument("--synthesizer", choices=("handcrafted", "diffusion"), default=None,
                         help="default: the dataset.json setting (handcrafted)")
    preview.add_argument("--seed", type=int, default=0, help="seed of the synthetic draws [default: 0]")
    add_device_argument(preview)
    preview.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    set_handler(preview, run_synth_preview, also_reports=(ImportError,))

    keep = subparsers.add_parser(
        "keep-tumours-in-liver", help="post-process predictions: remove tumour components outside the liver",
        description="For every segmentation in INPUT (e.g. an nnUNetv2_predict output folder), remove the tumour "
                    "components that do not touch the predicted liver (Diff4MMLiTS post-processing). Labels come "
                    "from INPUT/dataset.json (written by nnUNetv2_predict) unless given.")
    keep.add_argument("-i", "--input", required=True, help="folder of predicted segmentations")
    keep.add_argument("-o", "--output", required=True, help="output folder (created; never INPUT)")
    keep.add_argument("--liver-label", type=int, default=None,
                      help="label value of the liver [default: from INPUT/dataset.json]")
    keep.add_argument("--tumour-label", type=int, default=None,
                      help="label value of the tumours [default: from INPUT/dataset.json]")
    keep.add_argument("--file-ending", default=None, help="default: dataset.json's file_ending, else .nii.gz")
    keep.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    set_handler(keep, run_keep_tumours_in_liver)


def preprocessed_dataset(args: argparse.Namespace):
    """(dataset folder, dataset.json, its settings, configuration manager) of ``-d -c -p``; the dataset.json is
    nnU-Net's preprocessed copy, and the settings' messages say so (:func:`preprocessed_dataset_json_source`)."""
    from nnunet_mm.io.preprocessed import load_preprocessed
    from nnunet_mm.settings import preprocessed_dataset_json_source, read_settings

    folder, dataset_json, configuration = load_preprocessed(args.d, args.c, args.p)
    settings = read_settings(dataset_json, preprocessed_dataset_json_source(folder))
    return folder, dataset_json, settings, configuration


def _fold_training_cases(folder: Path, fold: str | None) -> list[str] | None:
    if fold is None:
        return None
    splits_file = folder / "splits_final.json"
    if not splits_file.is_file():
        raise FileNotFoundError(f"{splits_file}: no splits; train once (nnU-Net writes it) or omit -f.")
    splits = json.loads(splits_file.read_text(encoding="utf-8"))
    if not fold.isdigit() or int(fold) >= len(splits):
        raise ValueError(f"{splits_file}: fold {fold!r} does not exist ({len(splits)} folds).")
    return list(splits[int(fold)]["train"])


def run_synth_stats(args: argparse.Namespace) -> int:
    """``nnunet_mm synth-stats``: fit and store the tumour contrast statistics."""
    from tqdm import tqdm

    from nnunet_mm.io.staging import check_output
    from nnunet_mm.synthesis.settings import SYNTHESIS_KEY
    from nnunet_mm.synthesis.statistics import fit_tumour_statistics, preprocessed_cases, statistics_path

    folder, dataset_json, dataset_settings, configuration = preprocessed_dataset(args)
    output = Path(args.output) if args.output else statistics_path(folder, configuration.data_identifier)
    check_output(output, overwrite=args.overwrite)
    liver, tumour = dataset_settings.method(SYNTHESIS_KEY).resolve_labels(dataset_json["labels"],
                                                                           dataset_settings.source)
    cases = preprocessed_cases(folder / configuration.data_identifier, _fold_training_cases(folder, args.fold))
    phases = dataset_settings.multimodal.display_names(dataset_json["channel_names"])
    statistics = fit_tumour_statistics(tqdm(cases, desc="tumour statistics", unit="case", disable=None),
                                       phases, liver, tumour)
    statistics.save(output)
    print(statistics.summary())
    print(f"wrote {output}")
    return 0


def run_synth_preview(args: argparse.Namespace) -> int:
    """``nnunet_mm synth-preview``: the PNG grid of real and synthetic tumours."""
    import dataclasses

    import torch
    from tqdm import tqdm

    from nnunet_mm.io.staging import check_output
    from nnunet_mm.synthesis.handcrafted import HandcraftedSynthesizer
    from nnunet_mm.synthesis.settings import SYNTHESIS_KEY
    from nnunet_mm.synthesis.statistics import (TumourContrastStatistics, fit_tumour_statistics, preprocessed_cases,
                                                statistics_path)
    from nnunet_mm.synthesis.figures import (real_tumour_examples, save_synthesis_grid,
                                                    synthetic_tumour_examples)

    output = Path(args.output)
    check_output(output, overwrite=args.overwrite)
    folder, dataset_json, dataset_settings, configuration = preprocessed_dataset(args)
    device = torch_device(args.device)
    settings = dataset_settings.method(SYNTHESIS_KEY)
    if args.synthesizer:
        settings = dataclasses.replace(settings, synthesizer=args.synthesizer)
    liver, tumour = settings.resolve_labels(dataset_json["labels"], dataset_settings.source)
    phases = dataset_settings.multimodal.display_names(dataset_json["channel_names"])
    data_folder = folder / configuration.data_identifier
    if settings.synthesizer == "diffusion":
        from nnunet_mm.synthesis.latent_diffusion import (LatentDiffusionSynthesizer, configuration_record,
                                                          default_model_folder)
        synthesizer = LatentDiffusionSynthesizer.from_folder(
            Path(settings.model_folder) if settings.model_folder else default_model_folder(folder), device,
            configuration_record(args.c, configuration))
    else:
        stats_file = Path(settings.statistics_file) if settings.statistics_file else \
            statistics_path(folder, configuration.data_identifier)
        statistics = TumourContrastStatistics.load(stats_file) if stats_file.is_file() else \
            fit_tumour_statistics(tqdm(preprocessed_cases(data_folder), desc="tumour statistics (no "
                                       f"{stats_file.name} yet)", unit="case", disable=None), phases, liver, tumour)
        synthesizer = HandcraftedSynthesizer(statistics, configuration.spacing,
                                             texture_sigma_mm=settings.texture_sigma_mm,
                                             edge_sigma_voxels=settings.edge_sigma_voxels,
                                             contrast_jitter=settings.contrast_jitter)
    real = real_tumour_examples(preprocessed_cases(data_folder), tumour, args.num_examples)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    synthetic = synthetic_tumour_examples(preprocessed_cases(data_folder), synthesizer, settings.masks,
                                          configuration.spacing, liver, args.num_examples, generator)
    partial = output.with_name(f".{output.stem}.{os.getpid()}.png")
    save_synthesis_grid(real, synthetic, phases, partial)
    os.replace(partial, output)
    print(f"wrote {output} ({len(real)} real, {len(synthetic)} synthetic tumours)")
    return 0


def run_keep_tumours_in_liver(args: argparse.Namespace) -> int:
    """``nnunet_mm keep-tumours-in-liver``: post-process every segmentation of a folder into a new folder."""
    import shutil

    import numpy as np
    import SimpleITK as sitk
    from tqdm import tqdm

    from nnunet_mm.io.images import write_image
    from nnunet_mm.io.staging import staged_dataset
    from nnunet_mm.settings import read_settings
    from nnunet_mm.synthesis.liver_postprocessing import keep_tumours_in_liver
    from nnunet_mm.synthesis.settings import SYNTHESIS_KEY

    source, target = Path(args.input), Path(args.output)
    if not source.is_dir():
        raise FileNotFoundError(f"{source} is not a folder.")
    dataset_file = source / "dataset.json"
    dataset_json = json.loads(dataset_file.read_text(encoding="utf-8")) if dataset_file.is_file() else {}
    ending = args.file_ending or dataset_json.get("file_ending", ".nii.gz")
    if args.liver_label is not None and args.tumour_label is not None:
        liver, tumour = args.liver_label, args.tumour_label
    elif dataset_json:
        liver, tumour = read_settings(dataset_json, str(dataset_file)).method(SYNTHESIS_KEY).resolve_labels(
            dataset_json["labels"], str(dataset_file))
        liver = args.liver_label if args.liver_label is not None else liver
        tumour = args.tumour_label if args.tumour_label is not None else tumour
    else:
        raise ValueError(f"{dataset_file} not found; pass --liver-label and --tumour-label.")
    files = sorted(p for p in source.iterdir() if p.name.endswith(ending) and p.is_file())
    if not files:
        raise FileNotFoundError(f"{source}: no segmentation files ending in {ending}.")
    removed_total = 0
    with staged_dataset(target, overwrite=args.overwrite, sources=[source]) as staging:
        for path in tqdm(files, desc="keep tumours in liver", unit="case", disable=None):
            try:
                image = sitk.ReadImage(str(path))
            except RuntimeError as error:
                raise ValueError(f"{path}: cannot be read as an image ({str(error).strip()[:200]}).") from None
            cleaned, removed = keep_tumours_in_liver(sitk.GetArrayFromImage(image), liver, tumour)
            removed_total += removed
            out = sitk.GetImageFromArray(cleaned.astype(np.uint8 if cleaned.max() < 256 else np.int32))
            out.CopyInformation(image)
            write_image(out, staging / path.name)
        for extra in ("dataset.json", "plans.json"):
            if (source / extra).is_file():
                shutil.copyfile(source / extra, staging / extra)
    print(f"wrote {len(files)} segmentation(s) to {target}; removed {removed_total} tumour component(s) outside the "
          f"liver (liver label {liver}, tumour label {tumour})")
    return 0
