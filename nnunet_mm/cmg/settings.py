"""CMG's key of the ``'nnunet_mm'`` block: ``"phase_labels_dir"``.

::

    'nnunet_mm': {"phase_labels_dir": "labelsTr_phases"}

The raw-dataset folder (relative to the dataset folder) holding one label per non-reference phase,
``<case>_<channel:04d><file_ending>``; ``nnunet_mm phase-labels`` preprocesses it into a ``<configuration>_phases``
configuration. Absent: the dataset has no per-phase labels.
"""
from __future__ import annotations

from typing import Any

from nnunet_mm.settings.block import register_sub_block
from nnunet_mm.settings.validation import relative_folder_name

PHASE_LABELS_DIR_KEY = "phase_labels_dir"


def parse_phase_labels_dir(value: Any, where: str) -> str:
    """The folder name, checked to be a non-empty relative path."""
    return relative_folder_name(value, where)


register_sub_block(PHASE_LABELS_DIR_KEY, parse_phase_labels_dir, lambda: None, owner=__name__)
