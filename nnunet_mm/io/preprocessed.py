"""The preprocessed dataset that the ``-d -c -p`` arguments of a plugin command name."""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path


def load_preprocessed(dataset: str, configuration: str, plans_identifier: str):
    """(preprocessed dataset folder, dataset.json, configuration manager); errors name the plans file."""
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = Path(nnUNet_preprocessed) / maybe_convert_to_dataset_name(dataset)
    plans_file = folder / f"{plans_identifier}.json"
    if not plans_file.is_file():
        raise FileNotFoundError(f"{plans_file}: no such plans; run nnUNetv2_plan_and_preprocess -d {dataset} first.")
    plans = PlansManager(str(plans_file))
    if configuration not in plans.available_configurations:
        raise ValueError(f"{plans_file}: no configuration {configuration!r}; available: "
                         f"{plans.available_configurations}.")
    return folder, json.loads((folder / "dataset.json").read_text(encoding="utf-8")), plans.get_configuration(configuration)


def open_preprocessed_cases(folder: Path, identifiers: Sequence[str] | None = None):
    """nnU-Net's dataset class (``infer_dataset_class``) over the preprocessed cases of ``folder`` (a
    ``<data_identifier>`` folder), after checking that every case's ``.pkl`` holds only data (nnU-Net unpickles
    them; see :mod:`nnunet_mm.io.safe_load`).

    Raises:
        FileNotFoundError: the folder does not exist or holds no preprocessed case.
        ValueError: a ``.pkl`` is cut or would run code (named).
    """
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    from nnunet_mm.io.safe_load import verify_preprocessed_folder

    folder = Path(folder)
    if not folder.is_dir() or not any(folder.iterdir()):
        raise FileNotFoundError(f"{folder}: no preprocessed cases; run nnUNetv2_plan_and_preprocess (or "
                                f"nnUNetv2_preprocess) for this configuration first.")
    verify_preprocessed_folder(folder)
    return infer_dataset_class(str(folder))(str(folder), identifiers=list(identifiers) if identifiers else None)
