"""Where the predictions of a comparison are: arms, their runs, and the prediction file of every case.

An **arm** is one method (e.g. ``nnUNetTrainer`` or ``CMGTrainer``) with one or more **runs** (seeds or trainings of
that method). A run is a folder, either

* an nnU-Net prediction folder holding ``CASE<file_ending>`` files (``nnUNetv2_predict -o``), or
* an nnU-Net model output folder (``nnUNet_results/DatasetNNN_Name/Trainer__Plans__Configuration``) holding
  ``fold_*/`` folders: its validation predictions are read from ``fold_<f>/validation/`` of the chosen folds (every
  ``fold_<number>`` found by default; ``fold_all`` only when asked for, since it validates on its training cases).
  nnU-Net validates each case in exactly one fold, so a case found in two folds is refused.

The file ending of a run's predictions comes from its own ``dataset.json`` (model folders and ``nnUNetv2_predict``
output folders have one), else from the ``dataset.json`` the user gives, else from the files' endings.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunet_mm.io.images import image_ending

logger = logging.getLogger(__name__)

_NUMBERED_FOLD = re.compile(r"fold_(\d+)")
#: folds as nnU-Net's commands name them: a fold number, or "all" for ``fold_all``
Fold = int | str


@dataclass(frozen=True)
class Run:
    """One training of a method: where its predictions are.

    Attributes:
        name: how reports name the run, e.g. ``"cmg run 2"``.
        folder: the folder the user gave (a prediction folder or a model output folder).
        prediction_files: case identifier → prediction file (``CASE<file_ending>``).
        file_ending: the ending of the prediction files, e.g. ``".nii.gz"``.
        dataset_json: the path of the run's own ``dataset.json``, or None when it has none.
    """

    name: str
    folder: Path
    prediction_files: Mapping[str, Path]
    file_ending: str
    dataset_json: Path | None


@dataclass(frozen=True)
class Arm:
    """One method of a comparison and its runs (seeds); per case, reports average a metric over the runs."""

    name: str
    runs: tuple[Run, ...]


def read_dataset_json(path: Path) -> dict[str, Any]:
    """The content of an nnU-Net ``dataset.json``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: it is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset.json {path} does not exist.")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}.") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path} holds a JSON {type(content).__name__}, not an object with 'labels' and "
                         f"'file_ending'.")
    return content


def is_model_folder(folder: Path) -> bool:
    """Whether ``folder`` is an nnU-Net model output folder (it has ``fold_<number>`` or ``fold_all`` folders)."""
    return any(child.is_dir() and (child.name == "fold_all" or _NUMBERED_FOLD.fullmatch(child.name))
               for child in Path(folder).iterdir())


def validation_folders(model_folder: Path, folds: Sequence[Fold] | None = None) -> list[Path]:
    """The ``fold_<f>/validation`` folders of an nnU-Net model output folder.

    Args:
        model_folder: ``.../DatasetNNN_Name/Trainer__Plans__Configuration``.
        folds: fold numbers or ``"all"``; None = every ``fold_<number>`` that has a ``validation`` folder.

    Raises:
        FileNotFoundError: a requested fold has no ``validation`` folder, or (``folds`` None) no fold has one.
    """
    model_folder = Path(model_folder)
    if folds is None:
        numbered = sorted((int(m.group(1)), child) for child in model_folder.iterdir()
                          if child.is_dir() and (m := _NUMBERED_FOLD.fullmatch(child.name)))
        found = [child / "validation" for _, child in numbered if (child / "validation").is_dir()]
        if not found:
            raise FileNotFoundError(f"{model_folder}: no fold_<number>/validation folder; run nnU-Net's validation "
                                    f"(nnUNetv2_train ... --val) first, or pass the folds to read.")
        return found
    folders = [model_folder / f"fold_{fold}" / "validation" for fold in folds]
    missing = [str(f.relative_to(model_folder)) for f in folders if not f.is_dir()]
    if missing:
        present = sorted(str(f.relative_to(model_folder)) for f in model_folder.glob("fold_*/validation"))
        raise FileNotFoundError(f"{model_folder}: {', '.join(missing)} missing (present: {present or 'none'}); "
                                f"run nnU-Net's validation for that fold or choose other folds.")
    return folders


def _prediction_files(folder: Path, file_ending: str) -> dict[str, Path]:
    return {f.name[:-len(file_ending)]: f for f in sorted(folder.iterdir())
            if f.is_file() and not f.name.startswith(".") and f.name.endswith(file_ending)
            and len(f.name) > len(file_ending)}


def infer_file_ending(folders: Sequence[Path]) -> str:
    """The one image ending (``.nii.gz``, ``.nrrd``, ...) of the files in ``folders``.

    Raises:
        ValueError: the folders hold no image file, or files with several endings.
    """
    endings = {ending for folder in folders for f in Path(folder).iterdir()
               if f.is_file() and (ending := image_ending(f)) is not None}
    if len(endings) != 1:
        found = f"files ending in {sorted(endings)}" if endings else "no NIfTI/NRRD/MetaImage files"
        raise ValueError(f"cannot tell the file ending of {', '.join(map(str, folders))}: found {found}; pass a "
                         f"dataset.json with 'file_ending' (--dataset-json).")
    return endings.pop()


def collect_run(folder: Path, *, name: str, folds: Sequence[Fold] | None = None,
                dataset_json: Path | None = None) -> Run:
    """Find the prediction file of every case of one run (see the module docstring).

    Args:
        folder: a prediction folder or an nnU-Net model output folder.
        name: how reports name the run.
        folds: for a model output folder, the folds whose validation predictions to read (None: all numbered folds);
            ignored for a prediction folder.
        dataset_json: the user's ``dataset.json``, used for the file ending when the run has none of its own.

    Raises:
        FileNotFoundError: ``folder`` or a requested fold's validation folder does not exist, or it holds no
            prediction.
        ValueError: a case is in the validation folders of two folds, or the file ending cannot be told.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"run folder {folder} (of {name}) does not exist.")
    own_json = folder / "dataset.json"
    own_json = own_json if own_json.is_file() else None
    if is_model_folder(folder):
        prediction_folders = validation_folders(folder, folds)
    else:
        prediction_folders = [folder]
        if folds is not None:
            logger.debug("%s is a prediction folder, not a model folder: the folds %s do not apply", folder, folds)
    file_ending = None
    for source in (own_json, dataset_json):
        if source is not None and "file_ending" in (content := read_dataset_json(source)):
            file_ending = str(content["file_ending"])
            break
    if file_ending is None:
        file_ending = infer_file_ending(prediction_folders)
    files: dict[str, Path] = {}
    for prediction_folder in prediction_folders:
        for case, file in _prediction_files(prediction_folder, file_ending).items():
            if case in files:
                raise ValueError(f"{folder}: case {case} has validation predictions in {files[case].parent} and "
                                 f"{prediction_folder}; nnU-Net validates each case in one fold, so these folds "
                                 f"do not belong to one cross-validation (leave out fold_all).")
            files[case] = file
    if not files:
        raise FileNotFoundError(f"{', '.join(map(str, prediction_folders))}: no prediction files ending in "
                                f"{file_ending!r} (run {name}).")
    return Run(name=name, folder=folder, prediction_files=dict(sorted(files.items())), file_ending=file_ending,
               dataset_json=own_json)


def collect_arm(name: str, folders: Sequence[Path], *, folds: Sequence[Fold] | None = None,
                dataset_json: Path | None = None) -> Arm:
    """An arm and its runs, one per folder (see :func:`collect_run`).

    Raises:
        ValueError: no folder, or an empty name.
        FileNotFoundError: as :func:`collect_run`.
    """
    if not name:
        raise ValueError("an arm needs a name (NAME=FOLDER[,FOLDER...]).")
    if not folders:
        raise ValueError(f"arm {name} has no run folder.")
    runs = tuple(collect_run(folder, name=name if len(folders) == 1 else f"{name} run {i + 1}", folds=folds,
                             dataset_json=dataset_json)
                 for i, folder in enumerate(folders))
    return Arm(name=name, runs=runs)
