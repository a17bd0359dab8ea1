"""CMC's key of the ``'nnunet_mm'`` block: ``"unlabeled_dir"``.

::

    'nnunet_mm': {"unlabeled_dir": "imagesUnl"}

The raw-dataset folder (relative to the dataset folder) with the unlabeled cases, one file per channel as in
``imagesTr``. One meaning everywhere: the folder is this key's value, ``imagesUnl`` when the key is absent.
``nnunet_mm preprocess-unlabeled`` preprocesses that folder; ``CMCTrainer`` trains semi-supervised exactly when
preprocessed unlabeled cases exist for its configuration.
"""
from __future__ import annotations

from typing import Any

from nnunet_mm.settings.block import register_sub_block
from nnunet_mm.settings.validation import relative_folder_name

UNLABELED_DIR_KEY = "unlabeled_dir"
DEFAULT_UNLABELED_DIR = "imagesUnl"


def parse_unlabeled_dir(value: Any, where: str) -> str:
    """The folder name, checked to be a non-empty relative path."""
    return relative_folder_name(value, where)


register_sub_block(UNLABELED_DIR_KEY, parse_unlabeled_dir, lambda: DEFAULT_UNLABELED_DIR, owner=__name__)
