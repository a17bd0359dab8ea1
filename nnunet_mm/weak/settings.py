"""Weak supervision's keys of the ``'nnunet_mm'`` block: ``"weak_supervision"`` (WeakLabelTrainer's settings) and
``"image_labels"`` (:mod:`nnunet_mm.weak.image_labels`).

::

    'nnunet_mm': {"weak_supervision": {
        "ema_decay": 0.99,                   # alpha of the EMA teacher
        "consistency_weight": 1.0,           # lambda_max of the student-teacher consistency term
        "consistency_rampup": 0.4,           # lambda ramps up (sigmoid) over this span of the epochs
        "refinement_interval": 0.2,          # the teacher refines the pseudo labels every this span of epochs
        "confident_threshold": 0.9,          # teacher probability >= tau: its label replaces the pseudo label
        "uncertain_threshold": 0.6           # below this (and disagreeing): nnU-Net's ignore label
    }}

**Spans of epochs** (``refinement_interval``, ``consistency_rampup``) follow one rule (:func:`parse_epoch_span`):

* a number strictly between 0 and 1 (``0.2``) or a percentage string (``"20%"``) is a **fraction of the run's
  ``num_epochs``**, resolved when training starts (at least 1 epoch), so the schedule scales with the run: a 10-epoch
  run refines after epochs 1, 3, 5 and 7, a 1000-epoch run after 199, 399, 599 and 799;
* a JSON integer ``>= 1`` (``100``) is an **absolute number of epochs**;
* anything else is refused with a ValueError naming the key, in particular ``1.0`` (one epoch or 100 %? write ``1``
  or ``"100%"``) and other non-integral numbers ``>= 1``.

``consistency_rampup_fraction`` (a number in [0, 1]), the key before ``consistency_rampup`` existed, is still read.
Every key is optional; unknown keys and bad values are refused with a message naming the key.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nnunet_mm.settings.block import BLOCK_KEY, register_sub_block
from nnunet_mm.settings.validation import check_object, number
from nnunet_mm.weak.image_labels import IMAGE_LABELS_KEY, parse_image_labels_value

WEAK_SUPERVISION_KEY = "weak_supervision"
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*$")


@dataclass(frozen=True)
class EpochSpan:
    """A span of epochs: an absolute count, or a fraction of the run's ``num_epochs`` (exactly one is set).

    Attributes:
        epochs: the absolute number of epochs (>= 1), or None.
        fraction: the share of ``num_epochs`` in (0, 1], or None.
    """

    epochs: int | None = None
    fraction: float | None = None

    def __post_init__(self) -> None:
        if (self.epochs is None) == (self.fraction is None):
            raise ValueError(f"EpochSpan needs exactly one of epochs and fraction, got {self}.")
        if self.epochs is not None and self.epochs < 1:
            raise ValueError(f"EpochSpan.epochs must be >= 1, got {self.epochs}.")
        if self.fraction is not None and not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"EpochSpan.fraction must be in (0, 1], got {self.fraction}.")

    def resolve(self, num_epochs: int) -> int:
        """The span in epochs for a run of ``num_epochs`` (a fraction rounds to the nearest epoch, at least 1)."""
        if self.epochs is not None:
            return self.epochs
        return max(1, int(round(self.fraction * num_epochs)))

    def describe(self) -> str:
        """``"20% of the epochs"`` or ``"100 epochs"``, for the training log."""
        if self.epochs is not None:
            return f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"
        return f"{self.fraction * 100:g}% of the epochs"


def parse_epoch_span(value: Any, where: str) -> EpochSpan:
    """A span of epochs from a setting's value (the rule is in the module docstring).

    Args:
        value: a JSON integer >= 1 (epochs), a number in (0, 1) or a string ``"P%"`` with 0 < P <= 100 (a fraction
            of ``num_epochs``), or an :class:`EpochSpan` (returned as it is).
        where: the key, for messages (``"<file>: 'nnunet_mm'.weak_supervision.refinement_interval"``).

    Raises:
        ValueError: any other value, naming ``where`` and the rule.
    """
    rule = ("an integer >= 1 (epochs), a number between 0 and 1 or a string like \"20%\" (a fraction of "
            "num_epochs)")
    if isinstance(value, EpochSpan):
        return value
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if match and 0.0 < float(match.group(1)) <= 100.0:
            return EpochSpan(fraction=float(match.group(1)) / 100.0)
        raise ValueError(f"{where} must be {rule}; got {value!r}.")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} must be {rule}; got {value!r}.")
    if isinstance(value, int):
        if value >= 1:
            return EpochSpan(epochs=value)
        raise ValueError(f"{where} must be {rule}; got {value!r}.")
    if 0.0 < value < 1.0:
        return EpochSpan(fraction=float(value))
    hint = (" (ambiguous: write 1 for one epoch or \"100%\" for the whole run)" if value == 1.0 else
            f" (write {int(value)} for {int(value)} epochs)" if value > 1.0 and value.is_integer() else "")
    raise ValueError(f"{where} must be {rule}; got {value!r}{hint}.")


@dataclass(frozen=True)
class WeakTrainingSettings:
    """Validated ``"weak_supervision"`` settings (defaults: methods.md §4.6, the spans as fractions of the run).

    ``refinement_interval`` defaults to 20 % of the epochs: methods.md's N = 100 is a value for nnU-Net's 1000 epochs
    and never fires in a short run; 20 % (not 10 %) so that the first refinement of a short run comes from a teacher
    that has averaged a fifth of the run, not one epoch.
    """

    ema_decay: float = 0.99
    consistency_weight: float = 1.0
    consistency_rampup: EpochSpan = field(default_factory=lambda: EpochSpan(fraction=0.4))
    refinement_interval: EpochSpan = field(default_factory=lambda: EpochSpan(fraction=0.2))
    confident_threshold: float = 0.9
    uncertain_threshold: float = 0.6

    KEYS = ("ema_decay", "consistency_weight", "consistency_rampup", "consistency_rampup_fraction",
            "refinement_interval", "confident_threshold", "uncertain_threshold")

    @classmethod
    def from_dict(cls, block: Mapping[str, Any] | None,
                  where: str = f"'{BLOCK_KEY}'.{WEAK_SUPERVISION_KEY}") -> "WeakTrainingSettings":
        """Parse the block (None or missing: defaults).

        Raises:
            KeyError: an unknown key (the message lists the known ones).
            ValueError: a bad value, naming the key.
        """
        block = {} if block is None else block
        check_object(block, cls.KEYS, where)
        values: dict[str, Any] = {}
        for key, low, high, low_open in (("ema_decay", 0.0, 1.0, False), ("consistency_weight", 0.0, None, False),
                                         ("confident_threshold", 0.0, 1.0, True),
                                         ("uncertain_threshold", 0.0, 1.0, True)):
            if key in block:
                values[key] = number(block[key], f"{where}.{key}", low, high, low_open=low_open)
        if "ema_decay" in values and values["ema_decay"] >= 1.0:
            raise ValueError(f"{where}.ema_decay must be < 1 (1 would freeze the teacher), got {values['ema_decay']}.")
        for key in ("refinement_interval", "consistency_rampup"):
            if key in block:
                values[key] = parse_epoch_span(block[key], f"{where}.{key}")
        if "consistency_rampup_fraction" in block:
            if "consistency_rampup" in block:
                raise ValueError(f"{where}: give consistency_rampup or its old spelling consistency_rampup_fraction, "
                                 f"not both.")
            fraction = number(block["consistency_rampup_fraction"], f"{where}.consistency_rampup_fraction", 0.0, 1.0)
            # the old key's 0 meant a one-epoch ramp (the trainer rounded up to one epoch)
            values["consistency_rampup"] = EpochSpan(fraction=fraction) if fraction > 0 else EpochSpan(epochs=1)
        settings = cls(**values)
        if settings.uncertain_threshold > settings.confident_threshold:
            raise ValueError(f"{where}: uncertain_threshold ({settings.uncertain_threshold}) must not exceed "
                             f"confident_threshold ({settings.confident_threshold}).")
        return settings


register_sub_block(WEAK_SUPERVISION_KEY, WeakTrainingSettings.from_dict, WeakTrainingSettings, owner=__name__)
register_sub_block(IMAGE_LABELS_KEY, parse_image_labels_value, lambda: None, owner=__name__)
