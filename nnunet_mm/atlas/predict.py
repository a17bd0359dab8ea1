"""Atlas priors for new cases at prediction time, made exactly as ``nnunet_mm mas`` made them for training.

A model trained on a dataset written by ``nnunet_mm mas`` (:class:`nnunet_mm.atlas.trainer.MASPriorTrainer`) takes
prior channels after its image channels. nnU-Net copies the dataset's dataset.json into the model folder, and with
it the ``"mas_priors"`` recipe of the plugin's settings block (:class:`nnunet_mm.atlas.settings.MASPriorRecipe`): the
atlas dataset and the SHA-256 of every atlas file, K, the registration backend and its settings, the fusion, the
classes that have a prior channel. :func:`prepare_atlas_priors` reads it and, for every case of a prediction's input
folder that lacks its prior files, registers the same atlases with the same settings and fuses them with the same
function (:func:`nnunet_mm.atlas.mas.make_case_priors`), so a case nobody saw before gets the priors it would have
got had it been in the dataset.

Where the priors go: ``<output folder>/atlas_priors/`` holds the prior files (nnU-Net naming, the image's grid), one
QA PNG per case (``qa/<case>.png``), ``atlas_priors.json`` (per case: the recipe's and the target file's SHA-256,
the atlases, seconds per pair) and the cache of warped atlases. A second run reuses a case's priors when recipe and
target file are unchanged, and registers nothing.

Where the atlases come from: the folder the recipe records (absolute path), every file checked against its
SHA-256; a moved atlas dataset is found with ``--atlas DIR`` (checked the same way), a missing or changed one is
refused naming the file. They are not copied into the model folder: nnU-Net's model folder is what
``nnUNetv2_export_model_to_zip`` ships, and atlases are patient images that a model may be shared without.

``--priors zeros`` skips registration: every prior channel is zero, exactly what prior dropout feeds the network in
training (:func:`nnunet_mm.atlas.prior_augmentation.drop_priors`, applied after nnU-Net's preprocessing by
:func:`nnunet_mm.inference.missing_channels.predict_with_missing_channels`).

:func:`atlas_prior_channels` hands all this to the core predictor as its
:class:`~nnunet_mm.inference.missing_channels.DerivedChannels` (``nnunet_mm predict`` asks for it).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PRIORS_DIR = "atlas_priors"
PRIORS_RECORD = "atlas_priors.json"
PRIOR_MODES = ("atlas", "zeros")


def zero_priors(prior_channels: Sequence[int]):
    """A filler of one preprocessed case ``(C, *spatial)`` that zeroes ``prior_channels`` exactly as prior dropout
    (:func:`~nnunet_mm.atlas.prior_augmentation.drop_priors` with p = 1) does in training."""
    import numpy as np
    import torch

    from nnunet_mm.atlas.prior_augmentation import drop_priors

    channels = sorted(int(c) for c in prior_channels)

    def fill(data):
        batch, _ = drop_priors(torch.from_numpy(np.ascontiguousarray(data))[None], channels, 1.0)
        return batch[0].numpy()

    return fill


def atlas_prior_channels(model_folder: Path, *, mode: str = "atlas", atlas_dataset: Path | None = None,
                         device: str = "cpu", show_progress: bool = True):
    """The atlas prior channels of a trained model as :class:`~nnunet_mm.inference.missing_channels.DerivedChannels`
    for :func:`~nnunet_mm.inference.missing_channels.predict_with_missing_channels`, or None when the model has no
    prior channels. Arguments as :func:`prepare_atlas_priors`.

    Raises:
        ValueError: ``mode`` unknown; prior channels not named ``noNorm`` or not last (the model's dataset.json).
    """
    from nnunet_mm.atlas.prior_channels import prior_channel_indices
    from nnunet_mm.inference.missing_channels import DerivedChannels, model_dataset_json
    from nnunet_mm.settings import model_folder_dataset_json_source, read_settings

    if mode not in PRIOR_MODES:
        raise ValueError(f"priors must be one of {list(PRIOR_MODES)}, got {mode!r}.")
    dataset_json = model_dataset_json(Path(model_folder))
    source = model_folder_dataset_json_source(model_folder)
    channels = prior_channel_indices(read_settings(dataset_json, source), dataset_json["channel_names"])
    if not channels:
        return None

    def prepare(cases: dict[str, dict[int, Path]], output_folder: Path) -> dict[str, str]:
        return prepare_atlas_priors(dataset_json, source, cases, prior_channels=channels,
                                    output_folder=output_folder, mode=mode, atlas_dataset=atlas_dataset,
                                    device=device, show_progress=show_progress)

    return DerivedChannels("atlas prior", channels, prepare, zero_priors(channels),
                           {"priors": mode, "atlas_dataset": None if atlas_dataset is None else str(atlas_dataset)})


def prepare_atlas_priors(dataset_json: Mapping[str, Any], source: str, cases: dict[str, dict[int, Path]], *,
                         prior_channels: Sequence[int], output_folder: Path, mode: str = "atlas",
                         atlas_dataset: Path | None = None, device: str = "cpu", num_threads: int | None = None,
                         show_progress: bool = True) -> dict[str, str]:
    """Give every case of ``cases`` its prior files, or mark them for zero filling.

    Args:
        dataset_json: the model folder's dataset.json (with the ``"mas_priors"`` recipe).
        source: that file, for messages.
        cases: ``{case: {channel: file}}`` of the input folder; prior files made here are added to it.
        prior_channels: the model's prior channels (the last channels).
        output_folder: the prediction's output folder (priors go to ``<output_folder>/atlas_priors``).
        mode: ``"atlas"`` (register the recorded atlases where a case has no prior files) or ``"zeros"`` (no
            registration: prior channels filled as prior dropout drops them).
        atlas_dataset: where the atlas dataset is now, when it moved since ``nnunet_mm mas``.
        device: torch device of a learned backend.
        num_threads: SimpleITK threads (None: as recorded; threads do not change the result).

    Returns:
        Per case, where its priors come from: ``"given"`` (files in the input folder), ``"atlas"`` (registered
        now), ``"cached"`` (registered by an earlier run) or ``"zeros"``.

    Raises:
        ValueError: an unknown mode, a case with some but not all prior files, a model without a recipe, a
            recipe whose classes do not match the prior channels, a changed atlas, a registration that failed on
            a case's image (naming the files).
        FileNotFoundError: a missing atlas file or a case without the channel the atlases are registered to.
    """
    if mode not in PRIOR_MODES:
        raise ValueError(f"--priors {mode!r}: choose from {list(PRIOR_MODES)}.")
    file_ending = dataset_json["file_ending"]
    sources: dict[str, str] = {}
    to_compute = []
    for case, files in cases.items():
        present = [c for c in prior_channels if c in files]
        if present and len(present) < len(prior_channels):
            missing = [str(Path(files[present[0]]).parent / f"{case}_{c:04d}{file_ending}")
                       for c in prior_channels if c not in files]
            raise ValueError(f"case '{case}': prior file(s) {missing} missing while {len(present)} other prior "
                             f"channel(s) are given; give all prior channels {list(prior_channels)} or none.")
        if present:
            sources[case] = "given"
        elif mode == "zeros":
            sources[case] = "zeros"
        else:
            to_compute.append(case)
    if to_compute:
        sources.update(_atlas_priors(dataset_json, source, cases, to_compute, prior_channels=prior_channels,
                                     folder=Path(output_folder) / PRIORS_DIR, atlas_dataset=atlas_dataset,
                                     device=device, num_threads=num_threads, show_progress=show_progress))
    return {case: sources[case] for case in cases}


def _recipe(dataset_json: Mapping[str, Any], source: str, prior_channels: Sequence[int]):
    from nnunet_mm.atlas.settings import MAS_PRIORS_KEY
    from nnunet_mm.settings import read_settings

    recipe = read_settings(dataset_json, source).method(MAS_PRIORS_KEY)
    if recipe is None:
        raise ValueError(f"{source}: the model takes atlas prior channels {list(prior_channels)} but records no "
                         f"'mas_priors' recipe (its dataset was written before 'nnunet_mm mas' recorded one). Put the "
                         f"prior files (CASE_{prior_channels[0]:04d}{dataset_json['file_ending']} ...) into the input "
                         f"folder, rebuild the dataset with 'nnunet_mm mas' and retrain, or pass --priors zeros.")
    if len(recipe.prior_classes) != len(prior_channels):
        raise ValueError(f"{source}: 'mas_priors' lists {len(recipe.prior_classes)} prior class(es) "
                         f"{list(recipe.prior_classes)} for {len(prior_channels)} prior channel(s).")
    return recipe


def _atlas_priors(dataset_json: Mapping[str, Any], source: str, cases: dict[str, dict[int, Path]],
                  to_compute: list[str], *, prior_channels: Sequence[int], folder: Path, atlas_dataset: Path | None,
                  device: str, num_threads: int | None, show_progress: bool) -> dict[str, str]:
    """Register, fuse and write the priors of ``to_compute`` (reusing earlier runs' priors); updates ``cases``."""
    from tqdm import tqdm

    from nnunet_mm.atlas.mas import (check_atlases, file_sha256, make_case_priors, prior_file, recipe_backend,
                                     save_case_qa, select_atlases, write_prior_channels)
    from nnunet_mm.io.staging import atomic_file

    recipe = _recipe(dataset_json, source, prior_channels)
    recipe_digest = recipe.digest()
    file_ending = dataset_json["file_ending"]
    record_file = folder / PRIORS_RECORD
    record = json.loads(record_file.read_text(encoding="utf-8")) if record_file.is_file() else {}
    atlas_cases = select_atlases(recipe.atlas_cases, recipe.num_atlases)
    sources, pending = {}, []
    for case in to_compute:
        target_file = cases[case].get(recipe.target_channel)
        if target_file is None:
            raise FileNotFoundError(f"case '{case}': no channel {recipe.target_channel} "
                                    f"(CASE_{recipe.target_channel:04d}{file_ending}), the channel the atlases are "
                                    f"registered to ({source}: 'mas_priors'.target_channel).")
        entry = record.get(case, {})
        files = [prior_file(folder, case, c, file_ending) for c in prior_channels]
        if (entry.get("recipe_sha256") == recipe_digest and entry.get("target_sha256") == file_sha256(target_file)
                and all(f.is_file() for f in files)):
            sources[case] = "cached"
        else:
            pending.append(case)
        for channel, path in zip(prior_channels, files):
            cases[case][channel] = path
    if pending:
        atlas_folder = check_atlases(recipe, atlas_dataset, where=source)
        backend, simnet = recipe_backend(recipe, device=device, num_threads=num_threads)
        progress = tqdm(total=len(pending) * len(atlas_cases), desc="predict: atlas-target pairs", unit="pair",
                        disable=not show_progress)
        for case in pending:
            progress.set_postfix_str(case)
            target_file = cases[case][recipe.target_channel]
            try:
                case_priors = make_case_priors(recipe, target_file, atlas_folder, atlas_cases, backend=backend,
                                               simnet=simnet, cache_dir=folder / ".nnunet_mm_mas_cache",
                                               progress=progress)
            except RuntimeError as error:  # SimpleITK's optimiser failed on this image (e.g. no overlap)
                raise ValueError(f"case '{case}': {error}") from None
            # each prior file appears whole (write_image checks it); the record names a case only once all its
            # files are written, so an interrupted case is registered again
            write_prior_channels(case_priors, recipe, folder, case, first_channel=prior_channels[0],
                                 file_ending=file_ending)
            save_case_qa(folder / "qa" / f"{case}.png", case_priors, dataset_json["labels"],
                         f"{case}: {len(atlas_cases)} atlases, {recipe.fusion} (new case)")
            record[case] = {"recipe_sha256": recipe_digest, "target": str(target_file),
                            "target_sha256": file_sha256(target_file), "atlases": atlas_cases,
                            "seconds_per_pair": case_priors.seconds}
            with atomic_file(record_file) as partial:
                partial.write_text(json.dumps(record, indent=2), encoding="utf-8")
            sources[case] = "atlas"
        progress.close()
    logger.info("atlas priors in %s: %d registered, %d reused", folder, len(pending), len(to_compute) - len(pending))
    return sources
