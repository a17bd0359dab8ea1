"""``nnunet_mm mas``: multi-atlas prior channels for every case of a target dataset, written as a new raw dataset.

For each target case (``imagesTr`` and ``imagesTs``) K atlases of an atlas dataset (labelled, usually another
modality) are registered to the target's reference channel (:mod:`nnunet_mm.atlas.registration`, or the learned
BiRegNet of :mod:`nnunet_mm.atlas.learned`), their labels are warped, fused (:mod:`nnunet_mm.atlas.fusion`), and the
fused probability of every *prior class* is appended as an extra input channel named ``noNorm``
(:mod:`nnunet_mm.atlas.prior_channels`). Prior classes (:func:`choose_prior_classes`): the foreground classes that
every atlas labels, lesions excepted (a tumour's position belongs to its own patient: the atlases' tumours carry no
information about the target's), or the classes named with ``--prior-classes``.

The new dataset holds the target's own files (copied, never modified), the prior channels, a dataset.json whose
``'nnunet_mm'`` block marks the priors and records how they were made: ``"mas_priors"``
(:class:`nnunet_mm.atlas.settings.MASPriorRecipe`: atlas folder and the SHA-256 of each atlas file, K, backend and
its settings, fusion, prior classes), which ``nnunet_mm predict`` reads from a model folder's copy to make the same
priors for new cases (:mod:`nnunet_mm.atlas.predict`), and ``channel_acquisition`` (the target's, or
``"co_registered"`` for a single-channel target, whose priors lie on its grid). Also a QA PNG per case
(``nnunet_mm_qa/<case>.png``), ``nnunet_mm_qa/mas_summary.json`` (seconds per atlas-target pair, Dice of the fused
label against the target label where the target has one) and a ``splits_final.json``: the target's own, else folds
over its training cases (:func:`nnunet_mm.io.splits.cross_validation_splits`: nnU-Net's 5-fold split with 5 or more
cases, one fold per case with 2-4, where nnU-Net's default split would fail); ``nnunet_mm mas-train --fold F`` trains
the learned networks on the training cases of fold F of this same split (:func:`target_splits`).

One implementation: :func:`make_case_priors` (register the case's atlases, fuse) and :func:`write_prior_channels`
(the prior files on the image's grid) make the priors of a dataset's cases here and of new cases at prediction time.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import SimpleITK as sitk

from nnunet_mm.atlas.fusion import FUSION_METHODS, fused_label, locally_weighted_vote, majority_vote, staple, \
    weighted_vote
from nnunet_mm.atlas.prior_channels import PRIOR_CHANNEL_NAME, prior_channel_indices, prior_modality
from nnunet_mm.atlas.registration import RegistrationSettings, register_atlas, warp_image, warp_label_probabilities
from nnunet_mm.atlas.settings import MAS_PRIORS_KEY, MASPriorRecipe
from nnunet_mm.evaluation.metrics import defined_or_none, dice
from nnunet_mm.io.images import write_image
from nnunet_mm.io.raw_dataset import RawDataset, open_raw_dataset
from nnunet_mm.io.splits import SPLITS_FILE, write_splits
from nnunet_mm.settings import BLOCK_KEY, DatasetSettings, block_of, read_settings

logger = logging.getLogger(__name__)

REGISTRATION_BACKENDS = ("simpleitk", "learned")
QA_DIR = "nnunet_mm_qa"
DEFAULT_NUM_ATLASES = 5
#: class names that mark a lesion: its position is the patient's own, so another patient's atlas says nothing about
#: where the target's is (fused tumour Dice <= 0.02 on the phantoms); such a class gets a prior channel only when
#: asked for (``--prior-classes``)
LESION_NAME_PARTS = ("tumor", "tumour", "lesion", "metasta", "cancer", "carcinoma", "cyst", "nodule")


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


def fuse(settings: MASSettings, warped: Sequence[WarpedAtlas], target: np.ndarray, simnet: Any = None,
         reference: sitk.Image | None = None) -> np.ndarray:
    """Fuse warped atlases with ``settings.fusion``; (C, *spatial) probabilities (``reference``: the target image
    whose grid ``target`` is, which SimNet needs for its orientation)."""
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
    return weighted_vote(probabilities, simnet.similarity(target, probabilities, reference=reference))


def foreground_classes(labels: Mapping[str, Any]) -> dict[str, int]:
    """``{name: value}`` of the foreground classes of a dataset.json ``labels`` map, by value (no background, no
    ignore label)."""
    return {name: int(value) for name, value in sorted(labels.items(), key=lambda item: item[1])
            if int(value) != 0 and name != "ignore"}


def choose_prior_classes(labels: Mapping[str, Any], atlas_label_files: Sequence[Path],
                         requested: Sequence[str] | None = None) -> dict[str, int]:
    """The classes that get a prior channel, ``{name: value}`` in label order.

    Default (``requested`` None): every foreground class that *every* atlas labels, except lesions
    (:data:`LESION_NAME_PARTS` in the name): an atlas carries information about a structure only when it labels
    it, and a lesion's position belongs to its own patient. ``requested`` names the classes explicitly (a lesion
    class too).

    Raises:
        ValueError: a requested name that is not a class (the classes are listed), or no class left.
    """
    classes = foreground_classes(labels)
    if requested is not None:
        unknown = [name for name in requested if name not in classes]
        if unknown or not requested:
            raise ValueError(f"--prior-classes {','.join(requested) or '(none)'}: {unknown or 'no class'} not "
                             f"among the foreground classes {list(classes)} of dataset.json 'labels'.")
        return {name: value for name, value in classes.items() if name in requested}
    from nnunet_mm.io.images import read_image

    labelled_everywhere = set(classes.values())
    for label_file in atlas_label_files:
        labelled_everywhere &= set(np.unique(sitk.GetArrayViewFromImage(read_image(label_file))).tolist())
    chosen = {name: value for name, value in classes.items()
              if value in labelled_everywhere and not any(part in name.lower() for part in LESION_NAME_PARTS)}
    skipped = sorted(set(classes) - set(chosen))
    if skipped:
        logger.info("no prior channel for %s (a lesion, or not labelled in every atlas); pass --prior-classes to "
                    "ask for one", skipped)
    if not chosen:
        raise ValueError(f"no foreground class of {list(classes)} is labelled in every atlas "
                         f"({len(atlas_label_files)} label files) and is not a lesion; name the classes with "
                         f"--prior-classes.")
    return chosen


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes: how atlas files, learned weights and prediction inputs are recognised."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_recipe(atlases: RawDataset, settings: MASSettings, backend: PairRegistration, simnet: Any, *,
                num_classes: int, prior_classes: Mapping[str, int]) -> MASPriorRecipe:
    """What :func:`build_mas_dataset` records (``settings`` with K and the target channel resolved)."""
    atlas_files = {}
    for case in atlases.training_cases:
        image, label = atlases.image_file(case, settings.atlas_channel), atlases.label_file(case)
        atlas_files[case] = {"image": str(image.relative_to(atlases.folder)), "image_sha256": file_sha256(image),
                             "label": str(label.relative_to(atlases.folder)), "label_sha256": file_sha256(label)}
    registration = dict(backend.cache_key())
    if getattr(backend, "model_dir", None) is not None:
        registration["model"] = str(Path(backend.model_dir).resolve())
    learned_cases = getattr(backend, "training_cases", None) if registration["backend"] == "learned" else None
    if settings.fusion == "simnet" and simnet is not None and learned_cases is None:
        learned_cases = getattr(simnet, "training_cases", None)
    simnet_model = getattr(simnet, "model_dir", None) if settings.fusion == "simnet" else None
    return MASPriorRecipe(
        atlas_dataset=str(atlases.folder.resolve()), atlas_channel=settings.atlas_channel, atlas_files=atlas_files,
        target_channel=int(settings.target_channel), num_atlases=int(settings.num_atlases), fusion=settings.fusion,
        local_sigma_voxels=settings.local_sigma_voxels, local_power=settings.local_power, num_classes=num_classes,
        prior_classes=dict(prior_classes), registration=registration,
        simnet_model=None if simnet_model is None else str(Path(simnet_model).resolve()),
        learned_training_cases=None if learned_cases is None else tuple(learned_cases))


def recipe_settings(recipe: MASPriorRecipe) -> MASSettings:
    """The :class:`MASSettings` a recipe records."""
    return MASSettings(num_atlases=recipe.num_atlases, fusion=recipe.fusion, target_channel=recipe.target_channel,
                       atlas_channel=recipe.atlas_channel, local_sigma_voxels=recipe.local_sigma_voxels,
                       local_power=recipe.local_power)


def check_atlases(recipe: MASPriorRecipe, atlas_dataset: Path | None = None, *, where: str = "dataset.json") -> Path:
    """The atlas dataset folder of ``recipe`` (or ``atlas_dataset``, where the atlases were moved to), every recorded
    atlas image and label present and unchanged (SHA-256).

    Raises:
        FileNotFoundError: an atlas file is missing, naming it and the recipe's ``where``.
        ValueError: an atlas file differs from the one the priors were made with.
    """
    folder = Path(atlas_dataset) if atlas_dataset is not None else Path(recipe.atlas_dataset)
    moved = "" if atlas_dataset is not None else " (if the atlas dataset moved, pass its new folder with --atlas)"
    for case, files in recipe.atlas_files.items():
        for kind in ("image", "label"):
            path = folder / files[kind]
            if not path.is_file():
                raise FileNotFoundError(f"{path}: atlas {kind} of '{case}' not found; {where} records that its "
                                        f"priors were made with the atlases of {recipe.atlas_dataset}{moved}.")
            if file_sha256(path) != files[f"{kind}_sha256"]:
                raise ValueError(f"{path}: atlas {kind} of '{case}' differs from the file the priors of {where} were "
                                 f"made with (SHA-256); restore the original atlas, or rebuild the dataset with "
                                 f"'nnunet_mm mas' and retrain.")
    return folder


def recipe_backend(recipe: MASPriorRecipe, *, device: str = "cpu", num_threads: int | None = None
                   ) -> tuple[PairRegistration, Any]:
    """The registration backend and SimNet (or None) a recipe records, ready to make priors.

    Args:
        num_threads: SimpleITK threads (None: as recorded); threads do not change the result.

    Raises:
        FileNotFoundError: a learned model folder that is gone, naming it.
        ValueError: a learned model whose weights differ from the recorded ones.
    """
    registration = dict(recipe.registration)
    simnet = None
    if registration["backend"] == "simpleitk":
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in registration.items() if k != "backend"}
        if num_threads is not None:
            values["num_threads"] = num_threads
        backend: PairRegistration = SimpleITKRegistration(RegistrationSettings(**values))
    else:
        from nnunet_mm.atlas.learned import load_learned_mas

        if not Path(registration.get("model", "")).is_dir():
            raise FileNotFoundError(f"{registration.get('model')}: the learned MAS model folder the priors were made "
                                    f"with is gone; restore it there (its weights are checked), or rebuild the "
                                    f"dataset and retrain.")
        backend, simnet = load_learned_mas(Path(registration["model"]), device=device)
        if backend.cache_key()["weights_sha256"] != registration["weights_sha256"]:
            raise ValueError(f"{registration['model']}: BiRegNet weights differ from those the priors were made "
                             f"with; restore the model folder, or rebuild the dataset and retrain.")
    if recipe.fusion == "simnet":
        if recipe.simnet_model is None:
            raise ValueError("fusion 'simnet' recorded without a SimNet model folder; rebuild with 'nnunet_mm mas'.")
        if simnet is None or Path(recipe.simnet_model).resolve() != Path(registration.get("model", "")).resolve():
            from nnunet_mm.atlas.learned import load_learned_mas

            _, simnet = load_learned_mas(Path(recipe.simnet_model), device=device)
        if simnet is None:
            raise FileNotFoundError(f"{recipe.simnet_model}: no SimNet weights; the priors were fused with SimNet.")
    return backend, simnet


@dataclass
class CasePriors:
    """The priors of one target case: ``prior`` (C, *spatial) fused class probabilities (every class, background
    first), the warped atlases, seconds per pair (None: from the cache), the target image and its array."""

    prior: np.ndarray
    warped: list[WarpedAtlas]
    seconds: list[float | None]
    reference: sitk.Image
    target_array: np.ndarray


def make_case_priors(recipe: MASPriorRecipe, target_file: Path, atlas_folder: Path, atlas_cases: Sequence[str], *,
                     backend: PairRegistration, simnet: Any = None, cache_dir: Path | None = None,
                     progress: Any = None) -> CasePriors:
    """Register ``atlas_cases`` to one target image and fuse their labels: the one implementation behind both
    ``nnunet_mm mas`` (priors of a dataset's cases) and ``nnunet_mm predict`` (priors of new cases).

    Args:
        recipe: how (fusion, classes, channels; ``backend``/``simnet`` are built from it or recorded into it).
        target_file: the target's channel ``recipe.target_channel``.
        atlas_folder: the atlas dataset (files named in ``recipe.atlas_files``).
        atlas_cases: the atlases to register.
        cache_dir: cache of warped atlases (None: no cache).
        progress: a tqdm bar advanced once per pair.
    """
    from nnunet_mm.io.images import read_image

    reference = read_image(target_file)
    target_array = sitk.GetArrayFromImage(reference).astype(np.float32)
    warped, seconds = [], []
    for atlas_case in atlas_cases:
        files = recipe.atlas_files[atlas_case]
        result, elapsed = _cached_warp(cache_dir, backend, Path(target_file), atlas_folder / files["image"],
                                       atlas_folder / files["label"], recipe.num_classes)
        warped.append(result)
        seconds.append(elapsed)
        if progress is not None:
            progress.update()
    prior = fuse(recipe_settings(recipe), warped, target_array, simnet, reference=reference)
    return CasePriors(prior, warped, seconds, reference, target_array)


def prior_file(folder: Path, case: str, channel: int, file_ending: str) -> Path:
    return Path(folder) / f"{case}_{channel:04d}{file_ending}"


def write_prior_channels(case_priors: CasePriors, recipe: MASPriorRecipe, folder: Path, case: str, *,
                         first_channel: int, file_ending: str) -> list[Path]:
    """Write one prior channel per ``recipe.prior_classes`` class, on the target image's grid (its spacing, origin
    and direction), as ``{case}_{first_channel + i:04d}{file_ending}``; returns the files."""
    written = []
    for offset, value in enumerate(recipe.prior_classes.values()):
        path = prior_file(folder, case, first_channel + offset, file_ending)
        _write_prior(case_priors.prior[value], case_priors.reference, path)
        written.append(path)
    return written


def save_case_qa(path: Path, case_priors: CasePriors, labels: Mapping[str, Any], title: str) -> Path:
    """The QA PNG of one case (:func:`nnunet_mm.atlas.qa.save_mas_figure`)."""
    from nnunet_mm.atlas.qa import save_mas_figure

    return save_mas_figure(path, case_priors.target_array, np.stack([w.image for w in case_priors.warped]),
                           np.stack([w.probabilities.argmax(0) for w in case_priors.warped]), case_priors.prior,
                           title=title, class_names=[name for name, value in sorted(labels.items(),
                                                                                    key=lambda item: item[1])
                                                     if name != "ignore"])


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


def _output_dataset_json(target: RawDataset, target_settings: DatasetSettings, recipe: MASPriorRecipe,
                         name: str) -> dict[str, Any]:
    labels = target.dataset_json["labels"]
    class_names = list(recipe.prior_classes)
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
    block["registration"] = {"method": "multi-atlas label fusion", "atlas_dataset": Path(recipe.atlas_dataset).name,
                             "target_channel": recipe.target_channel, "atlas_channel": recipe.atlas_channel,
                             "num_atlases": recipe.num_atlases, "fusion": recipe.fusion, **recipe.registration}
    # everything 'nnunet_mm predict' needs to make the same priors for a new case (nnU-Net copies this dataset.json
    # into the preprocessed folder and into every model folder)
    block[MAS_PRIORS_KEY] = recipe.to_json()
    block["source"] = str(target.folder.resolve())
    block["notes"] = [*target_settings.description.notes,
                      f"channels {num_images}..{len(channel_names) - 1}: fused atlas prior probability per "
                      f"foreground class ({', '.join(class_names)}), written by 'nnunet_mm mas'"]
    return {"channel_names": channel_names, "labels": labels, "numTraining": target.dataset_json["numTraining"],
            "file_ending": target.file_ending, "name": name, BLOCK_KEY: block}


def target_splits(target: RawDataset) -> list[dict[str, list[str]]]:
    """The split of the target's training cases that a MAS dataset gets (:func:`_write_splits`): the target's own
    ``splits_final.json``, else :func:`~nnunet_mm.io.splits.cross_validation_splits` over its training cases."""
    from nnunet_mm.io.splits import cross_validation_splits, read_splits

    if (target.folder / SPLITS_FILE).is_file():
        return [dict(fold) for fold in read_splits(target.folder / SPLITS_FILE)]
    return [dict(fold) for fold in cross_validation_splits(target.training_cases)]


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
                      prior_classes: Sequence[str] | None = None, show_progress: bool = True) -> Path:
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
        prior_classes: names of the classes that get a prior channel (default :func:`choose_prior_classes`:
            every non-lesion class that every atlas labels).
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
    chosen = choose_prior_classes(target.dataset_json["labels"],
                                  [atlases.label_file(c) for c in atlases.training_cases], prior_classes)
    recipe = make_recipe(atlases, used, backend, simnet, num_classes=num_classes, prior_classes=chosen)
    summary: dict[str, Any] = {"settings": dict(used.__dict__), "backend": backend.cache_key(),
                               "prior_classes": chosen, "cases": {}}
    with staged_dataset(final_dir, overwrite=overwrite, sources=[target.folder, atlases.folder]) as staging:
        dataset_json = _output_dataset_json(target, target_settings, recipe, final_dir.name)
        read_settings(dataset_json, str(final_dir / "dataset.json"))
        (staging / "dataset.json").write_text(json.dumps(dataset_json, indent=4), encoding="utf-8")
        _write_splits(target, staging)
        progress = tqdm(total=sum(len(a) for a in atlas_lists.values()), desc="mas: atlas-target pairs",
                        unit="pair", disable=not show_progress)
        for case, split in jobs:
            progress.set_postfix_str(case)
            case_summary = _process_case(case, split, target, atlases, atlas_lists[case], recipe, backend,
                                         simnet, cache_dir, staging, progress)
            summary["cases"][case] = case_summary
        progress.close()
        seconds = [s for c in summary["cases"].values() for s in c["seconds_per_pair"] if s is not None]
        summary["mean_seconds_per_pair"] = float(np.mean(seconds)) if seconds else None
        summary["cache_hits"] = sum(s is None for c in summary["cases"].values() for s in c["seconds_per_pair"])
        (staging / QA_DIR / "mas_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    logger.info("wrote %s (%d cases, %s s per registered pair)", final_dir, len(jobs),
                summary["mean_seconds_per_pair"])
    return final_dir


def _process_case(case: str, split: str, target: RawDataset, atlases: RawDataset, atlas_cases: list[str],
                  recipe: MASPriorRecipe, backend: PairRegistration, simnet: Any, cache_dir: Path, staging: Path,
                  progress: Any) -> dict[str, Any]:
    """Register, fuse and write one case (:func:`make_case_priors`); returns its summary entry."""
    from nnunet_mm.io.images import read_image

    target_file = target.image_file(case, recipe.target_channel, split)
    case_priors = make_case_priors(recipe, target_file, atlases.folder, atlas_cases, backend=backend, simnet=simnet,
                                   cache_dir=cache_dir, progress=progress)
    images_dir, labels_dir = staging / f"images{split}", staging / f"labels{split}"
    images_dir.mkdir(exist_ok=True)
    for channel in range(target.num_channels):
        shutil.copyfile(target.image_file(case, channel, split), images_dir / target.image_file(case, channel).name)
    write_prior_channels(case_priors, recipe, images_dir, case, first_channel=target.num_channels,
                         file_ending=target.file_ending)
    entry: dict[str, Any] = {"split": split, "atlases": list(atlas_cases), "seconds_per_pair": case_priors.seconds}
    if recipe.learned_training_cases is not None:  # its priors are better than a new patient's: report apart
        entry["seen_by_learned_networks"] = case in recipe.learned_training_cases
    if target.label_file(case, split).is_file():
        labels_dir.mkdir(exist_ok=True)
        shutil.copyfile(target.label_file(case, split), labels_dir / target.label_file(case).name)
        truth = sitk.GetArrayFromImage(read_image(target.label_file(case, split)))
        entry["fused_dice"] = _dice_per_class(truth, fused_label(case_priors.prior), recipe.num_classes)
        entry["atlas_dice"] = [_dice_per_class(truth, w.probabilities.argmax(0), recipe.num_classes)
                               for w in case_priors.warped]
    save_case_qa(staging / QA_DIR / f"{case}.png", case_priors, target.dataset_json["labels"],
                 f"{case}: {len(case_priors.warped)} atlases, {recipe.fusion}")
    return entry
