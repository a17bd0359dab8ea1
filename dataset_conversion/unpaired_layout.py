"""The unpaired CT/MR layout shared by converters 504 (AMOS CT/MRI) and 509 (MM-WHS CT/MR): one channel whose
modality changes from case to case.

This is the shape of those two challenges, not a generic helper: the channel naming, the ``per_case_modality`` block,
the LPS reorientation and the label-fix notes are decisions taken for them; the converters only find their files and
name their labels.

CT and MR scans of these challenges come from different patients, so they cannot be channels of one case. They
become one single-channel nnU-Net dataset in which every case is either CT or MR, and the modality of each case is
recorded in dataset.json's ``'nnunet_mm'`` block (read by trainers that treat the modalities differently, e.g. CMC)::

    'nnunet_mm': {
        "modalities": {"0": "CT|MR"},                      # channel 0 holds CT or MR, "|"-separated
        "per_case_modality": {"amos_0001": "CT", "amos_0507": "MR", ...},   # every written case, Tr and Ts
        "source": "/abs/path/of/the/input", "converter": "Dataset504_AMOS",
        "notes": ["every image and label reoriented to LPS (identity direction)", ...]
    }

With one modality only, ``"modalities"`` is ``{"0": "CT"}`` or ``{"0": "MR"}``.

**Channel name (normalisation).** nnU-Net picks the normalisation from the channel name
(``map_channel_name_to_normalization``). A mixed dataset is named ``"either_CT_or_MR"`` (nnU-Net's own
Dataset219_Amos2022_task2 does the same): an unknown name, hence z-score per case, which suits both modalities,
whereas CT normalisation (one dataset-wide HU window) would be wrong for MR. A CT-only dataset is named ``"CT"`` (CT
normalisation), an MR-only one ``"MR"`` (z-score).

**Common orientation.** Many AMOS MRIs are coronal and MM-WHS MR volumes come in mixed orientations. Every image and
its label are *physically* reoriented (axes permuted and flipped, voxel values untouched, no resampling) with
SimpleITK's ``DICOMOrient`` to ``LPS``: the first array axis runs to the patient's left, the second posterior, the
third superior, i.e. SimpleITK's identity direction, so that every case is stored axially. nnU-Net's own AMOS
converter instead keeps the files and sets ``overwrite_image_reader_writer='NibabelIOWithReorient'`` (RAS in
nibabel's terms, which differs from LPS only by flips of the first two axes); writing reoriented files keeps the
dataset readable by the default ``SimpleITKIO`` and by every other trainer and tool, and makes the transposition
nnU-Net plans for (lowest resolution axis) the same for every case.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk

from nnunet_mm.conversion.archives import check_inside
from nnunet_mm.conversion.errors import attempt, raise_if_problems
from nnunet_mm.conversion.labels import label_dict, label_value_problems, remap_labels, voxel_counts
from nnunet_mm.conversion.runner import CaseRecord, DatasetSummary, map_cases, summarize
from nnunet_mm.io import (describe_geometry, geometry_differences, read_image, staged_dataset, write_dataset_json,
                          write_image)

logger = logging.getLogger(__name__)

COMMON_ORIENTATION = "LPS"  # DICOM convention: increasing index runs to the patient's Left, Posterior, Superior
MODALITIES: tuple[str, ...] = ("CT", "MR")
MODALITY_CHOICES: tuple[str, ...] = ("all", "ct", "mr")
MIXED_CHANNEL_NAME = "either_CT_or_MR"  # not a nnU-Net scheme name, so z-score per case
CHANNEL_NAME_BY_MODALITY = {"CT": "CT", "MR": "MR"}  # "CT" → CT normalisation; "MR" → z-score
NIFTI_ENDINGS: tuple[str, ...] = (".nii.gz", ".nii")
FILE_ENDING = ".nii.gz"
GEOMETRY_TOLERANCE = 1e-3  # mm (spacing, origin) and direction cosines
ModalityName = Literal["CT", "MR"]


@dataclass(frozen=True)
class UnpairedCase:
    """One input scan and its label.

    Attributes:
        case_id: nnU-Net case identifier (``amos_0507``, ``mr_1010``).
        modality: ``"CT"`` or ``"MR"``.
        image_file: the image.
        label_file: the label; None for unlabelled test scans.
        is_training: True → ``imagesTr``/``labelsTr``; False → ``imagesTs`` (and ``labelsTs`` when labelled).
    """

    case_id: str
    modality: ModalityName
    image_file: Path
    label_file: Path | None
    is_training: bool


@dataclass(frozen=True)
class LabelEncoding:
    """How the label files encode the classes.

    Attributes:
        label_names: names of nnU-Net label values 1, 2, ... (0 is background).
        source_to_nnunet: every allowed source value → nnU-Net value (a whitelist; includes ``0: 0``).
        fixes: known stray source values → the source value they stand for (MM-WHS ``{421: 420}``); every
            replacement is logged and listed in the dataset.json notes.
        hint: appended to the message about unknown values.
    """

    label_names: tuple[str, ...]
    source_to_nnunet: Mapping[int, int]
    fixes: Mapping[int, int] | None = None
    hint: str = ""


# ----------------------------------------------------------------------------------------------------------------
# modalities and channel names

def selected_modalities(modality: str) -> tuple[ModalityName, ...]:
    """``"all"`` → ``("CT", "MR")``, ``"ct"`` → ``("CT",)``, ``"mr"`` → ``("MR",)`` (case-insensitive).

    Raises:
        ValueError: another value (the message lists the valid ones).
    """
    choice = str(modality).strip().lower()
    if choice not in MODALITY_CHOICES:
        raise ValueError(f"modality must be one of {list(MODALITY_CHOICES)}, got {modality!r}.")
    return MODALITIES if choice == "all" else (choice.upper(),)  # type: ignore[return-value]


def channel_name(modalities: Sequence[str]) -> str:
    """The dataset.json channel name for a dataset holding ``modalities`` (see the module docstring)."""
    present = sorted(set(modalities))
    if len(present) == 1:
        return CHANNEL_NAME_BY_MODALITY[present[0]]
    return MIXED_CHANNEL_NAME


def modality_block(cases: Sequence[UnpairedCase]) -> dict[str, object]:
    """``{"modalities": {"0": "CT|MR"}, "per_case_modality": {case_id: "CT" | "MR"}}`` for dataset.json."""
    present = [m for m in MODALITIES if any(case.modality == m for case in cases)]
    return {"modalities": {"0": "|".join(present)},
            "per_case_modality": {case.case_id: case.modality for case in sorted(cases, key=lambda c: c.case_id)}}


# ----------------------------------------------------------------------------------------------------------------
# finding input files

def nifti_stem(path: Path) -> str | None:
    """``"amos_0001"`` for ``amos_0001.nii.gz`` or ``amos_0001.nii`` (any case of the ending), else None."""
    name = Path(path).name
    for ending in NIFTI_ENDINGS:
        if name.lower().endswith(ending) and len(name) > len(ending):
            return name[:-len(ending)]
    return None


def find_nifti_files(root: Path, *, recursive: bool, input_root: Path | None = None) -> tuple[list[Path], list[str]]:
    """NIfTI files in ``root`` (hidden entries skipped; sub-folders too when ``recursive``), sorted, and one problem per
    symbolic link that resolves outside ``input_root`` (default ``root``), i.e. escapes the input. Links that stay
    inside are followed."""
    root = Path(root)
    input_root = root if input_root is None else Path(input_root)
    files: list[Path] = []
    problems: list[str] = []
    visited: set[Path] = set()
    folders = [root]
    while folders:
        folder = folders.pop()
        real = folder.resolve()
        if real in visited:  # a link loop, or two links to one folder
            continue
        visited.add(real)
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_symlink():
                try:
                    check_inside(entry, input_root)
                except ValueError as error:
                    problems.append(str(error))
                    continue
            if entry.is_dir():
                if recursive:
                    folders.append(entry)
            elif entry.is_file() and nifti_stem(entry) is not None:
                files.append(entry)
    return sorted(files), problems


def duplicate_id_problems(cases: Sequence[UnpairedCase]) -> list[str]:
    """One problem per case id that more than one image file maps to (ignoring case: ids differing only in case
    collide on case-insensitive file systems), naming all those files."""
    files_by_id: dict[str, list[Path]] = {}
    for case in cases:
        files_by_id.setdefault(case.case_id.lower(), []).append(case.image_file)
    return [f"{files[1]}: duplicate case id '{key}': {[str(f) for f in files]} all map to it; keep only one."
            for key, files in files_by_id.items() if len(files) > 1]


# ----------------------------------------------------------------------------------------------------------------
# checking and converting one case

def orientation_code(image: sitk.Image) -> str:
    """Three-letter DICOM orientation of ``image``'s axes, e.g. ``"LPS"`` (axial) or ``"LIP"`` (coronal)."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def reorient(image: sitk.Image) -> sitk.Image:
    """``image`` with its axes permuted and flipped to :data:`COMMON_ORIENTATION` (voxel values unchanged)."""
    return sitk.DICOMOrient(image, COMMON_ORIENTATION)


def _geometry_problem(label: sitk.Image, image: sitk.Image, case: UnpairedCase) -> str | None:
    differences = geometry_differences(label, image, tolerance=GEOMETRY_TOLERANCE)
    if not differences:
        return None
    return (f"{case.label_file}: label is not on the grid of its image {case.image_file} ({', '.join(differences)} "
            f"differ): label {describe_geometry(label)}; image {describe_geometry(image)}.")


def check_case(case: UnpairedCase, *, encoding: LabelEncoding) -> list[str]:
    """Read the files of ``case``; one problem line per unreadable or non-3D file, label off the image grid, or label
    value outside the whitelist (stray values listed in ``encoding.fixes`` are accepted)."""
    problems: list[str] = []
    image = attempt(problems, read_image, case.image_file)
    label = attempt(problems, read_image, case.label_file) if case.label_file is not None else None
    if label is None:
        return problems
    if image is not None:
        mismatch = _geometry_problem(label, image, case)
        if mismatch:
            problems.append(mismatch)
    allowed = set(encoding.source_to_nnunet) | set(encoding.fixes or {})
    values = np.unique(sitk.GetArrayViewFromImage(label))
    problems.extend(label_value_problems(values, allowed, case.label_file, hint=encoding.hint))
    return problems


def convert_case(case: UnpairedCase, *, staging_dir: Path, encoding: LabelEncoding) -> CaseRecord:
    """Write the reoriented image (and remapped, reoriented label) of a case checked by :func:`check_case`.

    Returns:
        The record for the summary; ``extra`` holds ``modality``, ``orientation`` (as acquired) and
        ``fixed_voxels`` (stray source value → voxels replaced).
    """
    image = read_image(case.image_file)
    image_folder = "imagesTr" if case.is_training else "imagesTs"
    written = reorient(image)
    write_image(written, staging_dir / image_folder / f"{case.case_id}_0000{FILE_ENDING}")
    extra: dict[str, object] = {"modality": case.modality, "orientation": orientation_code(image),
                                "fixed_voxels": {}}
    counts = None
    if case.label_file is not None:
        # int64: check_case accepted only integer values, and remap_labels marks fixed voxels with -1, which would
        # wrap around in an unsigned array (uint16 MM-WHS labels)
        source = sitk.GetArrayFromImage(read_image(case.label_file)).astype(np.int64)
        extra["fixed_voxels"] = {stray: int(np.count_nonzero(source == stray)) for stray in (encoding.fixes or {})
                                 if np.any(source == stray)}
        values = remap_labels(source, encoding.source_to_nnunet, case.label_file, fixes=encoding.fixes)
        label = sitk.GetImageFromArray(values)
        label.CopyInformation(image)  # check_case accepted the label's grid as equal within GEOMETRY_TOLERANCE
        label = reorient(label)
        label_folder = "labelsTr" if case.is_training else "labelsTs"
        write_image(label, staging_dir / label_folder / f"{case.case_id}{FILE_ENDING}")
        counts = voxel_counts(values, len(encoding.label_names) + 1) if case.is_training else None
    return CaseRecord(case_id=case.case_id, is_training=case.is_training,
                      spacing=tuple(float(s) for s in written.GetSpacing()), label_voxel_counts=counts, extra=extra)


# ----------------------------------------------------------------------------------------------------------------
# the whole dataset

def _notes(cases: Sequence[UnpairedCase], records: Sequence[CaseRecord], encoding: LabelEncoding) -> list[str]:
    """Lines for the printed summary and dataset.json: modality counts, reorientation, label fixes."""
    by_modality = Counter(case.modality for case in cases)
    name = channel_name(list(by_modality))
    notes = [f"modalities: {', '.join(f'{by_modality[m]} {m}' for m in MODALITIES if by_modality[m])} case(s); "
             f"channel 0 '{name}' ({'CT' if name == 'CT' else 'z-score'} normalisation in nnU-Net); per-case "
             f"modality in dataset.json nnunet_mm.per_case_modality"]
    acquired = Counter(str(record.extra["orientation"]) for record in records)
    moved = {code: n for code, n in acquired.items() if code != COMMON_ORIENTATION}
    notes.append(f"orientation: every image and label written in {COMMON_ORIENTATION} (identity direction); "
                 + (f"reoriented {sum(moved.values())} case(s) acquired as "
                    + ", ".join(f"{code} ({n})" for code, n in sorted(moved.items()))
                    if moved else "all cases were already " + COMMON_ORIENTATION))
    label_file = {case.case_id: case.label_file for case in cases}
    for record in records:
        for stray, count in dict(record.extra["fixed_voxels"]).items():
            notes.append(f"label fix: {label_file[record.case_id]}: {count} voxel(s) with the stray value {stray} "
                         f"read as {encoding.fixes[stray]}")
    return notes


def convert_unpaired_dataset(cases: Sequence[UnpairedCase], problems: Sequence[str], *, source_dir: Path,
                             final_dir: Path, encoding: LabelEncoding, converter: str, overwrite: bool,
                             num_processes: int, **dataset_json_fields: object) -> DatasetSummary:
    """Check every case, then write the dataset into a staging folder renamed to ``final_dir`` at the end.

    Args:
        cases: the cases to write (already filtered by modality).
        problems: problems the caller found while discovering the files; reported together with the per-case ones.
        source_dir: the input (recorded in dataset.json and named in errors).
        final_dir: ``<output root>/DatasetNNN_Name``, checked by :func:`nnunet_mm.conversion.prepare_output`.
        encoding: the label whitelist, mapping and known fixes.
        converter: the converter module name, recorded in dataset.json.
        overwrite: replace an existing ``final_dir``.
        num_processes: cases checked and converted in parallel.
        **dataset_json_fields: ``description``, ``reference``, ``license``, ``release`` ... for dataset.json.

    Returns:
        The summary (printed by the command line).

    Raises:
        ConversionError: every problem found, before anything is written.
    """
    problems = list(problems)
    if not any(case.is_training for case in cases) and not problems:
        problems.append(f"{source_dir}: no labelled training case found for the selected modalities; nnU-Net needs "
                        f"at least one.")
    if cases:
        per_case = map_cases(partial(check_case, encoding=encoding), list(cases), num_processes=num_processes,
                             description=f"{final_dir.name} check")
        problems += [problem for lines in per_case for problem in lines]
    raise_if_problems(problems, source_dir)

    channel_names = {"0": channel_name([case.modality for case in cases])}
    with staged_dataset(final_dir, overwrite=overwrite) as staging:
        for folder in ("imagesTr", "labelsTr", "imagesTs"):
            (staging / folder).mkdir()
        if any(not case.is_training and case.label_file is not None for case in cases):
            (staging / "labelsTs").mkdir()
        records = map_cases(partial(convert_case, staging_dir=staging, encoding=encoding), list(cases),
                            num_processes=num_processes, description=f"{final_dir.name} convert")
        notes = _notes(cases, records, encoding)
        summary = summarize(records, output_dir=final_dir, channel_names=channel_names,
                            labels=label_dict(encoding.label_names), notes=notes)
        block = {**modality_block(cases), "source": str(Path(source_dir).resolve()), "converter": converter,
                 "notes": notes}
        write_dataset_json(staging, channel_names=channel_names, labels=summary.labels,
                           num_training=summary.num_training, file_ending=FILE_ENDING, dataset_name=final_dir.name,
                           nnunet_mm_block=block, **dataset_json_fields)
    logger.info("converted %d training and %d test case(s) into %s", summary.num_training, summary.num_test,
                final_dir)
    return summary
