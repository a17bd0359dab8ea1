"""``splits_final.json`` for the raw datasets the plugin writes: nnU-Net's own 5-fold split where it works, folds
that nnU-Net's default would fail on where a dataset has fewer than five training cases, and folds grouped so that
related cases (a case and its tumour-free ``<case>_normal`` twin) never sit on both sides of a fold.

The plugin's trainers copy a raw dataset's ``splits_final.json`` into the preprocessed folder on first use (nnU-Net
reads it only from there), and check it for separated twins (:func:`separated_twins`).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

SPLITS_FILE = "splits_final.json"
NNUNET_SPLIT_SEED = 12345  # nnUNetTrainer.do_split's seed: 5+ training cases get nnU-Net's own split
NORMAL_SUFFIX = "_normal"  # ``nnunet_mm make-normal``: the tumour-free twin of case X is X_normal

Splits = list[dict[str, list[str]]]


def cross_validation_splits(cases: Sequence[str]) -> Splits:
    """nnU-Net's ``splits_final.json`` content over the training ``cases``: nnU-Net's own 5-fold split (seed
    12345, sorted ids) with 5 or more cases, one fold per case with 2-4 (nnU-Net's default would fail), and with one
    case a single fold that trains and validates on it."""
    return grouped_cross_validation_splits({str(case): [str(case)] for case in cases})


def grouped_cross_validation_splits(groups: Mapping[str, Sequence[str]]) -> Splits:
    """Folds over ``groups`` (group key -> its member cases) instead of cases: :func:`cross_validation_splits`'s
    rule applied to the sorted group keys (nnU-Net's split with seed 12345 and ``min(5, number of groups)`` folds; a
    single group trains and validates on itself), each key then replaced by its members, so all members of a group
    land on the same side of every fold. Train and val lists are sorted; groups without members are ignored."""
    members = {str(key): sorted(str(c) for c in cases) for key, cases in groups.items() if len(cases)}
    keys = sorted(members)
    if len(keys) == 1:
        return [{"train": list(members[keys[0]]), "val": list(members[keys[0]])}]
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    splits = generate_crossval_split(keys, seed=NNUNET_SPLIT_SEED, n_splits=min(5, len(keys)))
    return [{side: sorted(c for key in fold[side] for c in members[str(key)]) for side in ("train", "val")}
            for fold in splits]


def normal_twin_groups(cases: Iterable[str]) -> dict[str, list[str]]:
    """Group every case with its ``<case>_normal`` twin where both are among ``cases``; other cases are groups of
    one. Keys are the original cases' ids."""
    present = set(cases)
    groups: dict[str, list[str]] = {}
    for case in sorted(present):
        original = case[:-len(NORMAL_SUFFIX)] if case.endswith(NORMAL_SUFFIX) else None
        groups.setdefault(original if original in present else case, []).append(case)
    return groups


def separated_twins(splits: Sequence[Mapping[str, Sequence[str]]],
                    cases: Iterable[str]) -> list[tuple[int, str, str]]:
    """``(fold, train case, val case)`` for every twin pair (``X`` and ``X_normal``, both among ``cases``) that a
    fold of ``splits`` puts on opposite sides, in fold order; empty when every fold keeps twins together."""
    pairs = [members for members in normal_twin_groups(cases).values() if len(members) == 2]
    found = []
    for index, fold in enumerate(splits):
        train, val = set(fold.get("train", ())), set(fold.get("val", ()))
        for first, second in pairs:
            for a, b in ((first, second), (second, first)):
                if a in train and b in val and not (a in val and b in train):
                    found.append((index, a, b))
    return found


def with_twins(splits: Sequence[Mapping[str, Sequence[str]]], twins: Mapping[str, str],
               keep: Iterable[str]) -> Splits:
    """Extend ``splits`` with twins: each ``twins[original]`` joins every side of every fold its original is on.
    Only cases in ``keep`` or among the twins are written (originals a dataset no longer holds are dropped)."""
    keep = set(keep) | set(twins.values())
    out = []
    for fold in splits:
        out.append({side: sorted({c for c in fold[side] if c in keep}
                                 | {twins[c] for c in fold[side] if c in twins}) for side in ("train", "val")})
    return out


def read_splits(path: Path) -> Splits:
    """A ``splits_final.json``: a list of ``{"train": [...], "val": [...]}`` folds; a ValueError names the file."""
    try:
        splits = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable splits file ({type(error).__name__}: {error})") from None
    if not isinstance(splits, list) or not all(
            isinstance(fold, dict) and all(isinstance(fold.get(side), list) for side in ("train", "val"))
            for fold in splits):
        raise ValueError(f"{path}: expected a list of {{\"train\": [...], \"val\": [...]}} folds")
    return [{side: [str(c) for c in fold[side]] for side in ("train", "val")} for fold in splits]


def save_splits(folder: Path, splits: Sequence[Mapping[str, Sequence[str]]]) -> Path:
    """Write ``splits`` to ``folder/splits_final.json``; returns the path."""
    path = Path(folder) / SPLITS_FILE
    path.write_text(json.dumps([dict(fold) for fold in splits], indent=4) + "\n", encoding="utf-8")
    return path


def write_splits(folder: Path, cases: Sequence[str]) -> Splits:
    """Write :func:`cross_validation_splits` of ``cases`` to ``folder/splits_final.json``; returns the splits."""
    splits = cross_validation_splits(cases)
    save_splits(folder, splits)
    return splits
