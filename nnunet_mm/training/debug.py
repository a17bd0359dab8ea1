"""The debug schedule shared by every ``<Trainer>_debug`` class: a whole CLI cycle on a CPU in minutes."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

DEBUG_EPOCHS = 2
DEBUG_ITERATIONS_PER_EPOCH = 4
DEBUG_VALIDATION_ITERATIONS_PER_EPOCH = 2


class DebugSchedule:
    """Mixin: 2 epochs × 4 iterations, 2 validation iterations, then whatever ``debug_overrides`` sets.

    Put it first, ``class CMGTrainer_debug(DebugSchedule, CMGTrainer)``, so that it runs after the trainer's own
    constructor. nnU-Net stores the class name in checkpoints and rebuilds the trainer with nnU-Net's four
    constructor arguments plus the device, so the signature stays nnU-Net's.

    Attributes:
        debug_overrides: further attributes set after the trainer's constructor, for values the trainer reads from
            dataset.json there (e.g. ``{"refinement_interval": 1}``).
    """

    debug_overrides: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)  # the trainer's own constructor (MRO)
        self.num_epochs = DEBUG_EPOCHS
        self.num_iterations_per_epoch = DEBUG_ITERATIONS_PER_EPOCH
        self.num_val_iterations_per_epoch = DEBUG_VALIDATION_ITERATIONS_PER_EPOCH
        for name, value in self.debug_overrides.items():
            setattr(self, name, value)


DEMO_EPOCHS = 10
DEMO_ITERATIONS_PER_EPOCH = 25
DEMO_VALIDATION_ITERATIONS_PER_EPOCH = 5


class DemoSchedule:
    """Mixin: 10 epochs × 25 iterations (250 updates), 5 validation iterations: what ``nnunet_mm demo`` trains, long
    enough on its small 2D phantom for the lesions to be found on a CPU in under two minutes. Used as
    :class:`DebugSchedule` is (first in the bases)."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = DEMO_EPOCHS
        self.num_iterations_per_epoch = DEMO_ITERATIONS_PER_EPOCH
        self.num_val_iterations_per_epoch = DEMO_VALIDATION_ITERATIONS_PER_EPOCH
