"""``nnunet_mm mas``: multi-atlas prior channels for every case of a target dataset, written as a new raw dataset.

For each target case (``imagesTr`` and ``imagesTs``) K atlases of an atlas dataset (labelled, usually another
modality) are registered to the target's reference channel (:mod:`nnunet_mm.atlas.registration`, or the learned
BiRegNet of :mod:`nnunet_mm.atlas.learned`), their labels are warped, fused (:mod:`nnunet_mm.atlas.fusion`), and the
fused probability of every foreground class is appended as an extra input channel named ``noNorm``
(:mod:`nnunet_mm.atlas.prior_channels`). The new dataset holds the target's own files (copied, never modified),
the prior channels, a dataset.json whose ``'nnunet_mm'`` block marks the priors and records how they were made
(``channel_acquisition`` is the target's, or ``"co_registered"`` for a single-channel target, whose priors lie on
its grid), a QA PNG per case (``nnunet_mm_qa/<case>.png``) and ``nnunet_mm_qa/mas_summary.json`` (seconds per
atlas-target pair, Dice of the fused label against the target label where the target has one) and a
``splits_final.json``: the target's own, else folds over its training cases
(:func:`nnunet_mm.io.splits.cross_validation_splits`: nnU-Net's 5-fold split with 5 or more cases, one fold per
case with 2-4, where nnU-Net's default split would fail).
Stock ``nnUNetv2_predict`` on the new dataset's ``imagesTs`` then sees the same channels as training.

K is checked before any registration: more atlases than the atlas dataset has (less the target case itself when
atlas and target are one dataset) is refused, and the K used is what the dataset.json and summary record.

Warped atlases are cached per (atlas, target, method, settings) in a cache folder, so a second run with another
fusion method or more cases registers nothing twice. The output is staged and renamed into place at the end.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import SimpleITK as sitk

from nnunet_mm.atlas.fusion import FUSION_METHODS, fused_label, locally_weighted_vote, majority_vote, staple, \
    weighted_vote
from nnunet_mm.atlas.prior_channels import PRIOR_CHANNEL_NAME, prior_channel_indices, prior_modality
from nnunet_mm.atlas.registration import RegistrationSettings, register_atlas, warp_image, warp_label_probabilities
from nnunet_mm.evaluation.metrics import defined_or_none, dice
from nnunet_mm.io.images import write_image
from nnunet_mm.io.raw_dataset import RawDataset, open_raw_dataset
from nnunet_mm.io.splits import SPLITS_FILE, write_splits
from nnunet_mm.settings import BLOCK_KEY, DatasetSettings, block_of, read_settings

logger = logging.getLogger(__name__)

REGISTRATION_BACKENDS = ("simpleitk", "learned")
QA_DIR = "nnunet_mm_qa"
DEFAULT_NUM_ATLASES = 5


@dataclass
class WarpedAtlas:
    """One atlas on the target grid: class probabilities (C, *spatial) and the warped atlas image (*spatial)."""

    probabilities: np.ndarray
    image: np.ndarray


class PairRegistration(Protocol):
    """A registration backend: warps one atlas (image + label) onto one target image."""

    def cache_key(self) -> dict[str, Any]:
        """Everything that changes the result (method, settings, model weights' hash)."""

    def warp(self, target: sitk.Image, atlas_image: sitk.Image, atlas_label: sitk.Image,
             num_classes: int) -> WarpedAtlas:
        """The atlas warped onto the target grid."""


class SimpleITKRegistration:
    """Mutual-information rigid → affine → B-spline registration (:func:`register_atlas`)."""

    def __init__(self, settings: RegistrationSettings = RegistrationSettings()):
        self.settings = settings

    def cache_key(self) -> dict[str, Any]:
        return {"backend": "simpleitk", **self.settings.to_dict()}

    def warp(self, target: sitk.Image, atlas_image: sitk.Image, atlas_label: sitk.Image,
             num_classes: int) -> WarpedAtlas:
        transform = register_atlas(target, atlas_image, self.settings)
        return WarpedAtlas(warp_label_probabilities(atlas_label, target, transform, num_classes),
                           warp_image(atlas_image, target, transform))


@dataclass(frozen=True)
class MASSettings:
    """What ``nnunet_mm mas`` does.

    Attributes:
        num_atlases: K, atlases per target (evenly spread over the sorted atlas cases). None:
            :data:`DEFAULT_NUM_ATLASES`, or every atlas when there are fewer; a number larger than the atlases
            available is refused by :func:`build_mas_dataset`.
        fusion: one of :data:`nnunet_mm.atlas.fusion.FUSION_METHODS`.
        target_channel: channel of the target dataset registered to (default: its reference channel).
        atlas_channel: channel of the atlas dataset used for registration.
        local_sigma_voxels / local_power: window and sharpness of locally weighted voting.
    """

    num_atlases: int | None = None
    fusion: str = "majority"
    target_channel: int | None = None
    atlas_channel: int = 0
    local_sigma_voxels: float = 2.0
    local_power: float = 2.0

    def __post_init__(self) -> None:
        if self.fusion not in FUSION_METHODS:
            raise ValueError(f"unknown fusion {self.fusion!r}; choose from {list(FUSION_METHODS)}.")
        if self.num_atlases is not None and self.num_atlases < 1:
            raise ValueError(f"num_atlases must be >= 1, got {self.num_atlases}.")


def select_atlases(cases: Sequence[str], num_atlases: int) -> list[str]:
    """``num_atlases`` cases spread evenly over the sorted list (all of them if there are fewer)."""
    cases = sorted(cases)
    if len(cases) <= num_atlases:
        return cases
    positions = np.linspace(0, len(cases) - 1, num_atlases).round().astype(int)
    return [cases[i] for i in positions]


def atlases_per_target(requested: int | None, available: int, atlas_folder: Path, *, same_dataset: bool) -> int:
    """K, the number of atlases registered to each target: ``requested``, or :data:`DEFAULT_NUM_ATLASES` capped
    at the ``available`` atlases when None.

    Raises:
        ValueError: no atlas is available, or more are requested than available (before any registration).
    """
    excluded = " other than the case itself" if same_dataset else ""
    if available < 1:
        raise ValueError(f"{atlas_folder}: no atlas case{excluded}; add labelled atlas cases.")
    if requested is None:
        return min(DEFAULT_NUM_ATLASES, available)
    if requested > available:
        raise ValueError(f"num_atlases (-k) {requested}: {atlas_folder / 'imagesTr'} has {available} atlas case(s)"
                         f"{excluded} for each target; pass -k {available} or fewer, or add atlas cases.")
    return requested


def _file_identity(path: Path) -> list:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _cached_warp(cache_dir: Path | None, backend: PairRegistration, target_file: Path, atlas_image_file: Path,
                 atlas_label_file: Path, num_classes: int) -> tuple[WarpedAtlas, float | None]:
    """The warped atlas from the cache, or registered now (seconds returned; None for a cache hit)."""
    key = hashlib.sha256(json.dumps([backend.cache_key(), _file_identity(target_file),
                                     _file_identity(atlas_image_file), _file_identity(atlas_label_file),
                                     num_classes], sort_keys=True).encode()).hexdigest()[:32]
    cache_file = cache_dir / f"{key}.npz" if cache_dir is not None else None
    if cache_file is not None and cache_file.is_file():
        with np.load(cache_file) as stored:
            return WarpedAtlas(stored["probabilities"].astype(np.float32), stored["image"]), None
    from nnunet_mm.io.images import read_image

    target = read_image(target_file)
    atlas_image, atlas_label = read_image(atlas_image_file), read_image(atlas_label_file)
    start = time.perf_counter()
    try:
        warped = backend.warp(target, atlas_image, atlas_label, num_classes)
    except ValueError as error:
        raise ValueError(f"{atlas_label_file} → {target_file}: {error}") from None
    except RuntimeError as error:
        raise RuntimeError(f"registering {atlas_image_file} to {target_file}: {error}") from None
    seconds = time.perf_counter() - start
    if cache_file is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_name(f".{cache_file.name}.{os.getpid()}.tmp.npz")
        np.savez_compressed(partial, probabilities=warped.probabilities.astype(np.float16), image=warped.image)
        os.replace(partial, cache_file)
    return warped, seconds


def fuse(settings: MASSettings, warped: Sequence[WarpedAtlas], target: np.ndarray, simnet: Any = None) -> np.ndarray:
    """Fuse warped atlases with ``settings.fusion``; (C, *spatial) probabilities."""
    probabilities = np.stack([w.probabilities for w in warped])
    if settings.fusion == "majority":
        return majority_vote(probabilities)
    if settings.fusion == "staple":
        return staple(probabilities)
    if settings.fusion == "local":
        return locally_weighted_vote(probabilities, target, np.stack([w.image for w in warped]),
                                     sigma_voxels=settings.local_sigma_voxels, power=settings.local_power)
    if simnet is None:
        raise ValueError("fusion 'simnet' needs a trained SimNet (nnunet_mm mas-train, then --model DIR).")
    return weighted_vote(probabilities, simnet.similarity(target, probabilities))


def _check_compatible(target: RawDataset, target_settings: DatasetSettings, atlases: RawDataset,
                      settings: MASSettings) -> None:
    if target.dataset_json["labels"] != atlases.dataset_json["labels"]:
        raise ValueError(f"{atlases.folder / 'dataset.json'}: labels {atlases.dataset_json['labels']} differ from "
                         f"{target.folder / 'dataset.json'}: {target.dataset_json['labels']}; atlas and target "
                         f"datasets must share one label map.")
    if any(isinstance(v, (list, tuple)) for v in target.dataset_json["labels"].values()):
        raise ValueError(f"{target.folder / 'dataset.json'}: region-based labels are not supported by 'mas'.")
    if prior_channel_indices(target_settings, target.dataset_json["channel_names"]):
        raise ValueError(f"{target_settings.source}: the target dataset already has prior channels.")
    if not atlases.training_cases:
        raise ValueError(f"{atlases.folder / 'imagesTr'}: no atlas cases (files CASE_0000{atlases.file_ending}).")
    if not 0 <= settings.atlas_channel < atlases.num_channels:
        raise ValueError(f"atlas channel {settings.atlas_channel} does not exist in {atlases.folder} "
                         f"({atlases.num_channels} channels).")
    missing = [str(atlases.label_file(c)) for c in atlases.training_cases if not atlases.label_file(c).is_file()]
    if missing:
        raise FileNotFoundError(f"atlas label(s) missing: {missing}")


def _output_dataset_json(target: RawDataset, target_settings: DatasetSettings, atlases: RawDataset,
                         backend: PairRegistration, settings: MASSettings, name: str) -> dict[str, Any]:
    labels = target.dataset_json["labels"]
    class_names = [n for n, v in sorted(labels.items(), key=lambda item: item[1]) if v != 0 and n != "ignore"]
    num_images = target.num_channels
    channel_names = dict(target.dataset_json["channel_names"])
    block = copy.deepcopy(dict(block_of(target.dataset_json, target_settings.source)))
    modalities = {str(c): m for c, m in target_settings.description.modalities.items()}
    for offset, class_name in enumerate(class_names):
        channel = str(num_images + offset)
        channel_names[channel] = PRIOR_CHANNEL_NAME
        modalities[channel] = prior_modality(class_name)
    block["modalities"] = modalities
    if num_images == 1:
        # one image and priors computed on its grid: aligned by construction (so a plain MultiModalTrainer never
        # shifts or drops a prior); a multi-channel target keeps its own declaration, which is about its images
        block["channel_acquisition"] = "co_registered"
    phase_names = target_settings.multimodal.phase_names
    if phase_names:
        block["phase_names"] = list(phase_names) + [f"prior_{c}" for c in class_names]
    block["registration"] = {"method": "multi-atlas label fusion", "atlas_dataset": atlases.folder.name,
                             "target_channel": settings.target_channel, "atlas_channel": settings.atlas_channel,
                             "num_atlases": settings.num_atlases, "fusion": settings.fusion,
                             **backend.cache_key()}
    block["source"] = str(target.folder.resolve())
    block["notes"] = [*target_settings.description.notes,
                      f"channels {num_images}..{len(channel_names) - 1}: fused atlas prior probability per "
                      f"foreground class ({', '.join(class_names)}), written by 'nnunet_mm mas'"]
    return {"channel_names": channel_names, "labels": labels, "numTraining": target.dataset_json["numTraining"],
            "file_ending": target.file_ending, "name": name, BLOCK_KEY: block}


def _write_splits(target: RawDataset, staging: Path) -> None:
    """The target's ``splits_final.json`` if it has one, else :func:`~nnunet_mm.io.splits.cross_validation_splits` over its training
    cases (MASPriorTrainer copies it into the preprocessed folder)."""
    if (target.folder / SPLITS_FILE).is_file():
        shutil.copyfile(target.folder / SPLITS_FILE, staging / SPLITS_FILE)
    elif target.training_cases:
        splits = write_splits(staging, target.training_cases)
        logger.info("%s: %d fold(s) over %d training case(s)", SPLITS_FILE, len(splits), len(target.training_cases))


def _write_prior(prior: np.ndarray, reference: sitk.Image, path: Path) -> None:
    image = sitk.GetImageFromArray(prior.astype(np.float32))
    image.CopyInformation(reference)
    write_image(image, path, compress=path.name.endswith(".gz"))


def _dice_per_class(truth: np.ndarray, prediction: np.ndarray, num_classes: int) -> dict[str, float | None]:
    """Dice of each foreground class for the JSON summary (``null`` where neither label map has the class)."""
    return {str(k): defined_or_none(dice(truth == k, prediction == k)) for k in range(1, num_classes)}


def build_mas_dataset(target_dataset: int | str | Path, atlas_dataset: int | str | Path, *, output_id: int,
                      output_name: str | None = None, settings: MASSettings = MASSettings(),
                      backend: PairRegistration | None = None, simnet: Any = None,
                      output_root: Path | None = None, cache_dir: Path | None = None, overwrite: bool = False,
                      show_progress: bool = True) -> Path:
    """Write ``Dataset<output_id>_<name>``: the target dataset plus fused atlas prior channels.

    Args:
        target_dataset: id, name or folder of the target raw dataset (its images are read, never changed).
        atlas_dataset: id, name or folder of the labelled atlas dataset (may be the target dataset itself: a case
            is then never its own atlas).
        output_id: id of the new dataset.
        output_name: name after the id (default: the target's name + ``_MASPrior``).
        settings: number of atlases, fusion, channels.
        backend: registration backend (default: :class:`SimpleITKRegistration` with default settings).
        simnet: a trained SimNet (:class:`nnunet_mm.atlas.learned.SimNetFusion`) for ``fusion="simnet"``.
        output_root: folder of the new dataset (default ``$nnUNet_raw``).
        cache_dir: cache of warped atlases (default ``<output_root>/.nnunet_mm_mas_cache``).
        overwrite: replace an existing output dataset.
        show_progress: tqdm bar over atlas-target pairs.

    Returns:
        The new dataset folder.

    Raises:
        FileExistsError: the output exists and ``overwrite`` is False (checked before any registration).
        FileNotFoundError / ValueError: missing or incompatible inputs, naming the file; a bad output id or name,
            another dataset with the output id, or an output overlapping an input
            (:func:`nnunet_mm.io.new_dataset_folder`, :func:`nnunet_mm.io.check_output`).
    """
    from tqdm import tqdm

    from nnunet_mm.io.staging import new_dataset_folder, staged_dataset

    target, atlases = open_raw_dataset(target_dataset), open_raw_dataset(atlas_dataset)
    target_settings = read_settings(target.dataset_json, str(target.folder / "dataset.json"))
    _check_compatible(target, target_settings, atlases, settings)
    backend = backend or SimpleITKRegistration()
    reference_channel = target_settings.multimodal.reference_channel
    target_channel = reference_channel if settings.target_channel is None else settings.target_channel
    if not 0 <= target_channel < target.num_channels:
        raise ValueError(f"target channel {target_channel} does not exist in {target.folder} "
                         f"({target.num_channels} channels).")
    name = output_name or f"{target.folder.name.split('_', 1)[-1]}_MASPrior"
    final_dir = new_dataset_folder(output_id, name, output_root=output_root)
    cache_dir = cache_dir if cache_dir is not None else final_dir.parent / ".nnunet_mm_mas_cache"
    num_classes = max(int(v) for v in target.dataset_json["labels"].values()
                      if not isinstance(v, (list, tuple))) + 1
    if "ignore" in target.dataset_json["labels"]:
        num_classes -= 1
    same_dataset = target.folder.resolve() == atlases.folder.resolve()
    jobs = [(case, "Tr") for case in target.training_cases] + [(case, "Ts") for case in target.test_cases]
    if not jobs:
        raise ValueError(f"{target.folder}: no target cases in imagesTr or imagesTs.")
    candidates = {case: [a for a in atlases.training_cases if not (same_dataset and a == case)] for case, _ in jobs}
    num_atlases = atlases_per_target(settings.num_atlases, min(len(c) for c in candidates.values()), atlases.folder,
                                     same_dataset=same_dataset)
    atlas_lists = {case: select_atlases(candidates[case], num_atlases) for case, _ in jobs}
    used = MASSettings(**{**settings.__dict__, "num_atlases": num_atlases, "target_channel": target_channel})
    summary: dict[str, Any] = {"settings": dict(used.__dict__), "backend": backend.cache_key(), "cases": {}}
    with staged_dataset(final_dir, overwrite=overwrite, sources=[target.folder, atlases.folder]) as staging:
        dataset_json = _output_dataset_json(target, target_settings, atlases, backend, used, final_dir.name)
        read_settings(dataset_json, str(final_dir / "dataset.json"))
        (staging / "dataset.json").write_text(json.dumps(dataset_json, indent=4))
        _write_splits(target, staging)
        progress = tqdm(total=sum(len(a) for a in atlas_lists.values()), desc="mas: atlas-target pairs",
                        unit="pair", disable=not show_progress)
        for case, split in jobs:
            case_summary = _process_case(case, split, target, atlases, atlas_lists[case], target_channel, backend,
                                         simnet, settings, num_classes, cache_dir, staging, progress)
            summary["cases"][case] = case_summary
        progress.close()
        seconds = [s for c in summary["cases"].values() for s in c["seconds_per_pair"] if s is not None]
        summary["mean_seconds_per_pair"] = float(np.mean(seconds)) if seconds else None
        summary["cache_hits"] = sum(s is None for c in summary["cases"].values() for s in c["seconds_per_pair"])
        (staging / QA_DIR / "mas_summary.json").write_text(json.dumps(summary, indent=2))
    logger.info("wrote %s (%d cases, %s s per registered pair)", final_dir, len(jobs),
                summary["mean_seconds_per_pair"])
    return final_dir


def _process_case(case: str, split: str, target: RawDataset, atlases: RawDataset, atlas_cases: list[str],
                  target_channel: int, backend: PairRegistration, simnet: Any, settings: MASSettings,
                  num_classes: int, cache_dir: Path, staging: Path, progress: Any) -> dict[str, Any]:
    """Register, fuse and write one case; returns its summary entry."""
    from nnunet_mm.atlas.qa import save_mas_figure
    from nnunet_mm.io.images import read_image

    target_file = target.image_file(case, target_channel, split)
    reference = read_image(target_file)
    target_array = sitk.GetArrayFromImage(reference).astype(np.float32)
    warped, seconds = [], []
    for atlas_case in atlas_cases:
        result, elapsed = _cached_warp(cache_dir, backend, target_file,
                                       atlases.image_file(atlas_case, settings.atlas_channel),
                                       atlases.label_file(atlas_case), num_classes)
        warped.append(result)
        seconds.append(elapsed)
        progress.set_postfix_str(case)
        progress.update()
    prior = fuse(settings, warped, target_array, simnet)
    images_dir, labels_dir = staging / f"images{split}", staging / f"labels{split}"
    images_dir.mkdir(exist_ok=True)
    for channel in range(target.num_channels):
        shutil.copyfile(target.image_file(case, channel, split), images_dir / target.image_file(case, channel).name)
    for offset in range(1, num_classes):
        _write_prior(prior[offset], reference,
                     images_dir / f"{case}_{target.num_channels + offset - 1:04d}{target.file_ending}")
    entry: dict[str, Any] = {"split": split, "atlases": atlas_cases, "seconds_per_pair": seconds}
    if target.label_file(case, split).is_file():
        labels_dir.mkdir(exist_ok=True)
        shutil.copyfile(target.label_file(case, split), labels_dir / target.label_file(case).name)
        truth = sitk.GetArrayFromImage(read_image(target.label_file(case, split)))
        fused = fused_label(prior)
        entry["fused_dice"] = _dice_per_class(truth, fused, num_classes)
        entry["atlas_dice"] = [_dice_per_class(truth, w.probabilities.argmax(0), num_classes)
                               for w in warped]
    save_mas_figure(staging / QA_DIR / f"{case}.png", target_array, np.stack([w.image for w in warped]),
                    np.stack([w.probabilities.argmax(0) for w in warped]), prior,
                    title=f"{case}: {len(warped)} atlases, {settings.fusion}",
                    class_names=[name for name, value in sorted(target.dataset_json["labels"].items(),
                                                                key=lambda item: item[1]) if name != "ignore"])
    return entry
