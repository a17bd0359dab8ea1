"""``splits_final.json`` for the raw datasets the plugin writes: nnU-Net's own 5-fold split where it works, folds
that nnU-Net's default would fail on where a dataset has fewer than five training cases.

The plugin's trainers copy a raw dataset's ``splits_final.json`` into the preprocessed folder on first use (nnU-Net
reads it only from there).
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

SPLITS_FILE = "splits_final.json"
NNUNET_SPLIT_SEED = 12345  # nnUNetTrainer.do_split's seed: 5+ training cases get nnU-Net's own split


def cross_validation_splits(cases: Sequence[str]) -> list[dict[str, list[str]]]:
    """nnU-Net's ``splits_final.json`` content over the training ``cases``: nnU-Net's own 5-fold split (seed
    12345, sorted ids) with 5 or more cases, one fold per case with 2-4 (nnU-Net's default would fail), and with one
    case a single fold that trains and validates on it."""
    if len(cases) == 1:
        return [{"train": list(cases), "val": list(cases)}]
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    splits = generate_crossval_split(sorted(cases), seed=NNUNET_SPLIT_SEED, n_splits=min(5, len(cases)))
    return [{"train": [str(c) for c in fold["train"]], "val": [str(c) for c in fold["val"]]} for fold in splits]


def write_splits(folder: Path, cases: Sequence[str]) -> list[dict[str, list[str]]]:
    """Write :func:`cross_validation_splits` of ``cases`` to ``folder/splits_final.json``; returns the splits."""
    splits = cross_validation_splits(cases)
    (Path(folder) / SPLITS_FILE).write_text(json.dumps(splits, indent=4) + "\n", encoding="utf-8")
    return splits
