"""The two trainers ``nnunet_mm demo`` compares, on the demo schedule (:class:`~nnunet_mm.training.debug.
DemoSchedule`): stock nnU-Net and the plugin's :class:`~nnunet_mm.training.multimodal_trainer.MultiModalTrainer`.

``nnUNetTrainer_demo`` is nnU-Net's own ``nnUNetTrainer`` unchanged except for the number of epochs and iterations,
so the demo's comparison is against stock nnU-Net; ``nnUNetTrainer_debug`` is the same on the debug schedule.
"""
from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_mm.training.debug import DebugSchedule, DemoSchedule
from nnunet_mm.training.multimodal_trainer import MultiModalTrainer


class nnUNetTrainer_demo(DemoSchedule, nnUNetTrainer):  # noqa: N801 - nnU-Net's naming of trainer variants
    """Stock ``nnUNetTrainer`` on the demo schedule."""


class MultiModalTrainer_demo(DemoSchedule, MultiModalTrainer):
    """:class:`MultiModalTrainer` on the demo schedule."""


class nnUNetTrainer_debug(DebugSchedule, nnUNetTrainer):  # noqa: N801
    """Stock ``nnUNetTrainer`` on the debug schedule (2 epochs × 4 iterations), the stock arm of CPU command-line
    tests."""
