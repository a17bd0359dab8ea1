"""Every trainer of the plugin (and nnU-Net's own), built on a copy of the session's planned phantom with the settings
that switch on each method's whole step: misalignment and modality dropout always, CMC's unlabeled cases with the
consistency terms from the first step, CMG's teacher forcing mixed with predicted prototypes, synthetic tumours in
every sample with liver, an atlas prior channel for MASPriorTrainer, the mean teacher for WeakLabelTrainer.

Used by the compile, mixed-precision and DDP tests; :func:`build_trainer` works in a test (after
:func:`prepare_method_data` on the test's ``trainer_kit``) and in a spawned DDP worker alike (it reads everything
from the preprocessed folder and the ``nnUNet_*`` environment).
"""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import torch


from planned_phantom import PHANTOM_ID

PLUGIN_TRAINERS = ("MultiModalTrainer", "CMGTrainer", "CMCTrainer", "SynthTumorTrainer", "MASPriorTrainer",
                   "WeakLabelTrainer")
STATISTICS_FILE = "tumour_contrast_readiness.json"
COMMON_BLOCK = {"seed": 0, "misalignment": {"probability": 1.0}, "modality_dropout": {"probability": 0.5}}


def prepare_method_data(raw: Path, preprocessed: Path, configuration: str = "2d") -> None:
    """Write what the methods need beside the phantom: two unlabeled cases (preprocessed for ``configuration``)
    for CMC, a tumour-contrast statistics file for SynthTumorTrainer."""
    from nnunet_mm.cmc.unlabeled import preprocess_unlabeled
    from nnunet_mm.synthesis.statistics import TumourContrastStatistics

    folder = raw / "imagesUnl"
    folder.mkdir(exist_ok=True)
    cases = sorted(p.name[:-len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))[:2]
    for index, case in enumerate(cases):
        for image in sorted((raw / "imagesTr").glob(f"{case}_*.nii.gz")):
            shutil.copyfile(image, folder / image.name.replace(case, f"unlabeled_{index:03d}"))
    preprocess_unlabeled(PHANTOM_ID, configuration)
    TumourContrastStatistics(("pv", "art"), np.array([[-2.0, 3.0]]), np.zeros((1, 2)), np.zeros((1, 2)),
                             ("real",)).save(preprocessed / STATISTICS_FILE)


def trainer_dataset_json(name: str, preprocessed: Path) -> dict:
    """The preprocessed dataset.json with the block (and channel names) each trainer is tested with."""
    dataset_json = json.loads((preprocessed / "dataset.json").read_text(encoding="utf-8"))
    block = {**dataset_json.get("nnunet_mm", {}), **copy.deepcopy(COMMON_BLOCK)}
    if name == "SynthTumorTrainer":
        block["synthesis"] = {"probability": 1.0, "statistics_file": str(preprocessed / STATISTICS_FILE)}
    if name == "MASPriorTrainer":
        block["modalities"] = {"0": "CT", "1": "atlas_prior:liver"}
        dataset_json["channel_names"] = {"0": "CT", "1": "noNorm"}
    dataset_json["nnunet_mm"] = block
    return dataset_json


def trainer_class(name: str) -> type:
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    return recursive_find_trainer_class_by_name(name)


def build_trainer(name: str, preprocessed: Path, *, configuration: str = "2d", initialize: bool = True,
                  device: torch.device = torch.device("cpu")):
    """``name`` built through its real constructor (as ``nnUNetv2_train`` does) and, if asked, initialised; with
    the method settings of :func:`trainer_dataset_json` and per-trainer switches that reach the whole step."""
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text(encoding="utf-8"))
    plans["continue_training"] = False
    trainer = trainer_class(name)(plans, configuration, "all", trainer_dataset_json(name, preprocessed),
                                  device=device)
    if name == "CMCTrainer":
        trainer.semi_start_fraction = 0.0  # the consistency terms from the first step
    if name == "CMGTrainer":
        trainer.predicted_prototypes_start = 0.5  # half the samples take predicted prototypes
    if initialize:
        trainer.initialize()
        if name == "CMCTrainer":  # on_train_start's unlabeled loader, without the rest of on_train_start
            trainer.dataloader_unlabeled = trainer._make_unlabeled_loader(trainer.unlabeled_cases_folder())
    return trainer


def seed_everything(seed: int) -> None:
    """Seed what nnU-Net's in-process loader and augmentation draw from (Python, NumPy, torch)."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fixed_batches(trainer, count: int) -> list[dict]:
    """``count`` batches from the trainer's own training loader (nnU-Net's sampling and augmentation)."""
    loader, _ = trainer.get_dataloaders()
    batches = [next(loader) for _ in range(count)]
    for owned in (loader,):
        if hasattr(owned, "_finish"):
            owned._finish()
    return batches
