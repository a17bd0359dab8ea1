"""Unlabeled cases for semi-supervised training: find them in the raw dataset and preprocess them like the labeled ones.

nnU-Net knows only labeled training cases: fingerprinting, ``verify_dataset_integrity``, the CV splits and
validation all need a label file, and an all-ignore label would distort the CT normalisation and the loss. So the
unlabeled images live beside the labeled ones, in a folder nnU-Net does not read (docs/nnunet_notes.md §3.4):

* **Raw:** ``<nnUNet_raw>/DatasetXXX_Name/imagesUnl/{case}_{XXXX}{file_ending}``, one file per channel of
  ``channel_names`` exactly as in ``imagesTr``, no labels. Another folder can be named by the block's
  ``unlabeled_dir`` key (:mod:`nnunet_mm.cmc.settings`, relative to the raw dataset folder); the unlabeled folder is
  always that key's value, ``imagesUnl`` when it is absent. Unlabeled case ids must differ from the labeled ones.
* **Preprocessed:** after ``nnUNetv2_plan_and_preprocess``, :func:`preprocess_unlabeled` runs the configuration's own
  preprocessor on every unlabeled case (transpose, nonzero crop, normalisation with the *labeled* fingerprint's
  intensity statistics, resampling) and writes ``<nnUNet_preprocessed>/DatasetXXX_Name/<data_identifier>_unlabeled/``
  in nnU-Net's blosc2 format: ``case.b2nd`` (float32 ``(C, X, Y, Z)``), ``case_seg.b2nd`` (int16 nonzero mask, 0
  inside and -1 outside the crop; not a label) and ``case.pkl`` whose ``class_locations`` is empty, so
  ``nnUNetDataLoader`` crops at random. The labeled ``<data_identifier>/`` folder is never written; re-running
  replaces the unlabeled folder as a whole::

      nnunet_mm preprocess-unlabeled -d 500 -c 3d_fullres

A trainer loads them with ``nnUNetDatasetBlosc2(unlabeled_folder(self.preprocessed_dataset_folder_base,
self.configuration_manager.data_identifier))`` and an ``nnUNetDataLoader`` with ``oversample_foreground_percent=0``.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from nnunet_mm.cmc.settings import UNLABELED_DIR_KEY
from nnunet_mm.io.images import verify_image_file
from nnunet_mm.io.raw_dataset import available_channel_files, case_channel_files
from nnunet_mm.settings import BLOCK_KEY, read_settings

logger = logging.getLogger(__name__)

UNLABELED_SUFFIX = "_unlabeled"
_MAX_LISTED_PROBLEMS = 20


def unlabeled_folder(preprocessed_dataset_folder_base: Path | str, data_identifier: str) -> Path:
    """``<preprocessed dataset folder>/<data_identifier>_unlabeled``: where a configuration's unlabeled cases go.

    Args:
        preprocessed_dataset_folder_base: ``<nnUNet_preprocessed>/DatasetXXX_Name`` (a trainer's
            ``preprocessed_dataset_folder_base``).
        data_identifier: the configuration's ``data_identifier``, e.g. ``nnUNetPlans_3d_fullres``.
    """
    return Path(preprocessed_dataset_folder_base) / f"{data_identifier}{UNLABELED_SUFFIX}"


def _raise_problems(problems: list[str], summary: str) -> None:
    if not problems:
        return
    listed = problems[:_MAX_LISTED_PROBLEMS]
    if len(problems) > len(listed):
        listed.append(f"... and {len(problems) - len(listed)} more")
    raise ValueError(summary + "\n  " + "\n  ".join(listed))


def _labeled_case_files(raw_dataset_folder: Path, dataset_json: Mapping[str, Any]) -> dict[str, Path]:
    """``{case: one image file}`` of every labeled training case (``dataset`` key or ``imagesTr``)."""
    if "dataset" in dataset_json:
        return {case: raw_dataset_folder / entry["images"][0] for case, entry in dataset_json["dataset"].items()}
    images = raw_dataset_folder / "imagesTr"
    if not images.is_dir():
        return {}
    return {case: next(iter(channels.values()))
            for case, channels in available_channel_files(images, dataset_json["file_ending"], None).items()}


def unlabeled_cases(raw_dataset_folder: Path | str, dataset_json: Mapping[str, Any]) -> dict[str, list[Path]]:
    """The unlabeled cases a raw dataset declares (see the module docstring for the layout).

    The folder is the block's ``unlabeled_dir``, relative to the raw dataset folder (``imagesUnl`` when the key is
    absent).

    Args:
        raw_dataset_folder: ``<nnUNet_raw>/DatasetXXX_Name``.
        dataset_json: its dataset.json (read from ``raw_dataset_folder``; messages name that file).

    Returns:
        ``{case: [file of channel 0, file of channel 1, ...]}``, sorted by case.

    Raises:
        FileNotFoundError: the folder does not exist (the message says how to provide or declare it).
        ValueError: an invalid block (e.g. ``unlabeled_dir`` not a relative folder name); the folder has no images;
            a file is misnamed or a case lacks a channel; an unlabeled case id is also a labeled training case
            (naming both files).
        KeyError: an unknown key in the block.
    """
    raw_dataset_folder = Path(raw_dataset_folder)
    dataset_json_file = raw_dataset_folder / "dataset.json"
    file_ending = dataset_json["file_ending"]
    settings = read_settings(dataset_json, str(dataset_json_file))
    folder_name = settings.method(UNLABELED_DIR_KEY)
    folder = raw_dataset_folder / folder_name
    if not folder.is_dir():
        how = (f"it is declared by '{BLOCK_KEY}': {{'{UNLABELED_DIR_KEY}': {folder_name!r}}} in {dataset_json_file}; "
               f"create it or fix the key" if settings.is_set(UNLABELED_DIR_KEY) else
               f"put the unlabeled images there as CASE_XXXX{file_ending} (one file per channel, as in imagesTr), "
               f"or name another folder with '{BLOCK_KEY}': {{'{UNLABELED_DIR_KEY}': 'FOLDER'}} in "
               f"{dataset_json_file}")
        raise FileNotFoundError(f"{folder}: unlabeled image folder not found; {how}.")
    cases = case_channel_files(folder, file_ending, settings.multimodal.num_channels,
                               phase_names=settings.multimodal.phase_names, refuse_other_files=True)
    if not cases:
        raise ValueError(f"{folder}: no unlabeled images (expected CASE_XXXX{file_ending} files).")
    labeled = _labeled_case_files(raw_dataset_folder, dataset_json)
    clashes = [f"{cases[case][0]} and {labeled[case]}" for case in cases if case in labeled]
    _raise_problems(clashes, f"{folder}: {len(clashes)} unlabeled case id(s) are also labeled training cases; "
                             f"rename the unlabeled case(s) (an id must name one case):")
    bad = []
    for files in cases.values():  # nnU-Net's reader would preprocess a cut file as zeros and NaN as it is
        for file in files:
            try:
                verify_image_file(file)
            except ValueError as error:
                bad.append(str(error))
    _raise_problems(bad, f"{folder}: {len(bad)} unlabeled image file(s) are incomplete, corrupt or hold NaN/inf:")
    return cases


def _preprocess_case(case: tuple[str, list[str]], *, plans_file: str, configuration: str, dataset_json: dict,
                     output_folder: str) -> tuple[int, ...]:
    """Preprocess one unlabeled case and save it; returns its preprocessed spatial shape."""
    from nnunetv2.training.dataloading.nnunet_dataset import comp_blosc2_params, nnUNetDatasetBlosc2
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    identifier, images = case
    plans_manager = PlansManager(plans_file)
    configuration_manager = plans_manager.get_configuration(configuration)
    preprocessor = configuration_manager.preprocessor_class(verbose=False)
    data, seg, properties = preprocessor.run_case(images, None, plans_manager, configuration_manager, dataset_json)
    properties["class_locations"] = {}  # nnUNetDataLoader indexes it unconditionally; empty means random crops
    data = data.astype(np.float32, copy=False)
    seg = seg.astype(np.int16, copy=False)
    patch = tuple(configuration_manager.patch_size)
    block_data, chunk_data = comp_blosc2_params(data.shape, patch, data.itemsize)
    block_seg, chunk_seg = comp_blosc2_params(seg.shape, patch, seg.itemsize)
    nnUNetDatasetBlosc2.save_case(data, seg, properties, str(Path(output_folder) / identifier), chunks=chunk_data,
                                  blocks=block_data, chunks_seg=chunk_seg, blocks_seg=block_seg)
    return tuple(data.shape[1:])


def preprocess_unlabeled(dataset: str | int, configuration: str = "3d_fullres", plans_identifier: str = "nnUNetPlans",
                         num_processes: int = 1) -> Path:
    """Preprocess the dataset's unlabeled cases for one configuration (see the module docstring).

    Args:
        dataset: dataset id or name (``500`` or ``"Dataset500_Name"``), found through ``nnUNet_raw``.
        configuration: a configuration of the plans, e.g. ``3d_fullres``.
        plans_identifier: the plans file name without ``.json``.
        num_processes: cases preprocessed in parallel.

    Returns:
        The folder ``<nnUNet_preprocessed>/DatasetXXX_Name/<data_identifier>_unlabeled``.

    Raises:
        FileNotFoundError: the plans do not exist yet (run nnUNetv2_plan_and_preprocess first), or the unlabeled
            image folder is missing.
        ValueError: the configuration is not in the plans, or a problem with the unlabeled images (see
            :func:`unlabeled_cases`).
    """
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_mm.conversion.runner import map_cases
    from nnunet_mm.io.staging import staged_dataset

    dataset_name = maybe_convert_to_dataset_name(dataset)
    raw = Path(nnUNet_raw) / dataset_name
    plans_file = Path(nnUNet_preprocessed) / dataset_name / f"{plans_identifier}.json"
    if not plans_file.is_file():
        raise FileNotFoundError(f"{plans_file}: no plans; run nnUNetv2_plan_and_preprocess -d {dataset} (with -c "
                                f"{configuration}) before preprocessing the unlabeled cases.")
    plans_manager = PlansManager(str(plans_file))
    if configuration not in plans_manager.available_configurations:
        raise ValueError(f"{plans_file}: no configuration {configuration!r}; the plans have "
                         f"{plans_manager.available_configurations}.")
    dataset_json = load_json(str(raw / "dataset.json"))
    cases = unlabeled_cases(raw, dataset_json)
    output = unlabeled_folder(plans_file.parent, plans_manager.get_configuration(configuration).data_identifier)
    with staged_dataset(output, overwrite=True) as staging:  # a finished folder or none, never a mix of two runs
        worker = partial(_preprocess_case, plans_file=str(plans_file), configuration=configuration,
                         dataset_json=dataset_json, output_folder=str(staging))
        items = [(case, [str(f) for f in files]) for case, files in cases.items()]
        shapes = map_cases(worker, items, num_processes=num_processes,
                           description=f"{dataset_name} {configuration} unlabeled")
    logger.info("%s: preprocessed %d unlabeled case(s) for %s into %s (shapes %s)", dataset_name, len(cases),
                configuration, output, sorted(set(shapes)))
    return output
