"""Per-phase labels as extra segmentation channels, for trainers that supervise every phase (CMGTrainer).

Some datasets label every phase separately (MPTH keeps the arterial-phase masks, converter 501 writes them to
``labelsTr_phases/<case>_<channel:04d>.nii.gz`` and records ``phase_labels_dir`` in the ``'nnunet_mm'`` block).
nnU-Net preprocesses one label per case. This step adds a configuration ``<configuration>_phases`` (inheriting
everything from ``<configuration>``) whose preprocessed cases carry a segmentation with one channel per phase:

* seg channel 0 = the reference label (labelsTr, exactly what nnU-Net wrote; foreground sampling uses it);
* seg channels 1.. = the labels of the non-reference image channels, in channel order, cropped and resampled by
  nnU-Net's own preprocessor exactly like the reference label (a phase without a label file gets the reference
  label, and the summary says how many).

nnU-Net's data loader and augmentation carry extra seg channels through every spatial transform (the cascade uses
the same mechanism), so the phase labels stay aligned with their images. The plugin's trainers use seg channel 0
for the standard loss and validation; CMGTrainer uses the others as per-phase targets. The original configuration
and its preprocessed data are untouched::

    nnunet_mm phase-labels -d 501 -c 3d_fullres
    nnUNetv2_train 501 3d_fullres_phases 0 -tr CMGTrainer
"""
from __future__ import annotations

import logging
import shutil
from functools import partial
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SUFFIX = "_phases"


def _preprocess_case(case: tuple[str, list[str], str, list[str | None]], *, plans_file: str, configuration: str,
                     dataset_json: dict, output_folder: str) -> int:
    """Preprocess one case with its per-phase labels and save it; returns how many phases had their own label."""
    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    identifier, images, reference_label, phase_labels = case
    plans_manager = PlansManager(plans_file)
    configuration_manager = plans_manager.get_configuration(configuration)
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    data, reference_seg, properties = preprocessor.run_case(images, reference_label, plans_manager,
                                                            configuration_manager, dataset_json)
    channels = [reference_seg]
    for label_file in phase_labels:
        if label_file is None:
            channels.append(reference_seg)
            continue
        _, seg, _ = preprocessor.run_case(images, label_file, plans_manager, configuration_manager, dataset_json)
        if seg.shape != reference_seg.shape:
            raise ValueError(f"{label_file}: preprocessed to {seg.shape[1:]}, the reference label to "
                             f"{reference_seg.shape[1:]}; the phase label must lie on the reference grid.")
        channels.append(seg)
    seg = np.concatenate(channels).astype(np.int16, copy=False)
    data = data.astype(np.float32, copy=False)
    patch = tuple(configuration_manager.patch_size)
    block_data, chunk_data = comp_blosc2_params(data.shape, patch, data.itemsize)
    block_seg, chunk_seg = comp_blosc2_params(seg.shape, patch, seg.itemsize)
    nnUNetDatasetBlosc2.save_case(data, seg, properties, str(Path(output_folder) / identifier), chunks=chunk_data,
                                  blocks=block_data, chunks_seg=chunk_seg, blocks_seg=block_seg)
    return sum(f is not None for f in phase_labels)


def add_phase_label_configuration(dataset: str | int, configuration: str = "3d_fullres",
                                  plans_identifier: str = "nnUNetPlans", num_processes: int = 1) -> str:
    """Add ``<configuration>_phases`` to the plans and preprocess it (see the module docstring).

    Returns:
        The new configuration's name.

    Raises:
        ValueError: the dataset has no ``phase_labels_dir``, the folder is missing, a label file is on another grid.
        FileNotFoundError: the plans do not exist yet (run nnUNetv2_plan_and_preprocess first).
    """
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

    from nnunet_mm.cmg.settings import PHASE_LABELS_DIR_KEY
    from nnunet_mm.conversion.runner import map_cases
    from nnunet_mm.settings import BLOCK_KEY, read_settings

    dataset_name = maybe_convert_to_dataset_name(dataset)
    raw = Path(nnUNet_raw) / dataset_name
    dataset_json_file = raw / "dataset.json"
    dataset_json = load_json(str(dataset_json_file))
    dataset_settings = read_settings(dataset_json, str(dataset_json_file))
    settings = dataset_settings.multimodal
    phase_dir_name = dataset_settings.method(PHASE_LABELS_DIR_KEY)
    if phase_dir_name is None:
        raise ValueError(f"{dataset_json_file}: the '{BLOCK_KEY}' block names no '{PHASE_LABELS_DIR_KEY}'; this "
                         f"dataset has no per-phase labels.")
    phase_dir = raw / phase_dir_name
    if not phase_dir.is_dir():
        raise ValueError(f"{phase_dir}: per-phase label folder named in {dataset_json_file} "
                         f"('{BLOCK_KEY}'.{PHASE_LABELS_DIR_KEY}) does not exist.")
    plans_file = Path(nnUNet_preprocessed) / dataset_name / f"{plans_identifier}.json"
    if not plans_file.is_file():
        raise FileNotFoundError(f"{plans_file}: no plans; run nnUNetv2_plan_and_preprocess -d {dataset} first.")
    plans = load_json(str(plans_file))
    if configuration not in plans["configurations"]:
        raise ValueError(f"{plans_file}: no configuration {configuration!r}; have {list(plans['configurations'])}.")
    name = configuration + SUFFIX
    plans["configurations"][name] = {"inherits_from": configuration,
                                     "data_identifier": f"{plans_identifier}_{name}"}
    save_json(plans, str(plans_file), sort_keys=False)

    output = plans_file.parent / f"{plans_identifier}_{name}"
    if output.exists():  # as nnU-Net's preprocessor: a rerun replaces the configuration's data (blosc2 will not
        shutil.rmtree(output)  # write over an existing case file)
    output.mkdir()
    ending = dataset_json["file_ending"]
    others = [c for c in range(settings.num_channels) if c != settings.reference_channel]
    cases = []
    for identifier, files in get_filenames_of_train_images_and_targets(str(raw), dataset_json).items():
        phase_files = [phase_dir / f"{identifier}_{c:04d}{ending}" for c in others]
        cases.append((identifier, files["images"], files["label"],
                      [str(f) if f.is_file() else None for f in phase_files]))
    worker = partial(_preprocess_case, plans_file=str(plans_file), configuration=name, dataset_json=dataset_json,
                     output_folder=str(output))
    # a bar over the cases (each runs nnU-Net's preprocessor once per labelled phase), hidden off a terminal
    found = map_cases(worker, cases, num_processes=num_processes, description=f"phase-labels {dataset_name} {name}")
    logger.info("%s: %d case(s), %d of %d phase label(s) from %s (the rest copy the reference label)", name,
                len(cases), sum(found), len(cases) * len(others), phase_dir)
    return name
