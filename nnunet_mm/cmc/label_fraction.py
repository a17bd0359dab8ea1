"""A semi-supervised benchmark dataset from a fully labeled one: keep a fraction of the labels, unlabel the rest.

:func:`make_label_fraction_dataset` writes a *new* raw dataset (the source is only read):

* ``imagesTr/``, ``labelsTr/``: the kept labeled cases, ``max(1, round(fraction · N))`` of the ``N`` training cases
  (when the block of dataset.json has ``per_case_modality``, the cases are drawn per modality and every modality
  keeps at least one label, so the count can be higher);
* ``imagesUnl/``: every channel of the other training cases, declared with ``"unlabeled_dir": "imagesUnl"``
  (:mod:`nnunet_mm.cmc.unlabeled` reads it). A source that already has unlabeled cases (its ``unlabeled_dir`` set,
  or an ``imagesUnl`` folder) is refused;
* ``labelsUnl_heldout/``: the labels of those cases, kept aside for evaluating on them (pseudo-label quality,
  transductive Dice); nothing in training reads this folder;
* ``imagesTs/``, ``labelsTs/`` and the other top-level files of the source (e.g. ``image_labels.json``) as they are;
  a ``phase_labels_dir`` folder with the files of the kept cases only;
* ``dataset.json``: a copy with ``numTraining`` and ``name`` updated, ``unlabeled_dir`` added and a note recording
  the source, fraction, seed and counts (``per_case_modality`` still covers every case);
* ``splits_final.json``: cross-validation folds over the labeled cases only, in nnU-Net's format. With 5 or more
  labeled cases it equals nnU-Net's own default split (5 folds, seed 12345, sorted ids); with 2–4 it has one fold
  per case count; with a single labeled case its one fold trains and validates on that case. MultiModalTrainer
  copies it into the preprocessed folder (a split grouped by patient in the source is not carried over).

Files are copied, not linked, so the new dataset survives changes to the source. The cases are drawn with
``random.Random(seed)``, so the same source, fraction and seed always give the same dataset::

    nnunet_mm label-fraction -d 500 --fraction 0.1 --target-id 600
"""
from __future__ import annotations

import copy
import json
import logging
import random
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nnunet_mm.cmc.settings import DEFAULT_UNLABELED_DIR, UNLABELED_DIR_KEY
from nnunet_mm.io.splits import write_splits
from nnunet_mm.settings import BLOCK_KEY, block_of, read_settings

logger = logging.getLogger(__name__)

HELDOUT_LABELS_DIR = "labelsUnl_heldout"
_OWN_FILES = ("dataset.json", "splits_final.json")
_PHASE_LABELS_DIR_KEY = "phase_labels_dir"  # CMG's key (nnunet_mm.cmg.settings); its folder is copied for kept cases


def _source_folder(source_dataset: int | str | Path) -> Path:
    if isinstance(source_dataset, Path):
        folder = source_dataset
    else:
        from nnunetv2.paths import nnUNet_raw
        from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

        folder = Path(nnUNet_raw) / maybe_convert_to_dataset_name(source_dataset)
    if not (folder / "dataset.json").is_file():
        raise FileNotFoundError(f"{folder / 'dataset.json'}: not found; the source must be an nnU-Net raw dataset.")
    return folder


def _refuse_unlabeled_cases(source: Path, unlabeled_dir: str, declared: bool) -> None:
    """Refuse a source that already has unlabeled cases: its block sets ``unlabeled_dir``, or the folder that key
    names (``imagesUnl`` when absent) exists and is not empty."""
    folder = source / unlabeled_dir
    has_files = folder.is_dir() and any(folder.iterdir())
    if declared or has_files:
        how = (f"its '{BLOCK_KEY}' block sets '{UNLABELED_DIR_KEY}': {unlabeled_dir!r}" if declared else
               f"{folder} is not empty, and without '{UNLABELED_DIR_KEY}' that folder holds the unlabeled cases")
        raise ValueError(f"{source / 'dataset.json'}: the source already has unlabeled cases ({how}); a label "
                         f"fraction starts from a fully labeled dataset. Remove the unlabeled cases and the key, or "
                         f"use the dataset as it is.")


def _choose_labeled_cases(cases: Sequence[str], fraction: float, seed: int,
                          modality_of: Mapping[str, str]) -> list[str]:
    """The cases that keep their labels: ``round(fraction · N)`` drawn per modality, at least one per modality."""
    strata: dict[str, list[str]] = {}
    for case in sorted(cases):
        strata.setdefault(str(modality_of.get(case, "")), []).append(case)
    num_labeled = max(len(strata), int(fraction * len(cases) + 0.5))
    quota = dict.fromkeys(strata, 1)
    for _ in range(num_labeled - len(strata)):  # each further label goes to the modality furthest below its share
        open_strata = [name for name in sorted(strata) if quota[name] < len(strata[name])]
        neediest = max(open_strata, key=lambda name: num_labeled * len(strata[name]) / len(cases) - quota[name])
        quota[neediest] += 1
    rng = random.Random(seed)
    return sorted(case for name in sorted(strata) for case in rng.sample(strata[name], quota[name]))


def _default_target_name(source: Path, fraction: float) -> str:
    """``<source name>_labeled<percent>pct``, e.g. ``MultiPhasePhantom_labeled10pct`` or ``..._labeled12p5pct``."""
    name = source.name.split("_", 1)[1] if source.name.startswith("Dataset") and "_" in source.name else source.name
    percent = f"{fraction * 100:g}".replace(".", "p")
    return f"{name}_labeled{percent}pct"


def _copy_files(files: Sequence[Path], folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    for file in files:
        shutil.copyfile(file, folder / file.name)


def make_label_fraction_dataset(source_dataset: int | str | Path, fraction: float, *, target_id: int,
                                target_name: str | None = None, seed: int = 0, output_root: Path | None = None,
                                overwrite: bool = False) -> Path:
    """Write a new raw dataset in which only ``fraction`` of the source's training cases keep their labels.

    See the module docstring for the layout and the rules.

    Args:
        source_dataset: the fully labeled source: a dataset id or name in ``nnUNet_raw``, or its folder as a Path.
        fraction: share of the training cases that keep their labels, in (0, 1).
        target_id: dataset id of the new dataset (1–999, not used by another dataset in the output root).
        target_name: name after the id; default ``<source name>_labeled<percent>pct``.
        seed: seed of the case draw.
        output_root: folder that receives ``DatasetNNN_Name``; default ``$nnUNet_raw``.
        overwrite: replace an existing target dataset.

    Returns:
        The new dataset folder.

    Raises:
        ValueError: ``fraction`` outside (0, 1) or keeping every case labeled; the source lists its cases in a
            ``dataset`` key, already has unlabeled cases or has an invalid block; misnamed images or a missing
            channel; a bad id or name, or an id clash.
        KeyError: an unknown key in the source's block.
        FileNotFoundError: the source dataset.json or a training label is missing.
        FileExistsError: the target exists and ``overwrite`` is False.
    """
    from batchgenerators.utilities.file_and_folder_operations import load_json, save_json

    from nnunet_mm.io.raw_dataset import case_channel_files
    from nnunet_mm.io.staging import new_dataset_folder, staged_dataset

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1) (the share of training cases that keep their labels), "
                         f"got {fraction}.")
    source = _source_folder(source_dataset)
    source_json = source / "dataset.json"
    dataset_json = load_json(str(source_json))
    settings = read_settings(dataset_json, str(source_json))
    if "dataset" in dataset_json:
        raise ValueError(f"{source_json}: lists its cases in a 'dataset' key; label fractions need the "
                         f"imagesTr/labelsTr layout.")
    _refuse_unlabeled_cases(source, settings.method(UNLABELED_DIR_KEY), settings.is_set(UNLABELED_DIR_KEY))
    file_ending = dataset_json["file_ending"]
    images = case_channel_files(source / "imagesTr", file_ending, settings.multimodal.num_channels,
                                phase_names=settings.multimodal.phase_names, refuse_other_files=True)
    labels = {case: source / "labelsTr" / f"{case}{file_ending}" for case in images}
    missing = [str(label) for label in labels.values() if not label.is_file()]
    if missing:
        raise FileNotFoundError(f"{source / 'labelsTr'}: {len(missing)} training label(s) missing: {missing}")
    labeled = _choose_labeled_cases(list(images), fraction, seed, settings.description.per_case_modality)
    unlabeled = sorted(set(images) - set(labeled))
    if not unlabeled:
        raise ValueError(f"fraction {fraction} keeps all {len(images)} training case(s) of {source} labeled (at least "
                         f"one per modality); choose a smaller fraction.")
    target = new_dataset_folder(target_id, target_name or _default_target_name(source, fraction),
                                output_root=output_root)

    note = (f"label fraction {fraction:g} of {source.name} (seed {seed}): {len(labeled)} of {len(images)} training "
            f"cases keep their labels; the images of the other {len(unlabeled)} are in {DEFAULT_UNLABELED_DIR}, their "
            f"labels in {HELDOUT_LABELS_DIR} (not used for training)")
    new_json = copy.deepcopy(dataset_json)
    new_json["name"] = target.name
    new_json["numTraining"] = len(labeled)
    block: dict[str, Any] = dict(block_of(dataset_json, str(source_json)))
    block["notes"] = [*settings.description.notes, note]
    block[UNLABELED_DIR_KEY] = DEFAULT_UNLABELED_DIR
    new_json[BLOCK_KEY] = block
    read_settings(new_json, str(target / "dataset.json"))

    with staged_dataset(target, overwrite=overwrite, sources=[source]) as staging:
        _copy_files([f for case in labeled for f in images[case]], staging / "imagesTr")
        _copy_files([labels[case] for case in labeled], staging / "labelsTr")
        _copy_files([f for case in unlabeled for f in images[case]], staging / DEFAULT_UNLABELED_DIR)
        _copy_files([labels[case] for case in unlabeled], staging / HELDOUT_LABELS_DIR)
        for folder in ("imagesTs", "labelsTs"):
            if (source / folder).is_dir():
                shutil.copytree(source / folder, staging / folder)
        phase_labels_dir = settings.method(_PHASE_LABELS_DIR_KEY)
        if phase_labels_dir is not None and (source / phase_labels_dir).is_dir():
            kept = set(labeled)  # phase label files are named {case}_{XXXX}{file_ending}
            _copy_files([f for f in sorted((source / phase_labels_dir).iterdir())
                         if f.name.endswith(file_ending) and f.name[:-len(file_ending) - 5] in kept],
                        staging / phase_labels_dir)
        _copy_files([f for f in sorted(source.iterdir()) if f.is_file() and f.name not in _OWN_FILES], staging)
        save_json(new_json, str(staging / "dataset.json"), sort_keys=False)
        write_splits(staging, labeled)
    skipped = sorted(p.name for p in source.iterdir() if p.is_dir() and not (target / p.name).exists())
    if skipped:
        logger.warning("%s: folders %s of the source were not copied", target, skipped)
    logger.info("%s: %d labeled and %d unlabeled training case(s) from %s", target, len(labeled), len(unlabeled),
                source)
    return target
