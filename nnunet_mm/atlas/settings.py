"""The atlas-prior keys of the ``'nnunet_mm'`` block: ``"prior_dropout"`` (MASPriorTrainer) and ``"mas_priors"``
(how ``nnunet_mm mas`` made the priors, :class:`MASPriorRecipe`, read again to make priors for new cases).

::

    'nnunet_mm': {"prior_dropout": {"probability": 0.3}}

The share of training samples whose prior channels are zeroed, so the network does not copy the prior blindly.
Which channels are priors is part of the dataset description (``"modalities"``, :mod:`.prior_channels`).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any

from nnunet_mm.settings.block import register_sub_block
from nnunet_mm.settings.validation import check_keys, number

PRIOR_DROPOUT_KEY = "prior_dropout"
DEFAULT_PRIOR_DROPOUT = 0.3


def parse_prior_dropout(value: Any, where: str) -> float:
    """The dropout probability p in [0, 1] of ``{"probability": p}``.

    Raises:
        ValueError: not an object, or p outside [0, 1], naming ``where``.
        KeyError: a key other than ``probability``.
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be an object {{\"probability\": p}}, got {value!r}.")
    check_keys(value, ["probability"], where)
    return number(value.get("probability", DEFAULT_PRIOR_DROPOUT), f"{where}.probability", 0, 1)


register_sub_block(PRIOR_DROPOUT_KEY, parse_prior_dropout, lambda: DEFAULT_PRIOR_DROPOUT, owner=__name__)


MAS_PRIORS_KEY = "mas_priors"


@dataclass(frozen=True)
class MASPriorRecipe:
    """How ``nnunet_mm mas`` made the prior channels of a dataset: everything needed to make the same priors for a
    new case (``nnunet_mm predict`` on a model trained with prior channels reads it from the model folder's
    dataset.json, which nnU-Net copies from the dataset).

    ::

        'nnunet_mm': {"mas_priors": {
            "atlas_dataset": "/abs/nnUNet_raw/Dataset711_PhantomCTAtlas", "atlas_channel": 0,
            "atlas_files": {"atlas_000": {"image": "imagesTr/atlas_000_0000.nii.gz", "image_sha256": "…",
                                          "label": "labelsTr/atlas_000.nii.gz", "label_sha256": "…"}, …},
            "target_channel": 0, "num_atlases": 2, "fusion": "majority", "local_sigma_voxels": 2.0,
            "local_power": 2.0, "num_classes": 3, "prior_classes": {"liver": 1},
            "registration": {"backend": "simpleitk", "stages": [...], ...},   # or {"backend": "learned", "model": …}
            "simnet_model": null, "learned_training_cases": null}}

    Attributes:
        atlas_dataset: absolute folder of the atlas raw dataset (atlases are read from there at prediction time).
        atlas_channel: channel of the atlas images registered.
        atlas_files: per atlas case, its image and label file (relative to ``atlas_dataset``) and their SHA-256, so
            a moved or changed atlas is refused instead of silently giving other priors.
        target_channel: channel of the target registered to.
        num_atlases: K, atlases per target.
        fusion / local_sigma_voxels / local_power: label fusion (:class:`nnunet_mm.atlas.mas.MASSettings`).
        num_classes: classes of the label map, background included.
        prior_classes: ``{class name: label value}`` of the classes that have a prior channel, in channel order.
        registration: the registration backend and its settings (``"backend"``: ``"simpleitk"`` or ``"learned"``).
        simnet_model: model folder of the SimNet used for ``fusion == "simnet"``.
        learned_training_cases: target cases the learned networks were trained on (None: no learned network, or a
            model that did not record them).
    """

    atlas_dataset: str
    atlas_channel: int
    atlas_files: Mapping[str, Mapping[str, str]]
    target_channel: int
    num_atlases: int
    fusion: str
    local_sigma_voxels: float
    local_power: float
    num_classes: int
    prior_classes: Mapping[str, int]
    registration: Mapping[str, Any]
    simnet_model: str | None = None
    learned_training_cases: tuple[str, ...] | None = None

    @property
    def atlas_cases(self) -> list[str]:
        return sorted(self.atlas_files)

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["learned_training_cases"] = (None if self.learned_training_cases is None
                                            else list(self.learned_training_cases))
        return values

    def digest(self) -> str:
        """SHA-256 of the recipe (priors made with another recipe are never reused)."""
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()


def parse_mas_priors(value: Any, where: str) -> MASPriorRecipe:
    """The :class:`MASPriorRecipe` of a ``"mas_priors"`` object.

    Raises:
        ValueError: not an object, a missing key, or a value of the wrong type, naming ``where``.
        KeyError: an unknown key.
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be an object (written by 'nnunet_mm mas'), got {value!r}.")
    names = [f.name for f in fields(MASPriorRecipe)]
    check_keys(value, names, where)
    required = [f.name for f in fields(MASPriorRecipe) if f.default is MISSING]
    missing = [name for name in required if name not in value]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}; rebuild the dataset with 'nnunet_mm mas'.")
    for name in ("atlas_files", "prior_classes", "registration"):
        if not isinstance(value[name], Mapping):
            raise ValueError(f"{where}.{name} must be an object, got {value[name]!r}.")
    if not value["prior_classes"] or not all(isinstance(v, int) and v > 0 for v in value["prior_classes"].values()):
        raise ValueError(f"{where}.prior_classes must map class names to foreground label values, got "
                         f"{value['prior_classes']!r}.")
    if value["registration"].get("backend") not in ("simpleitk", "learned"):
        raise ValueError(f"{where}.registration.backend must be 'simpleitk' or 'learned', got "
                         f"{value['registration'].get('backend')!r}.")
    cases = value.get("learned_training_cases")
    return MASPriorRecipe(
        atlas_dataset=str(value["atlas_dataset"]), atlas_channel=int(value["atlas_channel"]),
        atlas_files={str(k): dict(v) for k, v in value["atlas_files"].items()},
        target_channel=int(value["target_channel"]), num_atlases=int(value["num_atlases"]),
        fusion=str(value["fusion"]), local_sigma_voxels=float(value["local_sigma_voxels"]),
        local_power=float(value["local_power"]), num_classes=int(value["num_classes"]),
        prior_classes={str(k): int(v) for k, v in value["prior_classes"].items()},
        registration=dict(value["registration"]), simnet_model=value.get("simnet_model"),
        learned_training_cases=None if cases is None else tuple(str(c) for c in cases))


register_sub_block(MAS_PRIORS_KEY, parse_mas_priors, lambda: None, owner=__name__)
