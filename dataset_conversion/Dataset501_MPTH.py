"""Dataset501_MPTH: two-phase liver CT (portal-venous + arterial) as per-slice files, with per-phase liver and tumour
masks (the MPTH layout of lzhLab/cross-modal-guidance) → nnU-Net raw.

Input (a folder, or a ``.zip``/``.tar`` archive of it)::

    <source>/train_img/{pv,art}/<case>/<slice>.png     image slices
    <source>/liver_mask/{pv,art}/<case>/<slice>.png    liver mask (liver including tumour), any value > 0 = inside
    <source>/tumor_mask/{pv,art}/<case>/<slice>.png    tumour mask, any value > 0 = inside

* Slices are stacked in numeric order of their names (``2.png`` before ``10.png``), slice ``k`` of that order at
  z index ``k``. Every ``.png`` name is sniffed: real PNGs (8 or 16 bit) and serialised arrays saved under a
  ``.png`` name (``torch.save`` / ``np.save``; the seed code reads its images with ``torch.load``) are both accepted.
  Serialised arrays are read with ``torch.load(weights_only=True)`` (numpy arrays through an allowlist of numpy's
  array-rebuilding functions and numeric dtypes only, so no pickled code runs) or ``np.load(allow_pickle=False)``.
* Image intensities: serialised arrays are taken as stored (HU). PNG slices are shifted by ``png_offset``
  (``--png-offset``): by default 1024 for 16-bit PNGs (HU + 1024, the convention of
  :func:`nnunet_mm.phantom.write_mpth`) and 0 for 8-bit PNGs, which hold display grey values rather than HU (a
  warning says so).
* The phases are paired slice by slice (the seed loader derives the ART path from the PV path by string
  replacement), so every phase of a case must hold the same slice file names, and every mask folder the same names
  as its image folder. The phases are not voxel-registered: each has its own masks.
* There is no spacing metadata; give ``spacing_zyx_mm`` (``--spacing z y x``), otherwise 1 mm isotropic (voxel units)
  is used and a warning says so. Origin 0, identity direction.
* A case whose mask folders are all missing is a test case; a case with some but not all of its
  ``2 × len(phases)`` mask folders is an error.
* Symbolic links are followed only while they stay inside the source folder: a folder (``train_img/``, a phase or
  case folder, a mask folder) or slice file that resolves outside it is refused (named, with where it points), and
  nothing below such a folder is listed or read.

Output, in ``<output_root>/Dataset501_MPTH/``:

* ``imagesTr/<case>_0000.nii.gz`` = reference phase (first of ``phases``, default ``pv``), ``_0001`` = ``art`` (and
  so on for more phases), all on the reference grid: with ``register="none"`` the other stacks are taken as they
  are (they share the slice grid), with ``"rigid"``/``"affine"`` each is registered to the reference (Mattes mutual
  information, starting from the identity) and resampled onto it (linear). Unlabelled cases go to ``imagesTs``.
* ``labelsTr/<case>.nii.gz``: labels of the reference phase, 0 background, 1 liver, 2 tumour (tumour overrides
  liver), uint8.
* ``labelsTr_phases/<case>_<channel:04d>.nii.gz``: the labels of each non-reference channel (``_0001`` = ART), same
  0/1/2 encoding, drawn on that phase's own masks and moved with the same transform as its image (nearest
  neighbour), so they lie on the grid of ``imagesTr`` — for per-phase supervision (CMG). dataset.json's
  ``'nnunet_mm'`` block names the folder in ``"phase_labels_dir"``.
* ``dataset.json``: every channel is named ``"CT"`` (CT normalisation); the phase names, registration, source and
  the spacing/intensity conventions are in the ``'nnunet_mm'`` block, which declares ``"channel_acquisition":
  "separate"`` for two or more phases (so the trainer's misalignment and modality dropout are on).

Facts from ``docs/datasets.md`` §2.8 checked against the seed code (``datasets/dataset.py`` and ``README.md`` of
lzhLab/cross-modal-guidance): the folder layout, ``.png`` listing, ``torch.load`` of images (the result goes through
``PIL.Image.fromarray``, so the files hold numpy arrays, not tensors), ``convert('L')`` masks, the ART path by
replacing ``/pv`` with ``/art``, the liver mask used as a 0/1 multiplier, and numeric slice names (the README shows
cases ``1, 2, ...`` with slices ``1.png, 2.png, ...``). Not confirmed, since no MPTH data is available: the HU
scale of the stored arrays, the tumour mask values (0/255 is assumed, any value > 0 counts), the 512 × 512 slice
size, and the spacing.

Every case is checked (every slice read) before anything is written; the other guarantees of every converter are
in :mod:`nnunet_mm.dataset_conversion`.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk

from nnunet_mm.conversion import (
    CaseRecord,
    ConversionError,
    DatasetSummary,
    add_common_arguments,
    check_inside,
    comma_list,
    converter_main,
    image_from_array,
    label_dict,
    map_cases,
    natural_key,
    prepare_output,
    raise_if_problems,
    read_slice,
    sanitize_case_id,
    sniff_format,
    source_folder,
    summarize,
    voxel_counts,
)
from nnunet_mm.evaluation.metrics import dice
from nnunet_mm.io import (register as register_images, resample_to_reference, staged_dataset, write_dataset_json,
                          write_image)

logger = logging.getLogger(__name__)

DATASET_ID = 501
DATASET_NAME = "MPTH"
DEFAULT_PHASES = ("pv", "art")
IMAGE_FOLDER = "train_img"
LIVER_MASK_FOLDER = "liver_mask"
TUMOUR_MASK_FOLDER = "tumor_mask"
MASK_FOLDERS = (LIVER_MASK_FOLDER, TUMOUR_MASK_FOLDER)
SLICE_SUFFIX = ".png"  # the seed loader lists slices by this suffix, whatever the files hold
LABELS = label_dict(("liver", "tumor"))
DEFAULT_SPACING_ZYX_MM = (1.0, 1.0, 1.0)  # MPTH has no spacing metadata: voxel units unless the user knows better
PNG16_OFFSET = 1024.0  # 16-bit PNG slices store HU + 1024 (nnunet_mm.phantom.write_mpth)
REGISTRATION_CHOICES = ("none", "rigid", "affine")
PHASE_LABELS_DIR = "labelsTr_phases"
FILE_ENDING = ".nii.gz"
CHANNEL_NAME = "CT"  # nnU-Net picks CT normalisation by this name
INT16_RANGE = (-32768, 32767)


@dataclass(frozen=True)
class MPTHCase:
    """The input folders of one case whose file lists are complete and paired.

    ``image_folders[i]`` and ``mask_folders[i]`` (liver, tumour) belong to phase ``i`` (reference first);
    ``mask_folders`` is None for a test case. ``slice_names`` are the slice file names in stacking order.
    """

    case_id: str
    image_folders: tuple[Path, ...]
    mask_folders: tuple[tuple[Path, Path], ...] | None
    slice_names: tuple[str, ...]

    @property
    def is_training(self) -> bool:
        return self.mask_folders is not None


@dataclass(frozen=True)
class CaseVolumes:
    """The stacked slices of one case: ``images[i]`` (Z, Y, X) int16 or float32 HU of phase ``i``;
    ``labels[i]`` (Z, Y, X) uint8 0/1/2 of phase ``i``, None for a test case; ``encodings``: how the image slices
    were stored (``"png16"``, ``"png8"``, ``"array"``)."""

    images: tuple[np.ndarray, ...]
    labels: tuple[np.ndarray, ...] | None
    encodings: frozenset[str]


# ----------------------------------------------------------------------------------------------------------------
# reading slices

def read_any_slice(path: Path) -> tuple[np.ndarray, str]:
    """One 2D slice and its storage format (``"png"``, ``"jpeg"``, ``"npy"``, ``"torch"``), whatever its name.

    Raises:
        ValueError: unreadable, not 2D, colour, or a serialised object that is not a numeric array; the message
            names ``path``.
    """
    path = Path(path)
    try:
        kind = sniff_format(path)
    except OSError as error:
        raise ValueError(f"{path}: cannot read slice file: {error.strerror or error}") from None
    array = read_slice(path)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{path}: slice holds {array.dtype} values, not numbers.")
    return array, kind


def read_image_slice(path: Path, png_offset: float | None) -> tuple[np.ndarray, str]:
    """An image slice in HU and its encoding (``"png16"``, ``"png8"``, ``"array"``).

    PNG/JPEG rasters are shifted by ``-png_offset``; None = :data:`PNG16_OFFSET` for 16-bit rasters, 0 for 8-bit.
    Serialised arrays are returned as stored.

    Raises:
        ValueError: unreadable slice, or non-finite values; the message names ``path``.
    """
    array, kind = read_any_slice(path)
    if kind in ("png", "jpeg"):
        encoding = "png8" if array.dtype.itemsize == 1 else "png16"
        offset = png_offset if png_offset is not None else (PNG16_OFFSET if encoding == "png16" else 0.0)
        return array.astype(np.float32) - np.float32(offset), encoding  # exact for whole numbers below 2**24
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{path}: contains {int(np.count_nonzero(~np.isfinite(array)))} NaN/inf values.")
    return array, "array"


def _stack(folder: Path, names: Sequence[str], read: Callable[[Path], tuple[np.ndarray, str]]
           ) -> tuple[np.ndarray | None, list[str], set[str]]:
    """Read the slices ``names`` of ``folder`` with ``read(path) -> (array, tag)``; returns the (Z, Y, X) stack (None
    if any slice failed), one problem per unreadable slice or odd shape, and the set of tags."""
    problems, slices, tags = [], [], set()
    first: Path | None = None
    for name in names:
        try:
            array, tag = read(folder / name)
        except ValueError as error:
            problems.append(str(error))
            continue
        if first is None:
            first = folder / name
        elif array.shape != slices[0].shape:
            problems.append(f"{folder / name}: slice shape {array.shape} differs from {first} "
                            f"({slices[0].shape}); all slices of {folder} must have the same size.")
            continue
        slices.append(array)
        tags.add(tag)
    return (np.stack(slices) if not problems else None), problems, tags


def _mask_slice(path: Path) -> tuple[np.ndarray, str]:
    array, kind = read_any_slice(path)
    return array > 0, kind


def _ct_array(stack: np.ndarray) -> np.ndarray:
    """int16 when every value is a whole number in the int16 range (CT in HU), else float32."""
    if stack.dtype.kind in "iu" or np.array_equal(stack, np.round(stack)):
        if stack.size == 0 or (stack.min() >= INT16_RANGE[0] and stack.max() <= INT16_RANGE[1]):
            return stack.astype(np.int16)
    return stack.astype(np.float32)


def phase_label(liver: np.ndarray, tumour: np.ndarray) -> np.ndarray:
    """0 background, 1 liver, 2 tumour (tumour overrides liver) from two boolean masks."""
    label = np.zeros(liver.shape, dtype=np.uint8)
    label[liver] = LABELS["liver"]
    label[tumour] = LABELS["tumor"]
    return label


def read_case(case: MPTHCase, *, png_offset: float | None) -> tuple[CaseVolumes | None, list[str]]:
    """Read and stack every slice of ``case``.

    Returns:
        The volumes (None if anything failed) and one problem line per unreadable slice, slice of odd shape, or
        stack whose shape differs from the reference phase's image or from its own image (naming both folders).
    """
    problems: list[str] = []
    images: list[np.ndarray | None] = []
    labels: list[np.ndarray | None] = []
    encodings: set[str] = set()
    names, reference_folder = case.slice_names, case.image_folders[0]
    for phase_index, image_folder in enumerate(case.image_folders):
        image, image_problems, tags = _stack(image_folder, names, partial(read_image_slice, png_offset=png_offset))
        problems += image_problems
        encodings |= tags
        if image is not None and images and images[0] is not None and image.shape != images[0].shape:
            problems.append(f"{image_folder}: image stack of shape (z, y, x) {image.shape} differs from the "
                            f"reference phase {reference_folder} ({images[0].shape}); the phases must share the "
                            f"slice grid.")
        images.append(image)
        if case.mask_folders is None:
            continue
        masks = []
        for mask_folder in case.mask_folders[phase_index]:
            mask, mask_problems, _ = _stack(mask_folder, names, _mask_slice)
            problems += mask_problems
            if mask is not None and image is not None and mask.shape != image.shape:
                problems.append(f"{mask_folder}: mask stack of shape (z, y, x) {mask.shape} differs from its image "
                                f"stack {image_folder} ({image.shape}).")
            masks.append(mask)
        labels.append(phase_label(*masks) if not problems else None)
    if problems:
        return None, problems
    return CaseVolumes(images=tuple(_ct_array(image) for image in images),
                       labels=tuple(labels) if case.mask_folders is not None else None,
                       encodings=frozenset(encodings)), []


def check_case(case: MPTHCase, *, png_offset: float | None) -> list[str]:
    """The problems :func:`read_case` finds (the volumes are dropped, so memory stays at one case)."""
    return read_case(case, png_offset=png_offset)[1]


# ----------------------------------------------------------------------------------------------------------------
# finding the cases

def _outside(path: Path, root: Path) -> str | None:
    """The problem line for the first of ``path``'s folders below ``root`` (or ``path`` itself) that resolves,
    following symbolic links, outside ``root`` (so that the link itself is named); None when all stay inside."""
    parts = path.relative_to(root).parts
    for depth in range(1, len(parts) + 1):
        try:
            check_inside(root.joinpath(*parts[:depth]), root)
        except ValueError as error:
            return str(error)
    return None


def _linked_slice_problems(folder: Path, names: Sequence[str], root: Path) -> list[str]:
    """One problem line per slice file ``names`` of ``folder`` (itself inside ``root``) that is a symbolic link
    resolving outside ``root``."""
    problems = []
    for name in names:
        if (folder / name).is_symlink():
            try:
                check_inside(folder / name, root)
            except ValueError as error:
                problems.append(str(error))
    return problems


def _slice_names(folder: Path) -> list[str]:
    """Names of the ``*.png`` files of ``folder`` (case-insensitive suffix, hidden files skipped), in numeric
    order."""
    names = [p.name for p in folder.iterdir()
             if p.is_file() and p.name.lower().endswith(SLICE_SUFFIX) and not p.name.startswith(".")]
    return sorted(names, key=natural_key)


def _pairing_problems(reference_folder: Path, reference_names: Sequence[str], other_folder: Path,
                      other_names: Sequence[str], rule: str) -> list[str]:
    """One line per slice file present in one folder and missing in the other, naming the missing file."""
    in_reference, in_other = set(reference_names), set(other_names)
    problems = [f"{other_folder / name}: missing slice file ({reference_folder / name} exists; {rule})."
                for name in reference_names if name not in in_other]
    problems += [f"{reference_folder / name}: missing slice file ({other_folder / name} exists; {rule})."
                 for name in other_names if name not in in_reference]
    return problems


def _mask_folders(root: Path, name: str, phases: Sequence[str]) -> tuple[tuple[tuple[Path, Path], ...] | None,
                                                                         list[str]]:
    """The (liver, tumour) mask folders per phase of case ``name``; None when all are missing (a test case)."""
    folders = {(kind, phase): root / kind / phase / name for phase in phases for kind in MASK_FOLDERS}
    present = [folder for folder in folders.values() if folder.is_dir()]
    if not present:
        return None, []
    if len(present) == len(folders):
        return tuple((folders[LIVER_MASK_FOLDER, p], folders[TUMOUR_MASK_FOLDER, p]) for p in phases), []
    return None, [f"{folder}: mask folder missing, while {present[0]} exists; a labelled case needs "
                  f"{' and '.join(MASK_FOLDERS)} for every phase {list(phases)} (remove all its mask folders to "
                  f"make it a test case)." for folder in folders.values() if not folder.is_dir()]


def _case_problems_and_names(root: Path, name: str, phases: Sequence[str],
                             mask_folders: tuple[tuple[Path, Path], ...] | None) -> tuple[list[str], list[str]]:
    """Slice-list problems of case ``name`` and its slice names (those of the reference phase's images)."""
    image_folders = [root / IMAGE_FOLDER / phase / name for phase in phases]
    names = [_slice_names(folder) for folder in image_folders]
    problems = [f"{folder}: no slice files (*{SLICE_SUFFIX}) in the case folder." for folder, listed
                in zip(image_folders, names) if not listed]
    for folder, listed in zip(image_folders, names):
        problems += _linked_slice_problems(folder, listed, root)
    for folder, listed in zip(image_folders[1:], names[1:]):
        problems += _pairing_problems(image_folders[0], names[0], folder, listed,
                                      "every phase needs the same slice files")
    for image_folder, listed, per_phase in zip(image_folders, names, mask_folders or ()):
        for mask_folder in per_phase:
            mask_names = _slice_names(mask_folder)
            problems += _linked_slice_problems(mask_folder, mask_names, root)
            problems += _pairing_problems(image_folder, listed, mask_folder, mask_names,
                                          "every image slice needs a mask slice of the same name")
    return problems, names[0]


def find_cases(root: Path, *, phases: Sequence[str]) -> tuple[list[MPTHCase], list[str]]:
    """Find the cases under ``root/train_img/<phase>/`` and check their folder and slice lists.

    Returns:
        The cases whose files are complete and paired, and one problem line per missing phase or mask folder,
        missing slice file, duplicate case id, empty input, or folder or slice file resolving outside ``root``
        through a symbolic link (a case with such a folder is not read further).
    """
    cases, problems = _find_cases(root, phases=phases)
    return cases, list(dict.fromkeys(problems))  # a mask folder linked out is found once per case


def _find_cases(root: Path, *, phases: Sequence[str]) -> tuple[list[MPTHCase], list[str]]:
    image_root = root / IMAGE_FOLDER
    expected = f"expected {root}/{IMAGE_FOLDER}/<phase>/<case>/<slice>{SLICE_SUFFIX} for the phases {list(phases)}"
    outside = _outside(image_root, root)
    if outside is not None:
        return [], [outside]
    if not image_root.is_dir():
        return [], [f"{image_root}: folder not found (empty or not an MPTH folder); {expected}."]
    problems: list[str] = []
    case_names: dict[str, set[str]] = {}
    for phase in phases:
        phase_folder = image_root / phase
        outside = _outside(phase_folder, root)
        if outside is not None:
            problems.append(outside)
            continue
        if not phase_folder.is_dir():
            problems.append(f"{phase_folder}: phase folder not found; {expected}.")
            continue
        case_names[phase] = {p.name for p in phase_folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    all_names = sorted(set().union(*case_names.values()), key=natural_key)
    if not all_names and not problems:
        problems.append(f"{image_root}: no case folders found; {expected}.")

    cases: list[MPTHCase] = []
    folder_of_id: dict[str, Path] = {}
    for name in all_names:
        case_id = sanitize_case_id(name)
        holder = next(image_root / p / name for p in phases if name in case_names.get(p, ()))
        key = case_id.lower()  # ids differing only in case collide on case-insensitive file systems
        if key in folder_of_id:
            problems.append(f"{holder}: duplicate case id '{case_id}': {folder_of_id[key]} and {holder} map to the "
                            f"same id (characters other than letters, digits, '_' and '-' become '_', case is "
                            f"ignored); rename one.")
            continue
        folder_of_id[key] = holder
        missing = [image_root / p / name for p in phases if p in case_names and name not in case_names[p]]
        if missing:
            problems += [f"{folder}: case folder missing ({holder} exists; every case needs all phases "
                         f"{list(phases)})." for folder in missing]
            continue
        if len(case_names) < len(phases):
            continue  # a whole phase folder is missing, reported above
        case_folders = [image_root / p / name for p in phases] + \
            [root / kind / p / name for p in phases for kind in MASK_FOLDERS]
        outside_problems = [outside for folder in case_folders if (folder.exists() or folder.is_symlink())
                            and (outside := _outside(folder, root)) is not None]
        if outside_problems:
            problems += outside_problems
            continue
        mask_folders, mask_problems = _mask_folders(root, name, phases)
        slice_problems, slice_names = _case_problems_and_names(root, name, phases, mask_folders)
        if mask_problems or slice_problems:
            problems += mask_problems + slice_problems
            continue
        cases.append(MPTHCase(case_id, tuple(image_root / p / name for p in phases), mask_folders,
                              tuple(slice_names)))
    if all_names and not problems and not any(case.is_training for case in cases):
        problems.append(f"{root}: no case has mask folders ({'/'.join(MASK_FOLDERS)}/<phase>/<case>); nnU-Net "
                        f"needs at least one labelled training case.")
    return cases, problems


# ----------------------------------------------------------------------------------------------------------------
# converting one case

def convert_case(case: MPTHCase, *, staging_dir: Path, spacing_zyx_mm: Sequence[float], png_offset: float | None,
                 registration: str) -> CaseRecord:
    """Write the channels (and labels) of ``case`` into ``staging_dir``; see the module docstring for the names."""
    volumes, problems = read_case(case, png_offset=png_offset)
    if volumes is None:  # the check passed before, so the input changed while converting
        raise ConversionError(problems)
    spacing_xyz = tuple(float(s) for s in reversed(spacing_zyx_mm))
    images = [image_from_array(array, spacing_xyz) for array in volumes.images]
    labels = None if volumes.labels is None else [image_from_array(array, spacing_xyz) for array in volumes.labels]
    reference = images[0]
    for channel in range(1, len(images)):
        if registration == "none":
            continue  # same slice grid: the stack is taken on the reference grid as it is
        try:
            transform = register_images(reference, images[channel], mode=registration, initialization="physical")
        except RuntimeError as error:
            raise RuntimeError(f"{case.image_folders[channel]}: {error} (onto {case.image_folders[0]}); convert "
                               f"with register='none' or check the slices.") from None
        images[channel] = resample_to_reference(images[channel], reference, transform=transform)
        if labels is not None:
            labels[channel] = resample_to_reference(labels[channel], reference, transform=transform, is_label=True)

    split = "Tr" if case.is_training else "Ts"
    for channel, image in enumerate(images):
        write_image(image, staging_dir / f"images{split}" / f"{case.case_id}_{channel:04d}{FILE_ENDING}")
    if labels is None:
        return CaseRecord(case.case_id, False, reference.GetSpacing(),
                          extra={"encodings": sorted(volumes.encodings)})
    write_image(labels[0], staging_dir / "labelsTr" / f"{case.case_id}{FILE_ENDING}")
    for channel in range(1, len(labels)):
        write_image(labels[channel], staging_dir / PHASE_LABELS_DIR / f"{case.case_id}_{channel:04d}{FILE_ENDING}")
    arrays = [sitk.GetArrayViewFromImage(label) for label in labels]
    return CaseRecord(case.case_id, True, reference.GetSpacing(),
                      label_voxel_counts=voxel_counts(arrays[0], len(LABELS)),
                      extra={"encodings": sorted(volumes.encodings),
                             "liver_dice": [dice(arrays[0] > 0, other > 0) for other in arrays[1:]]})


# ----------------------------------------------------------------------------------------------------------------
# the whole dataset

def _check_arguments(phases: Sequence[str], spacing_zyx_mm: Sequence[float] | None, png_offset: float | None,
                     register: str) -> None:
    if not phases or any(not p or "/" in p or "\\" in p or p in (".", "..") for p in phases):
        raise ValueError(f"phases must be one or more folder names under {IMAGE_FOLDER}/, got {list(phases)}.")
    if len(set(phases)) != len(phases):
        raise ValueError(f"phases must differ, got {list(phases)}.")
    if register not in REGISTRATION_CHOICES:
        raise ValueError(f"register must be one of {list(REGISTRATION_CHOICES)}, got {register!r}.")
    if spacing_zyx_mm is not None and (len(spacing_zyx_mm) != 3 or not all(np.isfinite(s) and s > 0
                                                                            for s in spacing_zyx_mm)):
        raise ValueError(f"spacing_zyx_mm must be three positive numbers (z, y, x in mm), got {list(spacing_zyx_mm)}.")
    if png_offset is not None and not np.isfinite(png_offset):
        raise ValueError(f"png_offset must be a finite number or None (auto), got {png_offset}.")


def _conventions(records: Sequence[CaseRecord], spacing_zyx_mm: Sequence[float], spacing_defaulted: bool,
                 png_offset: float | None) -> list[str]:
    """How spacing and intensities were obtained (for the summary and dataset.json's ``notes``)."""
    source = "default, MPTH has no spacing metadata; pass --spacing z y x" if spacing_defaulted else "given"
    encodings = sorted({e for r in records for e in r.extra["encodings"]})
    described = {"array": "serialised arrays (as stored)",
                 "png16": f"16-bit PNG (value - {PNG16_OFFSET if png_offset is None else png_offset:g})",
                 "png8": f"8-bit PNG (value - {0.0 if png_offset is None else png_offset:g})"}
    return [f"spacing z, y, x: {tuple(float(s) for s in spacing_zyx_mm)} mm ({source})",
            "image slices: " + ", ".join(described[e] for e in encodings)]


def _phase_notes(records: Sequence[CaseRecord], phases: Sequence[str], register: str) -> list[str]:
    """Summary lines: phases, registration, per-phase label files and the liver agreement between phases."""
    notes = [f"phases: {', '.join(f'{i} {p}' for i, p in enumerate(phases))} (channel 0 is the reference); "
             f"registration: {register}"]
    training = [r for r in records if r.is_training]
    if len(phases) > 1:
        notes.append(f"per-phase labels: {PHASE_LABELS_DIR}/<case>_<channel:04d>{FILE_ENDING} "
                     f"({len(training) * (len(phases) - 1)} files)")
    for offset, phase in enumerate(phases[1:]):
        liver_dice = [r.extra["liver_dice"][offset] for r in training if not np.isnan(r.extra["liver_dice"][offset])]
        if liver_dice:
            notes.append(f"liver Dice {phases[0]} vs {phase} labels on the reference grid: mean "
                         f"{np.mean(liver_dice):.3f}, min {np.min(liver_dice):.3f}")
    return notes


def convert_with_summary(source_dir: Path, *, dataset_id: int = DATASET_ID, dataset_name: str = DATASET_NAME,
                         output_root: Path | None = None, phases: Sequence[str] = DEFAULT_PHASES,
                         spacing_zyx_mm: Sequence[float] | None = None, png_offset: float | None = None,
                         register: Literal["none", "rigid", "affine"] = "none", overwrite: bool = False,
                         num_processes: int = 1) -> DatasetSummary:
    """:func:`convert`, returning the :class:`DatasetSummary` that ``main`` prints."""
    source_dir = Path(source_dir)
    phases = [p.strip() for p in phases]
    _check_arguments(phases, spacing_zyx_mm, png_offset, register)
    final_dir = prepare_output(source_dir, dataset_id=dataset_id, dataset_name=dataset_name,
                               output_root=output_root, overwrite=overwrite)
    spacing_defaulted = spacing_zyx_mm is None
    if spacing_defaulted:
        logger.warning("MPTH slices carry no spacing; using the default %s mm (z, y, x). Pass --spacing z y x "
                       "(spacing_zyx_mm) with the real voxel size.", DEFAULT_SPACING_ZYX_MM)
        spacing_zyx_mm = DEFAULT_SPACING_ZYX_MM

    with source_folder(source_dir) as root:
        cases, problems = find_cases(root, phases=phases)
        checked = map_cases(partial(check_case, png_offset=png_offset), cases, num_processes=num_processes,
                            description=f"Dataset{dataset_id:03d} check")
        raise_if_problems(problems + [line for per_case in checked for line in per_case], source_dir)

        with staged_dataset(final_dir, overwrite=overwrite) as staging:
            for sub_folder in ("imagesTr", "labelsTr", "imagesTs") + ((PHASE_LABELS_DIR,) if len(phases) > 1 else ()):
                (staging / sub_folder).mkdir()
            records = map_cases(partial(convert_case, staging_dir=staging, spacing_zyx_mm=spacing_zyx_mm,
                                        png_offset=png_offset, registration=register),
                                cases, num_processes=num_processes, description=f"Dataset{dataset_id:03d} convert")
            conventions = _conventions(records, spacing_zyx_mm, spacing_defaulted, png_offset)
            summary = summarize(records, output_dir=final_dir,
                                channel_names={str(i): CHANNEL_NAME for i in range(len(phases))}, labels=LABELS,
                                notes=_phase_notes(records, phases, register) + conventions)
            block: dict[str, Any] = {"reference_channel": 0, "phase_names": list(phases),
                                     "source": str(source_dir.resolve()), "registration": register,
                                     "converter": Path(__file__).stem, "notes": conventions}
            if len(phases) > 1:
                block["phase_labels_dir"] = PHASE_LABELS_DIR
                block["channel_acquisition"] = "separate"  # phases of separate breath-holds: misregistered
            write_dataset_json(
                staging, channel_names=summary.channel_names, labels=LABELS, num_training=summary.num_training,
                file_ending=FILE_ENDING, dataset_name=final_dir.name, nnunet_mm_block=block,
                description=f"MPTH two-phase liver CT ({', '.join(phases)}) from per-slice files; channel 0 = "
                            f"{phases[0]} (reference, labels in labelsTr), the other phases' own labels in "
                            f"{PHASE_LABELS_DIR}. All channels are named 'CT' for CT normalisation.",
            )
    if "png8" in {e for r in records for e in r.extra["encodings"]} and png_offset is None:
        logger.warning("some image slices are 8-bit PNGs: they hold grey values, not HU, and were written unchanged; "
                       "nnU-Net's CT normalisation still works, but intensities are not comparable to HU.")
    logger.info("converted %d training and %d test case(s) into %s", summary.num_training, summary.num_test,
                final_dir)
    return summary


def convert(source_dir: Path, *, dataset_id: int = DATASET_ID, dataset_name: str = DATASET_NAME,
            output_root: Path | None = None, phases: Sequence[str] = DEFAULT_PHASES,
            spacing_zyx_mm: Sequence[float] | None = None, png_offset: float | None = None,
            register: Literal["none", "rigid", "affine"] = "none", overwrite: bool = False,
            num_processes: int = 1) -> Path:
    """Convert an MPTH folder (or archive) into ``<output_root>/Dataset<id>_<name>`` and return that folder; the
    other arguments and the errors are those of every converter (:mod:`nnunet_mm.dataset_conversion`).

    Args:
        source_dir: the folder holding ``train_img/``, ``liver_mask/`` and ``tumor_mask/`` (see the module
            docstring), or a ``.zip``/``.tar`` archive of it; only read, never modified.
        phases: phase folder names, the reference (labels, grid) first.
        spacing_zyx_mm: voxel size (z, y, x) in mm; None = :data:`DEFAULT_SPACING_ZYX_MM` with a warning.
        png_offset: subtracted from PNG image slices to get HU; None = 1024 for 16-bit, 0 for 8-bit PNGs.
            Serialised arrays are never shifted.
        register: ``"none"`` (take the other phases on the reference slice grid as they are), ``"rigid"`` or
            ``"affine"`` (register each to the reference phase first; its labels move with it).
    """
    return convert_with_summary(source_dir, dataset_id=dataset_id, dataset_name=dataset_name,
                                output_root=output_root, phases=phases, spacing_zyx_mm=spacing_zyx_mm,
                                png_offset=png_offset, register=register, overwrite=overwrite,
                                num_processes=num_processes).output_dir


# ----------------------------------------------------------------------------------------------------------------
# command line

def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command-line options of this converter (the common ones plus the MPTH ones)."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Convert MPTH (per-slice PV/ART liver CT with per-phase liver and tumour masks) into "
                               "an nnU-Net raw dataset.")
    parser.add_argument("source_dir", type=Path,
                        help="folder (or .zip/.tar) holding train_img/, liver_mask/ and tumor_mask/")
    parser.add_argument("--phases", type=comma_list, default=list(DEFAULT_PHASES),
                        help=f"comma-separated phase folder names, reference first (default: {','.join(DEFAULT_PHASES)})")
    parser.add_argument("--spacing", dest="spacing_zyx_mm", type=float, nargs=3, metavar=("Z", "Y", "X"),
                        default=None,
                        help=f"voxel size in mm (default: {' '.join(f'{s:g}' for s in DEFAULT_SPACING_ZYX_MM)} "
                             f"with a warning; MPTH has no spacing metadata)")
    parser.add_argument("--png-offset", type=float, default=None,
                        help="subtracted from PNG image slices to get HU (default: 1024 for 16-bit, 0 for 8-bit PNGs; "
                             "serialised arrays are taken as stored)")
    parser.add_argument("--register", choices=REGISTRATION_CHOICES, default="none",
                        help="register the other phases to the reference first (default: %(default)s: take them on "
                             "the shared slice grid as they are)")
    add_common_arguments(parser, dataset_id=DATASET_ID, dataset_name=DATASET_NAME)
    return parser


main = converter_main(convert_with_summary, build_parser)


if __name__ == "__main__":
    sys.exit(main())
