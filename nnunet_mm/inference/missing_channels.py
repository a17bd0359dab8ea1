"""Predict cases that lack some input channels, filling them the way the model was trained.

nnU-Net's predictor needs every channel of every case. A :class:`~nnunet_mm.training.MultiModalTrainer` model was
trained with modality dropout, which replaces non-reference channels *after* nnU-Net's normalisation by a copy of a
present channel (``"duplicate"``) or by zeros (``"zeros"``). To reproduce exactly that at inference:

1. the missing channel files are stood in for by the reference channel's file, so reading, cropping to the non-zero
   region and resampling behave as for a complete case;
2. nnU-Net's own preprocessor (the one named in the plans) normalises the case;
3. the missing channels are then overwritten in normalised space by a copy of the reference channel or by zeros,
   according to the ``modality_dropout.mode`` recorded in the model's dataset.json;
4. nnU-Net's predictor runs the sliding window (with its mirroring and all folds) and exports the segmentation.

The reference channel (the one the label belongs to) can never be missing: the function refuses such cases and
names the file it looked for. A ``missing_channels.json`` in the output folder records what was filled per case.

Channels that a method derives from the images (atlas priors, :mod:`nnunet_mm.atlas.predict`) come as a
:class:`DerivedChannels` from that method: it makes their missing files before prediction, and fills them, when it
makes none, the way its training dropped them; they are never filled with a copy of an image channel, whatever the
modality dropout mode. (This module knows no method: ``nnunet_mm predict`` asks each method for its derived
channels.)
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from nnunet_mm.augment import fill_missing_channels
from nnunet_mm.io.raw_dataset import available_channel_files
from nnunet_mm.io.staging import atomic_file
from nnunet_mm.settings import MultiModalSettings, model_folder_dataset_json_source, read_settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DerivedChannels:
    """Input channels a method derives from a case's images (e.g. atlas priors), always the model's last channels.

    Attributes:
        name: what they are, for messages (e.g. ``"atlas prior"``).
        channels: their sorted indices.
        prepare: ``prepare(cases, output_folder)`` makes the missing files it can (adding them to ``cases``, a
            ``{case: {channel: file}}`` dict) and returns, per case, where its derived channels come from.
        fill: fills every derived channel of one preprocessed case ``(C, *spatial)`` the way training dropped
            them (used for cases that have none after ``prepare``).
        arguments: recorded in ``predict_from_raw_data_args.json``.
    """

    name: str
    channels: list[int]
    prepare: Callable[[dict[str, dict[int, Path]], Path], dict[str, str]]
    fill: Callable[[np.ndarray], np.ndarray]
    arguments: dict[str, Any] = field(default_factory=dict)
REPORT_NAME = "missing_channels.json"
STAGING_PREFIX = ".nnunet_mm_predicting_"  # hidden folder in the output folder that predictions are written to


def plan_available_channels(cases: dict[str, dict[int, Path]], *, num_channels: int, reference_channel: int,
                            available: Sequence[int] | None, input_folder: Path, file_ending: str
                            ) -> dict[str, list[int]]:
    """Which channels each case provides.

    Args:
        cases: ``{case: {channel: file}}`` of the input folder
            (:func:`nnunet_mm.io.raw_dataset.available_channel_files`).
        available: channels every case must provide (others are ignored even if present); None uses whatever files
            each case has.

    Raises:
        FileNotFoundError: ``cases`` is empty (the input folder holds no image).
        ValueError: the reference channel is not available, or a requested channel's file is missing (every
            problem is listed, each naming the file).
    """
    if not cases:
        raise FileNotFoundError(f"{input_folder}: no files named CASE_XXXX{file_ending}.")
    problems = []
    if available is not None:
        available = sorted(set(int(c) for c in available))
        out_of_range = [c for c in available if not 0 <= c < num_channels]
        if out_of_range:
            raise ValueError(f"--available {out_of_range}: channel indices must be in [0, {num_channels - 1}].")
        if reference_channel not in available:
            raise ValueError(f"--available {available} does not include the reference channel {reference_channel}; "
                             f"the model cannot predict without it.")
    plan = {}
    for case, files in cases.items():
        wanted = available if available is not None else sorted(files)
        missing_files = [c for c in wanted if c not in files]
        for channel in missing_files:
            problems.append(f"{Path(input_folder) / f'{case}_{channel:04d}{file_ending}'}: file not found "
                            f"(channel {channel} was declared available).")
        if reference_channel not in files:
            problems.append(f"{Path(input_folder) / f'{case}_{reference_channel:04d}{file_ending}'}: reference "
                            f"channel {reference_channel} is missing; the model cannot predict case '{case}' "
                            f"without it.")
        plan[case] = [c for c in wanted if c in files]
    if problems:
        raise ValueError("\n".join(problems))
    return plan


def fill_preprocessed_case(data: np.ndarray, available: Sequence[int], mode: str, *, reference_channel: int,
                           derived: DerivedChannels | None = None) -> np.ndarray:
    """Fill the missing channels of one preprocessed case ``(C, *spatial)`` as training replaced them: missing image
    channels by the modality dropout ``mode`` (:func:`~nnunet_mm.augment.fill_missing_channels`, among the image
    channels), missing ``derived`` channels by ``derived.fill`` (never by an image).

    Raises:
        ValueError: some but not all derived channels missing (training dropped them together).
    """
    derived_channels = sorted(int(c) for c in derived.channels) if derived is not None else []
    missing = [c for c in range(data.shape[0]) if c not in available]
    if not missing:
        return data
    num_images = derived_channels[0] if derived_channels else data.shape[0]
    if any(c < num_images for c in missing):
        filled_images = fill_missing_channels(data[:num_images], [c for c in available if c < num_images], mode,
                                              reference_channel=reference_channel)
        data = np.concatenate([filled_images, data[num_images:]])
    missing_derived = [c for c in missing if c in derived_channels]
    if missing_derived:
        if missing_derived != derived_channels:
            given = sorted(set(derived_channels) - set(missing_derived))
            raise ValueError(f"{derived.name} channels {missing_derived} missing but {given} given; training drops "
                             f"all {derived.name} channels together, so give all or none.")
        data = derived.fill(data)
    return data


def _preprocessed_cases(predictor, cases: dict[str, dict[int, Path]], plan: dict[str, list[int]],
                        settings: MultiModalSettings, mode: str, output_folder: Path,
                        derived: DerivedChannels | None = None) -> Iterator[dict]:
    """Yield what ``nnUNetPredictor.predict_from_data_iterator`` consumes, one case at a time."""
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    reference = settings.reference_channel
    for case, available in plan.items():
        files = [str(cases[case][c] if c in available else cases[case][reference])
                 for c in range(settings.num_channels)]
        data, _, properties = preprocessor.run_case(files, None, predictor.plans_manager,
                                                    predictor.configuration_manager, predictor.dataset_json)
        data = fill_preprocessed_case(data, available, mode, reference_channel=reference, derived=derived)
        yield {"data": torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)),
               "data_properties": properties, "ofile": str(output_folder / case)}


def verify_input_files(cases: dict[str, dict[int, Path]], plan: dict[str, list[int]], *,
                       allow_non_finite: bool = False) -> dict[str, dict[int, int]]:
    """Refuse cut or corrupt input files, images of more than three dimensions and (unless ``allow_non_finite``)
    NaN/inf voxels before predicting (nnU-Net's reader would predict from zero-filled or NaN-propagating data and
    exit 0, or stop with a traceback); every problem is listed, each naming its file.

    Returns:
        ``{case: {channel: number of NaN/inf voxels}}`` for the files that hold any (only with ``allow_non_finite``).

    Raises:
        ValueError: one or more input files are incomplete, corrupt, of the wrong dimensionality or non-finite.
    """
    import SimpleITK as sitk

    from nnunet_mm.io.images import non_finite_mask, verify_image_file

    problems = []
    non_finite: dict[str, dict[int, int]] = {}
    for case, channels in plan.items():
        sizes: dict[int, tuple[int, ...]] = {}
        for channel in channels:
            file = cases[case][channel]
            try:
                verify_image_file(file, check_finite=not allow_non_finite)
                header = sitk.ImageFileReader()
                header.SetFileName(str(file))
                header.ReadImageInformation()
                if header.GetDimension() > 3:
                    raise ValueError(f"{file}: a {header.GetDimension()}-D image of size {header.GetSize()}; nnU-Net "
                                     f"takes one 2-D or 3-D image per channel (CASE_XXXX files).")
                sizes[channel] = tuple(header.GetSize())
                if allow_non_finite:
                    count = int(non_finite_mask(file, sitk.ReadImage(str(file))).sum())
                    if count:
                        non_finite.setdefault(case, {})[channel] = count
            except (ValueError, RuntimeError) as error:
                problems.append(str(error) if isinstance(error, ValueError) else f"{file}: cannot read image "
                                f"header: {str(error).strip().splitlines()[-1]}")
        if len(set(sizes.values())) > 1:
            problems.append(f"case '{case}': its channel files differ in size ("
                            + ", ".join(f"{cases[case][c].name} {'x'.join(map(str, s))}" for c, s in sizes.items())
                            + "); nnU-Net needs every channel of a case on one grid (resample them onto the reference "
                              "channel first, e.g. with the 511 converter).")
    if problems:
        raise ValueError("\n".join(problems))
    return non_finite


def _write_finite_copies(cases: dict[str, dict[int, Path]], non_finite: dict[str, dict[int, int]],
                         folder: Path) -> dict[str, dict]:
    """Write a copy of every file with NaN/inf voxels into ``folder``, those voxels set to the image's lowest finite
    value; ``cases`` is updated to point at the copies. Returns the record of each case's replacements."""
    from nnunet_mm.io.images import replace_non_finite, write_image

    record: dict[str, dict] = {}
    for case, channels in non_finite.items():
        for channel in channels:
            original = cases[case][channel]
            image, count, value = replace_non_finite(original)
            copy = write_image(image, folder / original.name)
            cases[case][channel] = copy
            record.setdefault(case, {})[str(channel)] = {"file": str(original), "voxels": count, "value": value}
            logger.warning("%s: %d NaN/inf voxel(s) replaced by %g (--replace-non-finite)", original, count, value)
    return record


def _write_prediction_records(folder: Path, predictor, arguments: dict) -> None:
    """What ``nnUNetv2_predict`` writes beside its predictions, so that nnU-Net's tools (``nnUNetv2_ensemble``,
    ``nnUNetv2_apply_postprocessing``, ``nnUNetv2_evaluate_folder -djfile -pfile``) accept the folder:
    ``dataset.json`` and ``plans.json`` of the model, and the arguments in ``predict_from_raw_data_args.json`` (nnU-Net's
    keys where they apply, plus this command's)."""
    for name, content in (("dataset.json", predictor.dataset_json), ("plans.json", predictor.plans_manager.plans),
                          ("predict_from_raw_data_args.json", arguments)):
        (folder / name).write_text(json.dumps(content, indent=4), encoding="utf-8")


def model_dataset_json(model_folder: Path) -> dict:
    """The dataset.json nnU-Net saved in a trained model folder (read before the model is loaded).

    Raises:
        FileNotFoundError: ``model_folder`` or its dataset.json is missing (not a trained model folder).
        ValueError: the dataset.json is not valid JSON or has no ``file_ending``.
    """
    file = model_folder / "dataset.json"
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file; {model_folder} is not a trained nnU-Net model folder "
                                f"(<Trainer>__<plans>__<configuration> in nnUNet_results).")
    try:
        dataset_json = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{file}: not valid JSON ({error}).") from None
    if "file_ending" not in dataset_json:
        raise ValueError(f"{file}: no 'file_ending'; not the dataset.json of an nnU-Net model.")
    return dataset_json


def _model_folds(model_folder: Path, folds: Sequence[int | str] | None) -> list[str]:
    """The folds nnU-Net's predictor will load (``None``: every ``fold_*`` folder, as nnU-Net finds them)."""
    if folds is not None:
        return [str(f) for f in folds]
    return sorted(p.name[len("fold_"):] for p in Path(model_folder).glob("fold_*") if p.is_dir())


def predict_with_missing_channels(input_folder: Path, output_folder: Path, model_folder: Path, *,
                                  folds: Sequence[int | str] | None = (0,),
                                  checkpoint_name: str = "checkpoint_final.pth",
                                  available: Sequence[int] | None = None,
                                  device: torch.device = torch.device("cuda"),
                                  tile_step_size: float = 0.5, use_mirroring: bool = True,
                                  save_probabilities: bool = False, num_processes_export: int = 1,
                                  allow_tqdm: bool = True, replace_non_finite: bool = False,
                                  derived: DerivedChannels | None = None) -> dict[str, dict]:
    """Predict every case of ``input_folder`` with the model in ``model_folder``, filling missing channels.

    Args:
        input_folder: nnU-Net-style inputs ``{case}_{XXXX}{file_ending}``; cases may lack non-reference channels.
        output_folder: where segmentations (and ``missing_channels.json``) are written; they are predicted into a
            hidden staging folder inside it and each renamed into place when all are done, so a killed run leaves
            no cut file (its staging folder is deleted by the next run).
        model_folder: ``nnUNet_results/DatasetXXX/<Trainer>__<plans>__<configuration>``.
        folds: folds to ensemble (None: every fold found).
        available: channels every case provides; None: detect per case from the files present.
        num_processes_export: spawn workers for resampling and export (nnU-Net's ``-nps``).
        replace_non_finite: instead of refusing input files with NaN/inf voxels, predict from copies with those
            voxels set to the image's lowest finite value; recorded per case under ``"non_finite_replaced"``.
        derived: the model's derived channels (e.g. atlas priors, from
            :func:`nnunet_mm.atlas.predict.atlas_prior_channels`); None for a model without any. They are prepared
            before the model loads and never filled with an image.

    Returns:
        Per case: ``{"available": [...], "filled": [...], "fill_mode": ...}`` (with ``derived``: also
        ``"derived"``, where its derived channels came from, e.g. ``"given"``, ``"atlas"``, ``"cached"``,
        ``"zeros"``) (with ``replace_non_finite``, also
        ``"non_finite_replaced": {channel: {"file", "voxels", "value"}}`` for the files that had any; also written to
        ``missing_channels.json``).

    Raises:
        ValueError: a case lacks the reference channel, a declared channel file is missing, or an input file is
            cut, corrupt, not 2-D/3-D or holds NaN/inf voxels (:func:`verify_input_files`); a checkpoint is cut or
            holds objects other than data (:func:`nnunet_mm.io.safe_load.verify_model_folder`, checked before
            nnU-Net loads it with ``weights_only=False``).
        FileNotFoundError: a fold's checkpoint is missing.
    """
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_mm.io.safe_load import verify_model_folder

    output_folder = Path(output_folder)
    # everything that can be checked is checked before the model is loaded: the model folder's dataset.json, the
    # input files, then the checkpoints (without running code from them)
    dataset_json = model_dataset_json(Path(model_folder))
    source = model_folder_dataset_json_source(model_folder)
    dataset_settings = read_settings(dataset_json, source)
    settings = dataset_settings.multimodal
    derived_channels = list(derived.channels) if derived is not None else []
    file_ending = dataset_json["file_ending"]
    cases = available_channel_files(input_folder, file_ending, settings.num_channels, source="the model")
    if derived_channels:  # image channels are planned here, derived channels by their method below
        image_files = {case: {c: f for c, f in files.items() if c not in derived_channels}
                       for case, files in cases.items()}
        image_available = None if available is None else [c for c in available if c not in derived_channels]
    else:
        image_files, image_available = cases, available
    plan = plan_available_channels(image_files, num_channels=settings.num_channels,
                                   reference_channel=settings.reference_channel, available=image_available,
                                   input_folder=Path(input_folder), file_ending=file_ending)
    non_finite = verify_input_files(cases, plan, allow_non_finite=replace_non_finite)
    verify_model_folder(Path(model_folder), _model_folds(model_folder, folds), checkpoint_name)
    derived_sources = {}
    if derived is not None:
        derived_sources = derived.prepare(cases, output_folder)
        given = {case: [c for c in derived_channels if c in cases[case]] for case in plan}
        verify_input_files(cases, {case: channels for case, channels in given.items() if channels})
        plan = {case: sorted(channels + given[case]) for case, channels in plan.items()}
    predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_mirroring=use_mirroring, device=device,
                                allow_tqdm=allow_tqdm)
    predictor.initialize_from_trained_model_folder(str(model_folder), folds, checkpoint_name)
    mode = settings.modality_dropout.mode
    trained_with_dropout = settings.augmentation_decision().modality_dropout
    num_images = derived_channels[0] if derived_channels else settings.num_channels
    if not trained_with_dropout and any(len([c for c in a if c < num_images]) < num_images for a in plan.values()):
        logger.warning("%s: the model was trained without modality dropout; filling missing channels with mode "
                       "'%s' may degrade the prediction.", model_folder, mode)
    report = {case: {"available": available_channels,
                     "filled": [c for c in range(settings.num_channels) if c not in available_channels],
                     "fill_mode": mode} for case, available_channels in plan.items()}
    for case, derived_source in derived_sources.items():
        report[case]["derived"] = derived_source
    arguments = {
        "list_of_lists_or_source_folder": str(input_folder),
        "output_folder_or_list_of_truncated_output_files": str(output_folder),
        "save_probabilities": save_probabilities, "overwrite": True,
        "num_processes_segmentation_export": max(1, num_processes_export),
        "folder_with_segs_from_prev_stage": None, "num_parts": 1, "part_id": 0,
        "predicted_by": "nnunet_mm predict", "model_folder": str(model_folder),
        "folds": None if folds is None else [str(f) for f in folds], "checkpoint_name": checkpoint_name,
        "tile_step_size": tile_step_size, "use_mirroring": use_mirroring,
        "available": None if available is None else sorted(int(c) for c in available),
        "replace_non_finite": replace_non_finite, **(derived.arguments if derived is not None else {})}
    try:
        _predict_into(output_folder, predictor, cases, plan, settings, mode, non_finite, report, arguments, derived)
    except OSError as error:
        if error.filename is None and error.strerror:  # e.g. a full disk during nnU-Net's export: name the folder
            raise OSError(error.errno, error.strerror, str(output_folder)) from None
        raise
    return report


def _predict_into(output_folder: Path, predictor, cases: dict[str, dict[int, Path]], plan: dict[str, list[int]],
                  settings: MultiModalSettings, mode: str, non_finite: dict[str, dict[int, int]], report: dict,
                  arguments: dict, derived: DerivedChannels | None = None) -> None:
    """Predict into a hidden staging folder inside ``output_folder`` (finite copies of inputs with NaN/inf there
    too), write nnU-Net's records beside the predictions, then rename each file into ``output_folder``."""
    import tempfile

    output_folder.mkdir(parents=True, exist_ok=True)
    for stale in output_folder.glob(f"{STAGING_PREFIX}*"):  # left by a killed run
        logger.warning("deleting %s, left by an interrupted prediction", stale)
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=output_folder) as staging:
        staging = Path(staging)
        for case, replaced in _write_finite_copies(cases, non_finite, staging / "finite_inputs").items():
            report[case]["non_finite_replaced"] = replaced
        predicted = staging / "predicted"
        predicted.mkdir()
        predictor.predict_from_data_iterator(
            _preprocessed_cases(predictor, cases, plan, settings, mode, predicted, derived),
            save_probabilities=arguments["save_probabilities"],
            num_processes_segmentation_export=arguments["num_processes_segmentation_export"])
        _write_prediction_records(predicted, predictor, arguments)
        for file in sorted(predicted.iterdir()):  # each output appears whole (a kill never leaves a cut file)
            os.replace(file, output_folder / file.name)
    with atomic_file(output_folder / REPORT_NAME) as partial:
        partial.write_text(json.dumps(report, indent=2), encoding="utf-8")
