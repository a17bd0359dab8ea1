"""Weak supervision's keys of the ``'nnunet_mm'`` block: ``"weak_supervision"`` (WeakLabelTrainer's settings) and
``"image_labels"`` (:mod:`nnunet_mm.weak.image_labels`).

::

    'nnunet_mm': {"weak_supervision": {
        "ema_decay": 0.99,                   # alpha of the EMA teacher
        "consistency_weight": 1.0,           # lambda_max of the student-teacher consistency term
        "consistency_rampup_fraction": 0.4,  # lambda ramps up (sigmoid) over this share of the epochs
        "refinement_interval": 100,          # the teacher refines the pseudo labels every N epochs
        "confident_threshold": 0.9,          # teacher probability >= tau: its label replaces the pseudo label
        "uncertain_threshold": 0.6           # below this (and disagreeing): nnU-Net's ignore label
    }}

Every key is optional; unknown keys and bad values are refused with a message naming the key.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nnunet_mm.settings.block import BLOCK_KEY, register_sub_block
from nnunet_mm.settings.validation import check_object, number
from nnunet_mm.weak.image_labels import IMAGE_LABELS_KEY, parse_image_labels_value

WEAK_SUPERVISION_KEY = "weak_supervision"


@dataclass(frozen=True)
class WeakTrainingSettings:
    """Validated ``"weak_supervision"`` settings (defaults: the values of methods.md §4.6)."""

    ema_decay: float = 0.99
    consistency_weight: float = 1.0
    consistency_rampup_fraction: float = 0.4
    refinement_interval: int = 100
    confident_threshold: float = 0.9
    uncertain_threshold: float = 0.6

    @classmethod
    def from_dict(cls, block: Mapping[str, Any] | None,
                  where: str = f"'{BLOCK_KEY}'.{WEAK_SUPERVISION_KEY}") -> "WeakTrainingSettings":
        """Parse the block (None or missing: defaults).

        Raises:
            KeyError: an unknown key (the message lists the known ones).
            ValueError: a bad value, naming the key.
        """
        block = {} if block is None else block
        check_object(block, [f.name for f in dataclasses.fields(cls)], where)
        values: dict[str, Any] = {}
        for key, low, high, low_open in (("ema_decay", 0.0, 1.0, False), ("consistency_weight", 0.0, None, False),
                                         ("consistency_rampup_fraction", 0.0, 1.0, False),
                                         ("confident_threshold", 0.0, 1.0, True),
                                         ("uncertain_threshold", 0.0, 1.0, True)):
            if key in block:
                values[key] = number(block[key], f"{where}.{key}", low, high, low_open=low_open)
        if "ema_decay" in values and values["ema_decay"] >= 1.0:
            raise ValueError(f"{where}.ema_decay must be < 1 (1 would freeze the teacher), got {values['ema_decay']}.")
        if "refinement_interval" in block:
            interval = block["refinement_interval"]
            if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
                raise ValueError(f"{where}.refinement_interval must be an integer >= 1 (epochs), got {interval!r}.")
            values["refinement_interval"] = interval
        settings = cls(**values)
        if settings.uncertain_threshold > settings.confident_threshold:
            raise ValueError(f"{where}: uncertain_threshold ({settings.uncertain_threshold}) must not exceed "
                             f"confident_threshold ({settings.confident_threshold}).")
        return settings


register_sub_block(WEAK_SUPERVISION_KEY, WeakTrainingSettings.from_dict, WeakTrainingSettings, owner=__name__)
register_sub_block(IMAGE_LABELS_KEY, parse_image_labels_value, lambda: None, owner=__name__)
