"""CHAOS (ISBI 2019, Combined CT-MR Healthy Abdominal Organ Segmentation): the source layout, DICOM slices read by
position whatever their series UIDs, and Ground PNG stacks placed on those volumes.

Layout (docs/datasets.md §2.1)::

    CHAOS_Train_Sets/Train_Sets/
        CT/<id>/DICOM_anon/i0000,0000b.dcm ...       CT/<id>/Ground/liver_GT_000.png ...
        MR/<id>/T1DUAL/DICOM_anon/{InPhase,OutPhase}/IMG-....dcm     MR/<id>/T1DUAL/Ground/IMG-....png
        MR/<id>/T2SPIR/DICOM_anon/IMG-....dcm                        MR/<id>/T2SPIR/Ground/IMG-....png

The test sets have the same layout without ``Ground``. :func:`find_modality_folder` accepts the folder that holds
``CT/`` and ``MR/`` or any folder up to two levels above it.

Slice order. The files of a folder are read as one volume with slices sorted by position
(:func:`nnunet_mm.conversion.read_dicom_volume`, ascending along the slice normal), never grouped by series UID.
jonasteuwen/chaos-challenge says the anonymised files "all have different InstanceUIDs making these hard to read with
standard tools" and reads its MR files by SliceLocation instead (its CT reader still asserts one GDCM series); which
UIDs differ per file was not checked on data here (none available), and reading by position works either way. A
Ground stack is a list of PNGs in natural name order, placed on the volume by one of three :data:`MaskOrder` rules:

* ``"dicom_file_order"`` (MR): PNG k lies on the slice of DICOM file k in natural name order, wherever that slice is
  in space. Third-party scripts that read CHAOS MR pair Ground ``IMG-0004-00046.png`` with the T1 slice of the same
  number, in-phase files carrying the even numbers and out-phase files the odd ones (in-phase ``n`` with out-phase
  ``n-1``), so the name order is the pairing. nnU-Net v1 (``Task037_038_Chaos_Challenge.py``:
  ``load_png_stack(...)[::-1]``, reversed once more outside) and jonasteuwen (PNG number vs SliceLocation) both pair
  PNG k with the k-th slice in ascending position; that agrees with the file order when the file numbers grow with
  the position, which could not be checked here. The converter reports per series how the numbers ran.
* ``"reversed_position"`` (CT default): PNG k lies on slice N-1-k of the position-sorted volume. jonasteuwen reverses
  the CT Ground list ("I need to do this for the CT masks, the seem to be flipped") after GDCM's series sort, which
  orders by ascending position (checked here with SimpleITK 2.5); from that code, not checked against data.
* ``"position"``: PNG k lies on slice k of the position-sorted volume (CT with ``--no-flip-ct-masks``).

MR grey levels become labels by the bins of nnU-Net v1's ``convert_MR_seg`` and jonasteuwen's ``class_mapping`` (the
two agree); both read the CT Ground as liver-only, jonasteuwen with ``== 1``, so ``> 0`` covers the 1 and 255 copies.
"""
from __future__ import annotations

import argparse
import contextlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk

from nnunet_mm.conversion.archives import check_inside, source_folder
from nnunet_mm.conversion.dicom import TAG_ECHO_TIME, dicom_files, header_value, read_dicom_volume, sort_by_position
from nnunet_mm.conversion.errors import raise_if_problems
from nnunet_mm.conversion.labels import bin_intensities
from nnunet_mm.conversion.runner import case_id_collisions, map_cases, sanitize_case_id
from nnunet_mm.conversion.slices import natural_key, numeric_sorted, read_slice

MaskOrder = Literal["dicom_file_order", "reversed_position", "position"]
MASK_ORDERS: tuple[str, ...] = ("dicom_file_order", "reversed_position", "position")

#: MR Ground grey levels → labels, ``(low, high, value)`` meaning ``low < v <= high`` (nnU-Net v1 ``convert_MR_seg``,
#: jonasteuwen ``class_mapping``); the PNGs use 63, 126, 189 and 252.
MR_GROUND_BINS: tuple[tuple[float, float, int], ...] = ((55, 70, 1), (110, 135, 2), (175, 200, 3), (240, 255, 4))
MR_LABEL_NAMES: tuple[str, ...] = ("liver", "right_kidney", "left_kidney", "spleen")
CT_LABEL_NAMES: tuple[str, ...] = ("liver",)
GROUND_FOLDER = "Ground"
DICOM_FOLDER = "DICOM_anon"
SPLIT_SEED = 12345  # nnU-Net's default seed for its own 5-fold split
_IGNORED_FOLDERS = ("__MACOSX",)


def child_folder(folder: Path, name: str) -> Path | None:
    """The sub-folder of ``folder`` called ``name``, ignoring case; None if there is none."""
    if not folder.is_dir():
        return None
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and entry.name.lower() == name.lower():
            return entry
    return None


def _sub_folders(folder: Path) -> list[Path]:
    return [entry for entry in sorted(folder.iterdir())
            if entry.is_dir() and not entry.name.startswith(".") and entry.name not in _IGNORED_FOLDERS]


def find_modality_folder(source: Path, modality: str) -> Path:
    """The ``CT`` or ``MR`` folder of a CHAOS source: a sub-folder ``modality`` of ``source`` or of a folder up to two
    levels below it (``CHAOS_Train_Sets/Train_Sets/MR``), matched ignoring case.

    Raises:
        ValueError: none found, or several (e.g. a folder holding both the train and the test sets).
    """
    holders, level = [source], [source]
    for _ in range(2):
        level = [sub for folder in level for sub in _sub_folders(folder)]
        holders += level
    found = [folder for folder in (child_folder(holder, modality) for holder in holders) if folder is not None]
    if not found:
        raise ValueError(f"{source}: no {modality}/ folder found in it or up to two levels below; expected the CHAOS "
                         f"layout .../Train_Sets/{modality}/<patient>/... (pass the folder that holds CT/ and MR/, a "
                         f"parent of it, or a .zip of it).")
    if len(found) > 1:
        raise ValueError(f"{source}: several {modality}/ folders found: {[str(f) for f in found]}; pass the folder of "
                         f"one set (the test set goes to --test-source).")
    return found[0]


@dataclass(frozen=True)
class Patient:
    """One patient folder ``CT/<id>`` or ``MR/<id>`` inside the source folder ``root``; training patients have Ground
    masks."""

    case_id: str
    folder: Path
    root: Path
    is_training: bool


def case_id_of(prefix: str, folder_name: str) -> str:
    """``<prefix>_<id>``: numeric ids lose leading zeros (``"01"`` and ``"1"`` are one patient)."""
    name = str(int(folder_name)) if folder_name.isdigit() else sanitize_case_id(folder_name)
    return f"{prefix}_{name}"


def find_patients(modality_dir: Path, *, root: Path, prefix: str,
                  is_training: bool) -> tuple[list[Patient], list[str]]:
    """The patient folders of ``modality_dir`` (inside the source folder ``root``); problems: none found."""
    folders = _sub_folders(modality_dir)
    if not folders:
        return [], [f"{modality_dir}: no patient folders found (the folder is empty); expected "
                    f"{modality_dir}/<patient id>/..."]
    return [Patient(case_id_of(prefix, folder.name), folder, root, is_training) for folder in folders], []


def duplicate_case_problems(patients: Sequence[Patient]) -> list[str]:
    """One problem per case id that two patient folders map to (within or across the train and test sets)."""
    return [f"{patient.folder}: duplicate case id '{patient.case_id}': {first.folder} maps to the same id; every "
            f"patient must appear once in the train and test sets together."
            for patient, first in case_id_collisions(patients, lambda patient: patient.case_id)]


def discover_patients(source: Path, test_source: Path | None, *, modality: str,
                      prefix: str) -> tuple[list[Patient], list[str]]:
    """Training patients of ``source`` and test patients of ``test_source`` (already extracted folders).

    Returns:
        The patients, training first, and the problems (missing modality folder, empty folder, duplicate ids).
    """
    patients: list[Patient] = []
    problems: list[str] = []
    for root, is_training in ((source, True), (test_source, False)):
        if root is None:
            continue
        try:
            modality_dir = find_modality_folder(root, modality)
        except ValueError as error:
            problems.append(str(error))
            continue
        found, empty = find_patients(modality_dir, root=root, prefix=prefix, is_training=is_training)
        patients += found
        problems += empty
    return patients, problems + duplicate_case_problems(patients)


def add_source_arguments(parser: argparse.ArgumentParser, modality: str) -> None:
    """The positional ``source_dir`` and ``--test-source`` of the CHAOS converter for ``modality`` (``CT``, ``MR``)."""
    parser.add_argument("source_dir", type=Path,
                        help=f"CHAOS training set: the folder holding {modality}/ (CHAOS_Train_Sets/Train_Sets), a "
                             f"parent up to two levels above it, or a .zip/.tar of it")
    parser.add_argument("--test-source", type=Path, default=None,
                        help="CHAOS test set in the same layout (no Ground), written to imagesTs")


@contextlib.contextmanager
def source_folders(source_dir: Path, test_source: Path | None) -> Iterator[tuple[Path, Path | None]]:
    """The training and (optional) test sets as folders, archives extracted
    (:func:`nnunet_mm.conversion.source_folder`)."""
    with source_folder(source_dir) as root, \
            (source_folder(test_source) if test_source is not None else contextlib.nullcontext()) as test_root:
        yield root, test_root


def source_block(source_dir: Path, test_source: Path | None) -> dict[str, str | None]:
    """``{"train": <absolute source_dir>, "test": <absolute test_source> | None}``, for the ``'nnunet_mm'`` block."""
    return {"train": str(Path(source_dir).resolve()),
            "test": None if test_source is None else str(Path(test_source).resolve())}


def checked_patients(source: Path, test_source: Path | None, *, modality: str, prefix: str,
                     check: Callable[[Patient], list[str]], num_processes: int, description: str,
                     reported_source: Path) -> list[Patient]:
    """Find the patients of the (extracted) ``source`` and ``test_source`` folders and ``check`` every one of them
    (in ``num_processes`` processes, with a progress bar).

    Raises:
        ConversionError: every problem found, one line each, under the name ``reported_source``.
    """
    patients, problems = discover_patients(source, test_source, modality=modality, prefix=prefix)
    checked = map_cases(check, patients, num_processes=num_processes, description=description)
    raise_if_problems(problems + [problem for per_patient in checked for problem in per_patient], reported_source)
    return patients


def required_folder(parent: Path, *names: str) -> Path:
    """``parent/names[0]/names[1]/...``, each part matched ignoring case; ValueError naming the first missing folder."""
    folder = parent
    for name in names:
        found = child_folder(folder, name)
        if found is None:
            present = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in folder.iterdir())
            raise ValueError(f"{folder / name}: missing folder (the CHAOS layout has it; {folder} holds {present}).")
        folder = found
    return folder


@dataclass(frozen=True)
class DicomSeries:
    """A folder (or list) of DICOM slices read as one volume, slices in ascending position.

    Attributes:
        where: the folder the files are in, for messages.
        image: the volume.
        slice_of_file: z index in ``image`` of the k-th file in natural name order.
    """

    where: Path
    image: sitk.Image
    slice_of_file: tuple[int, ...]

    @property
    def file_order(self) -> str:
        """``"ascending"`` when file names grow with the slice position, ``"descending"`` when they fall, else
        ``"mixed"``."""
        order = list(self.slice_of_file)
        if order == sorted(order):
            return "ascending"
        if order == sorted(order, reverse=True):
            return "descending"
        return "mixed"


def read_series(files: Sequence[Path], *, where: Path, root: Path) -> DicomSeries:
    """Read ``files`` (any order) as one volume sorted by position.

    Raises:
        ValueError: no files, a file outside ``root`` (symbolic link), unreadable or inconsistent slices; the
            message names the file or ``where``.
    """
    if not files:
        raise ValueError(f"{where}: no DICOM files found.")
    for file in files:
        check_inside(file, root)
    by_name = numeric_sorted(list(files))
    by_position = sort_by_position(by_name)
    image = read_dicom_volume(by_position)
    rank = {path: z for z, path in enumerate(by_position)}
    return DicomSeries(where, image, tuple(rank[path] for path in by_name))


def read_series_folder(folder: Path, *, root: Path) -> DicomSeries:
    """:func:`read_series` on the DICOM files directly in ``folder``."""
    return read_series(dicom_files(folder), where=folder, root=root)


@dataclass(frozen=True)
class EchoFiles:
    """The two echoes of a T1-DUAL acquisition, each with the folder its files are in (for messages)."""

    in_phase: list[Path]
    out_phase: list[Path]
    in_phase_where: Path
    out_phase_where: Path
    split_by: str  # "folders" or "echo time"


def t1dual_echo_files(dicom_anon: Path, *, root: Path) -> EchoFiles:
    """In-phase and out-phase files of ``T1DUAL/DICOM_anon``.

    With ``InPhase/`` and ``OutPhase/`` sub-folders those are used (``split_by="folders"``). Without them, the files
    directly in ``DICOM_anon`` are split by EchoTime (``split_by="echo time"``): the longer echo is in phase at 1.5 T,
    the field strength of CHAOS MR (jonasteuwen/chaos-challenge: "longer echo time is the in-phase image").

    Raises:
        ValueError: one sub-folder without the other, no files, a file without EchoTime, or not exactly two echo
            times; the message names the folder or file.
    """
    in_folder, out_folder = child_folder(dicom_anon, "InPhase"), child_folder(dicom_anon, "OutPhase")
    if in_folder is not None or out_folder is not None:
        if in_folder is None or out_folder is None:
            missing = "InPhase" if in_folder is None else "OutPhase"
            raise ValueError(f"{dicom_anon / missing}: missing folder (T1-DUAL needs InPhase/ and OutPhase/, or "
                             f"both echoes directly in {dicom_anon} to be split by echo time).")
        return EchoFiles(dicom_files(in_folder), dicom_files(out_folder), in_folder, out_folder, "folders")
    files = dicom_files(dicom_anon)
    if not files:
        raise ValueError(f"{dicom_anon}: no DICOM files and no InPhase/ and OutPhase/ folders.")
    by_echo: dict[float, list[Path]] = {}
    for file in files:
        check_inside(file, root)
        text = header_value(file, TAG_ECHO_TIME)
        try:
            echo_time = round(float(text), 3)
        except (TypeError, ValueError):
            raise ValueError(f"{file}: no usable EchoTime (0018,0081) ({text!r}); T1-DUAL files without "
                             f"InPhase/OutPhase folders are split by echo time.") from None
        by_echo.setdefault(echo_time, []).append(file)
    if len(by_echo) != 2:
        raise ValueError(f"{dicom_anon}: expected two echo times (opposed and in phase), found "
                         f"{sorted(by_echo)} ms; put the echoes into InPhase/ and OutPhase/ folders.")
    shorter, longer = sorted(by_echo)
    return EchoFiles(by_echo[longer], by_echo[shorter], dicom_anon, dicom_anon, "echo time")


def read_ground(folder: Path, *, root: Path) -> tuple[list[Path], np.ndarray]:
    """The Ground PNGs of ``folder`` in natural name order and their ``(k, y, x)`` stack.

    Raises:
        ValueError: no PNGs, an unreadable or non-grey PNG, or a PNG whose size differs from that of most others
            (the message names the file).
    """
    files = numeric_sorted([p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png"])
    if not files:
        raise ValueError(f"{folder}: no Ground PNG files found.")
    planes = []
    for file in files:
        check_inside(file, root)
        planes.append(read_slice(file))
    shapes = Counter(plane.shape for plane in planes)
    common = shapes.most_common(1)[0][0]
    for file, plane in zip(files, planes):
        if plane.shape != common:
            raise ValueError(f"{file}: size {plane.shape[1]} x {plane.shape[0]} (x, y) differs from the other Ground "
                             f"PNGs of {folder} ({common[1]} x {common[0]}).")
    return files, np.stack(planes)


def place_ground(stack: np.ndarray, series: DicomSeries, *, ground_folder: Path, order: MaskOrder) -> np.ndarray:
    """Put the Ground ``stack`` (PNG order) onto the slices of ``series`` following ``order``.

    Returns:
        ``(z, y, x)`` array aligned with ``series.image``.

    Raises:
        ValueError: a slice count or in-plane size that differs from the DICOM series (names both folders).
    """
    size_x, size_y, num_slices = series.image.GetSize()
    if stack.shape[0] != num_slices:
        raise ValueError(f"{ground_folder}: {stack.shape[0]} Ground PNGs but {num_slices} DICOM slices in "
                         f"{series.where}; each slice needs exactly one mask.")
    if stack.shape[1:] != (size_y, size_x):
        raise ValueError(f"{ground_folder}: Ground PNGs are {stack.shape[2]} x {stack.shape[1]} (x, y) but the DICOM "
                         f"slices in {series.where} are {size_x} x {size_y}.")
    if order == "dicom_file_order":
        placed = np.empty_like(stack)
        placed[list(series.slice_of_file)] = stack
        return placed
    if order == "reversed_position":
        return stack[::-1].copy()
    if order == "position":
        return stack
    raise ValueError(f"unknown mask order {order!r}; expected one of {list(MASK_ORDERS)}.")


def mr_ground_labels(files: Sequence[Path], stack: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Labels 0-4 from MR Ground grey levels (:data:`MR_GROUND_BINS`), and one problem per PNG with grey levels
    outside every bin (naming the PNG)."""
    labels = np.zeros(stack.shape, dtype=np.uint8)
    problems = []
    for k, file in enumerate(files):
        try:
            labels[k] = bin_intensities(stack[k], MR_GROUND_BINS, file)
        except ValueError as error:
            problems.append(str(error))
    return labels, problems


def ct_ground_labels(stack: np.ndarray) -> np.ndarray:
    """Liver = every non-zero pixel (copies of the CT Ground use 1 or 255)."""
    return (stack > 0).astype(np.uint8)


def patient_splits(case_ids: Sequence[str], *, num_folds: int = 5,
                   seed: int = SPLIT_SEED) -> list[dict[str, list[str]]]:
    """nnU-Net's ``splits_final.json`` content (``[{"train": [...], "val": [...]}, ...]``) over ``case_ids``, one case
    per patient, so the folds are grouped by patient; ``min(num_folds, len(case_ids))`` folds with nnU-Net's own
    ``generate_crossval_split`` on the sorted ids.

    Raises:
        ValueError: fewer than two cases.
    """
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    identifiers = sorted(case_ids, key=natural_key)
    if len(identifiers) < 2:
        raise ValueError(f"a cross-validation split needs at least two training patients, got {identifiers}.")
    splits = generate_crossval_split(identifiers, seed=seed, n_splits=min(num_folds, len(identifiers)))
    return [{"train": [str(c) for c in fold["train"]], "val": [str(c) for c in fold["val"]]} for fold in splits]
