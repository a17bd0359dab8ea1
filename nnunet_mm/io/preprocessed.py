"""The preprocessed dataset that the ``-d -c -p`` arguments of a plugin command name."""
from __future__ import annotations

import json
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
    return folder, json.loads((folder / "dataset.json").read_text()), plans.get_configuration(configuration)
