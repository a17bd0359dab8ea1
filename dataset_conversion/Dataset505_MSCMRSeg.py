"""Dataset505_MSCMRSeg: multi-sequence cardiac MR (MS-CMRSeg 2019: bSSFP "C0", LGE, T2) → nnU-Net raw.

Input: the challenge download, unpacked or as a ``.zip``/``.tar`` archive. Files are found by their exact names
anywhere below the source, so the original folders and the later ground-truth release can sit side by side::

    C0LET2_nii45_for_challenge19/c0t2lge/patient{N}_{C0,LGE,T2}.nii.gz        images (some copies are .nii)
    C0LET2_nii45_for_challenge19/{c0gt,t2gt,lgegt}/patient{N}_{SEQ}_manual.nii.gz   labels of the training release
    C0LET2_gt_for_challenge19/{C0_manual_10,T2_manual_10,LGE_manual_35_TestData}/...   labels released later

A file name found twice is accepted when both copies hold the same image (e.g. a ``.nii`` and a ``.nii.gz`` copy)
and refused, naming both files, when they differ. Labels hold 200 LV myocardium, 500 LV blood pool, 600 RV blood
pool; they are mapped to nnU-Net's consecutive values as MyoPS/nnU-Net v1 ``Task159_MyoPS2020`` does:
500 → 1 ``LV_blood_pool``, 600 → 2 ``RV_blood_pool``, 200 → 3 ``LV_myocardium`` (:data:`MSCMR_TO_NNUNET`;
:func:`labels_to_mscmr` maps predictions back). Any other value is refused, naming the file.

The three sequences of a patient are paired but not co-registered: they have their own grids (slice count and
thickness differ) and were acquired in separate breath-holds, and each label lies on its own sequence's image.

Modes (``--mode``):

* ``multichannel`` (default): one case per patient, ``<case>_0000`` = the reference sequence (``--reference``,
  default ``C0``), ``_0001``/``_0002`` = the other two in the order C0, LGE, T2, each registered to the reference
  (``--registration rigid`` by default, or ``affine``; Mattes mutual information, starting from scanner coordinates
  with ``--initialization physical``, the default, or from the image centres with ``geometry``) and resampled
  linearly onto the reference grid (``none``: resampled in scanner coordinates). A registration result is kept only
  when it raises the mutual information with the reference above that of the scanner alignment: on thick stacks of
  few slices (T2) the optimisation can diverge, and the summary counts the sequences kept in scanner alignment.
  Only the reference sequence's label is used, so patients with a reference label become ``imagesTr``/``labelsTr``
  cases and the others ``imagesTs``. C0 is the default reference because most patients have a C0 label (35 of 45
  in the training release, all 45 with the later release), against 5 (45) for LGE. For LGE segmentation, the
  challenge's target, use ``--reference LGE`` together with the released LGE ground truth.
* ``per-sequence``: every sequence image becomes a single-channel case ``patient{N}_{SEQ}`` on its own grid (with
  its own label, if it has one), all in one dataset. This is what nnU-Net users do for sequences that cannot be
  channels: one model learns from every labelled C0, T2 and LGE image (nnU-Net's own AMOS task 2 converter does the
  same for CT and MR). The channel is named ``"MR"`` (z-score); ``nnunet_mm.per_case_modality`` records the
  sequence of every case, and ``splits_final.json`` holds five folds grouped by patient, so that the sequences of
  one patient never straddle training and validation (``MultiModalTrainer`` copies it into the preprocessed folder;
  with nnU-Net's own trainers, copy it to ``$nnUNet_preprocessed/Dataset505_MSCMRSeg/`` yourself).
  Separate datasets per sequence would need three dataset ids, which other converters use.

``dataset.json`` carries the ``'nnunet_mm'`` block: ``reference_channel`` 0, ``modalities`` (``"MR"`` per channel),
``source``, ``converter``, plus ``phase_names`` (the sequences in channel order), ``registration`` and
``"channel_acquisition": "separate"`` (separate breath-holds: the trainer's misalignment and modality dropout are on)
in multichannel mode, or ``per_case_modality`` in per-sequence mode. Both modes use dataset id 505 and the name
``MSCMRSeg`` by default; to keep both, give the second its own ``--dataset-id``/``--dataset-name``.

Facts checked against public code that reads the download (MS-CMRSeg 2019 participants' scripts on GitHub, among
them LGE evaluation scripts that read ``lgegt/patient{1..5}_LGE_manual.nii.gz`` and score 200 as myocardium, 500 as
LV and 600 as RV): the folder and file names, ``.nii`` copies of ``c0gt``, the label values, labelled counts of 35 C0,
35 T2 and 5 LGE, and the release folders ``C0_manual_10``, ``T2_manual_10``, ``LGE_manual_35_TestData``. Not
checked (no MS-CMRSeg data is available to this project): the spacings and slice counts of docs/datasets.md §2.3,
and whether the sequences' headers share scanner coordinates (``--initialization physical`` assumes they do; if
registration fails or the summary warns about low coverage, use ``geometry``).
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk

from nnunet_mm.conversion import (
    CaseRecord,
    DatasetSummary,
    add_common_arguments,
    attempt,
    check_inside,
    converter_main,
    image_from_array,
    label_dict,
    label_value_problems,
    labels_back,
    map_cases,
    natural_key,
    prepare_output,
    raise_if_problems,
    remap_labels,
    source_files,
    source_folder,
    summarize,
    voxel_counts,
)
from nnunet_mm.io import (describe_geometry, geometry_differences, read_image, register, resample_to_reference,
                          staged_dataset, write_dataset_json, write_image)

logger = logging.getLogger(__name__)

DATASET_ID = 505
DATASET_NAME = "MSCMRSeg"
SEQUENCES = ("C0", "LGE", "T2")  # channel order after the reference sequence
DEFAULT_REFERENCE = "C0"
MODES = ("multichannel", "per-sequence")
REGISTRATION_CHOICES = ("rigid", "affine", "none")
INITIALIZATIONS = ("physical", "geometry")
# challenge value → nnU-Net value (MyoPS / nnU-Net v1 Task159 order), and its inverse for exporting predictions
MSCMR_TO_NNUNET = {0: 0, 500: 1, 600: 2, 200: 3}
NNUNET_TO_MSCMR = {value: key for key, value in MSCMR_TO_NNUNET.items()}
LABEL_NAMES = ("LV_blood_pool", "RV_blood_pool", "LV_myocardium")
PER_SEQUENCE_CHANNEL_NAME = "MR"  # not a name nnU-Net knows, so z-score, as for the sequence names
MODALITY = "MR"
FILE_ENDING = ".nii.gz"
GEOMETRY_TOLERANCE = 1e-3  # mm for spacing and origin, and direction cosines
NUM_FOLDS = 5
SPLIT_SEED = 12345  # nnU-Net's own seed for its default folds
LOW_COVERAGE = 0.5  # warn when a resampled sequence covers less of the reference grid than this
# SimpleITK takes a sampling seed of 0 as "seed from the wall clock", which makes every run register differently
REGISTRATION_SEED = 1
METRIC_HISTOGRAM_BINS = 32  # of the mutual information that decides whether a registration result is kept

_IMAGE = re.compile(r"patient(\d+)_(C0|LGE|T2)\.nii(\.gz)?")
_LABEL = re.compile(r"patient(\d+)_(C0|LGE|T2)_manual\.nii(\.gz)?")


def labels_to_mscmr(segmentation: np.ndarray) -> np.ndarray:
    """Map nnU-Net label values (0..3, e.g. a prediction) back to the challenge's 0/500/600/200, as uint16.

    Raises:
        ValueError: a value outside 0..3.
    """
    return labels_back(segmentation, NNUNET_TO_MSCMR, dtype=np.uint16)


# ----------------------------------------------------------------------------------------------------------------
# finding the files

@dataclass(frozen=True)
class PatientFiles:
    """The files of one patient: ``images`` and ``labels`` by sequence name (absent sequences are missing)."""

    patient: int
    images: Mapping[str, Path]
    labels: Mapping[str, Path]

    @property
    def case_id(self) -> str:
        return f"patient{self.patient}"

    def image_folder(self) -> Path:
        """The folder of this patient's images (where a missing sequence is expected)."""
        files = list(self.images.values()) or list(self.labels.values())
        return files[0].parent


def _duplicate_problems(first: Path, other: Path, what: str) -> list[str]:
    """Problems with a second file of the same name: none if it holds the same image as ``first``."""
    if first.read_bytes() == other.read_bytes():
        return []
    try:
        a, b = read_image(first), read_image(other)
    except (ValueError, FileNotFoundError) as error:
        return [f"{error} (while comparing the duplicates {first} and {other})"]
    differences = geometry_differences(a, b, tolerance=GEOMETRY_TOLERANCE)
    if not differences and not np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b)):
        differences = ["voxel values"]
    if not differences:
        logger.debug("%s holds the same image as %s; using the first", other, first)
        return []
    return [f"{other}: duplicate {what} with different content than {first} ({', '.join(differences)} differ); "
            f"remove one of the two files."]


def find_patients(root: Path) -> tuple[list[PatientFiles], list[str]]:
    """Find every ``patient{N}_{SEQ}`` image and ``patient{N}_{SEQ}_manual`` label under ``root``.

    Returns:
        The patients in increasing ``N``, and one problem line per duplicate with different content (naming both
        files), file resolving outside ``root``, or a source without any MS-CMRSeg file.
    """
    found: dict[tuple[int, str, str], list[Path]] = {}
    problems: list[str] = []
    for file in source_files(root):
        for kind, pattern in (("image", _IMAGE), ("label", _LABEL)):
            match = pattern.fullmatch(file.name)
            if match:
                try:
                    check_inside(file, root)
                except ValueError as error:
                    problems.append(str(error))
                else:
                    found.setdefault((int(match[1]), kind, match[2]), []).append(file)
                break
    if not found:
        problems.append(f"{root}: no MS-CMRSeg files found (the folder is empty or holds other files); expected "
                        f"C0LET2_nii45_for_challenge19/c0t2lge/patient<N>_C0.nii.gz, ... and "
                        f"c0gt/patient<N>_C0_manual.nii.gz, ...")
    images: dict[int, dict[str, Path]] = {}
    labels: dict[int, dict[str, Path]] = {}
    for (patient, kind, sequence), files in sorted(found.items()):
        for other in files[1:]:
            problems += _duplicate_problems(files[0], other, f"patient{patient} {sequence} {kind}")
        (images if kind == "image" else labels).setdefault(patient, {})[sequence] = files[0]
    numbers = sorted(set(images) | set(labels))
    return [PatientFiles(n, images.get(n, {}), labels.get(n, {})) for n in numbers], problems


def layout_problems(patients: Sequence[PatientFiles], *, mode: str, reference: str) -> list[str]:
    """Problems of the set of files: a label without its image, a patient lacking a sequence (multichannel), or no
    labelled case that the mode could train on."""
    problems = []
    for patient in patients:
        for sequence, label in patient.labels.items():
            if sequence not in patient.images:
                problems.append(f"{label}: label without its image; expected {patient.case_id}_{sequence}.nii.gz "
                                f"(or .nii) below the source, e.g. in {patient.image_folder()}.")
        if mode == "multichannel":
            for sequence in SEQUENCES:
                if sequence not in patient.images:
                    expected = patient.image_folder() / f"{patient.case_id}_{sequence}.nii.gz"
                    problems.append(f"{expected}: missing channel file: {patient.case_id} has the sequences "
                                    f"{sorted(patient.images)} but no {sequence} image (.nii.gz or .nii).")
    if patients:
        if mode == "multichannel" and not any(reference in p.labels for p in patients):
            problems.append(f"no patient has a {reference} label (patient<N>_{reference}_manual.nii.gz); nnU-Net needs "
                            f"at least one training case. Add the ground-truth folders or choose another --reference.")
        elif mode == "per-sequence" and not any(p.labels for p in patients):
            problems.append("no label (patient<N>_<SEQ>_manual.nii.gz) found; nnU-Net needs at least one training "
                            "case.")
    return problems


# ----------------------------------------------------------------------------------------------------------------
# checking the files

def _label_problems(label: sitk.Image, label_file: Path, image: sitk.Image, image_file: Path) -> list[str]:
    problems = []
    if label.GetSize() != image.GetSize():
        problems.append(f"{label_file}: label has size {label.GetSize()} (x, y, z) but its image {image_file} has "
                        f"{image.GetSize()}; the slice counts or matrix sizes differ, so the label cannot belong to "
                        f"that image.")
    else:
        differences = geometry_differences(label, image, tolerance=GEOMETRY_TOLERANCE)
        if differences:
            problems.append(f"{label_file}: label is not on the grid of its image {image_file} "
                            f"({', '.join(differences)} differ): label {describe_geometry(label)}; image "
                            f"{describe_geometry(image)}.")
    problems += label_value_problems(sitk.GetArrayViewFromImage(label), MSCMR_TO_NNUNET, label_file,
                                     hint="MS-CMRSeg labels are 200 LV myocardium, 500 LV blood pool, "
                                          "600 RV blood pool.")
    return problems


def validate_patient(patient: PatientFiles, *, mode: str, reference: str) -> list[str]:
    """Read the files of ``patient`` that ``mode`` uses; one problem line per unreadable, non-3D or non-finite
    image, label off its image's grid, or label value other than 0, 200, 500, 600."""
    problems: list[str] = []
    images: dict[str, sitk.Image] = {}
    for sequence, file in patient.images.items():
        image = attempt(problems, read_image, file)
        if image is not None:
            images[sequence] = image
    used_labels = patient.labels if mode == "per-sequence" else \
        {s: f for s, f in patient.labels.items() if s == reference}
    for sequence, label_file in used_labels.items():
        label = attempt(problems, read_image, label_file)
        if label is not None and sequence in images:
            problems += _label_problems(label, label_file, images[sequence], patient.images[sequence])
    return problems


# ----------------------------------------------------------------------------------------------------------------
# converting

def channel_order(reference: str) -> tuple[str, ...]:
    """The sequences in channel order: ``reference`` first, then the others in the order C0, LGE, T2."""
    return (reference,) + tuple(s for s in SEQUENCES if s != reference)


def _write_label(label_file: Path, image: sitk.Image, path: Path) -> tuple[int, ...]:
    """Remap ``label_file`` and write it on ``image``'s grid (checked to agree within GEOMETRY_TOLERANCE)."""
    label = remap_labels(sitk.GetArrayFromImage(read_image(label_file)), MSCMR_TO_NNUNET, label_file)
    write_image(image_from_array(label, image.GetSpacing(), reference=image), path)
    return voxel_counts(label, len(MSCMR_TO_NNUNET))


def mutual_information(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform | None) -> float:
    """Mattes mutual information of ``fixed`` and ``moving`` seen through ``transform`` (fixed → moving points;
    None = scanner coordinates), over every fixed voxel; higher = more similar, ``-inf`` without overlap."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=METRIC_HISTOGRAM_BINS)
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetInitialTransform(sitk.Euler3DTransform() if transform is None else transform, inPlace=False)
    try:
        return -method.MetricEvaluate(sitk.Cast(fixed, sitk.sitkFloat32), sitk.Cast(moving, sitk.sitkFloat32))
    except RuntimeError:  # ITK refuses when (almost) no fixed voxel maps into the moving image
        return float("-inf")


def align_sequence(fixed: sitk.Image, moving: sitk.Image, *, fixed_file: Path, moving_file: Path,
                   registration: str, initialization: str) -> tuple[sitk.Transform | None, dict[str, Any]]:
    """The transform (fixed → moving points) that puts ``moving`` onto the reference grid, and what happened.

    The registration result is kept only if it raises the mutual information with the reference above that of
    the scanner alignment; otherwise (a diverged optimisation, which thick short-axis stacks with few slices
    provoke) the scanner alignment is kept and a warning names the file.

    Raises:
        ValueError: the registration failed (the message names both files).
    """
    if registration == "none":
        return None, {"outcome": "scanner alignment"}
    try:
        transform = register(fixed, moving, mode=registration, initialization=initialization, seed=REGISTRATION_SEED)
    except RuntimeError as error:
        raise ValueError(f"{moving_file}: {error} (fixed image {fixed_file}); try --initialization geometry, or "
                         f"--registration none.") from None
    before, after = mutual_information(fixed, moving, None), mutual_information(fixed, moving, transform)
    info = {"mutual_information_before": round(before, 4), "mutual_information_after": round(after, 4)}
    if after <= before:
        logger.warning("%s: %s registration to %s lowered the mutual information (%.3f -> %.3f); kept the scanner "
                       "alignment.", moving_file, registration, fixed_file, before, after)
        return None, {**info, "outcome": "kept scanner alignment"}
    logger.info("%s: %s registration to %s raised the mutual information %.3f -> %.3f", moving_file, registration,
                fixed_file.name, before, after)
    return transform, {**info, "outcome": "registered"}


def _coverage(moving: sitk.Image, reference: sitk.Image, transform: sitk.Transform | None) -> float:
    """Fraction of the reference grid's voxels whose (transformed) position lies inside ``moving``."""
    inside = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    inside.CopyInformation(moving)
    resampled = resample_to_reference(inside, reference, transform=transform, is_label=True, default_value=0)
    return float(sitk.GetArrayViewFromImage(resampled).mean())


def convert_multichannel_case(patient: PatientFiles, *, staging_dir: Path, reference: str, registration: str,
                              initialization: str) -> CaseRecord:
    """Write one patient as a 3-channel case on the reference sequence's grid, with the reference label if any.

    Returns:
        The record; ``extra["alignment"]`` holds, per non-reference sequence, the outcome of
        :func:`align_sequence` and the fraction of the reference grid the sequence covers (``coverage``).

    Raises:
        ValueError: the registration of a sequence failed (the message names both files).
    """
    fixed_file = patient.images[reference]
    fixed = read_image(fixed_file)
    is_training = reference in patient.labels
    images_folder = staging_dir / ("imagesTr" if is_training else "imagesTs")
    write_image(fixed, images_folder / f"{patient.case_id}_0000{FILE_ENDING}")
    alignment = {}
    for channel, sequence in enumerate(channel_order(reference)[1:], start=1):
        moving_file = patient.images[sequence]
        moving = read_image(moving_file)
        transform, alignment[sequence] = align_sequence(fixed, moving, fixed_file=fixed_file, moving_file=moving_file,
                                                        registration=registration, initialization=initialization)
        coverage = alignment[sequence]["coverage"] = round(_coverage(moving, fixed, transform), 4)
        if coverage < LOW_COVERAGE:
            logger.warning("%s covers only %.0f%% of the %s grid of %s; check the images' headers, or try "
                           "--initialization geometry.", moving_file, 100 * coverage, reference, patient.case_id)
        write_image(resample_to_reference(moving, fixed, transform=transform),
                    images_folder / f"{patient.case_id}_{channel:04d}{FILE_ENDING}")
    counts = None
    if is_training:
        counts = _write_label(patient.labels[reference], fixed,
                              staging_dir / "labelsTr" / f"{patient.case_id}{FILE_ENDING}")
    return CaseRecord(patient.case_id, is_training, tuple(float(s) for s in fixed.GetSpacing()), counts,
                      extra={"alignment": alignment})


@dataclass(frozen=True)
class SequenceCase:
    """One sequence image of one patient, a case of the per-sequence dataset."""

    patient: PatientFiles
    sequence: str

    @property
    def case_id(self) -> str:
        return f"{self.patient.case_id}_{self.sequence}"

    @property
    def is_training(self) -> bool:
        return self.sequence in self.patient.labels


def convert_sequence_case(case: SequenceCase, *, staging_dir: Path) -> CaseRecord:
    """Write one sequence image unchanged as a single-channel case, with its remapped label if it has one."""
    image = read_image(case.patient.images[case.sequence])
    write_image(image, staging_dir / ("imagesTr" if case.is_training else "imagesTs")
                / f"{case.case_id}_0000{FILE_ENDING}")
    counts = None
    if case.is_training:
        counts = _write_label(case.patient.labels[case.sequence], image,
                              staging_dir / "labelsTr" / f"{case.case_id}{FILE_ENDING}")
    return CaseRecord(case.case_id, case.is_training, tuple(float(s) for s in image.GetSpacing()), counts)


def patient_grouped_splits(case_patients: Mapping[str, str], *,
                           num_folds: int = NUM_FOLDS) -> list[dict[str, list[str]]]:
    """nnU-Net ``splits_final.json`` folds over training cases such that all cases of a patient share a fold.

    Args:
        case_patients: training case id → patient id.
        num_folds: folds wanted; fewer when there are fewer patients.

    Returns:
        ``[{"train": [...], "val": [...]}, ...]`` (patients drawn with nnU-Net's KFold seed); empty for fewer than
        two patients, where nnU-Net's own split applies.
    """
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    patients = sorted(set(case_patients.values()), key=natural_key)
    if len(patients) < 2:
        return []
    splits = []
    for fold in generate_crossval_split(patients, seed=SPLIT_SEED, n_splits=min(num_folds, len(patients))):
        validation = {str(p) for p in fold["val"]}
        splits.append({"train": sorted((c for c, p in case_patients.items() if p not in validation), key=natural_key),
                       "val": sorted((c for c, p in case_patients.items() if p in validation), key=natural_key)})
    return splits


# ----------------------------------------------------------------------------------------------------------------
# the whole dataset

def _check_arguments(*, mode: str, reference: str, registration: str, initialization: str) -> None:
    for name, value, choices in (("mode", mode, MODES), ("reference", reference, SEQUENCES),
                                 ("registration", registration, REGISTRATION_CHOICES),
                                 ("initialization", initialization, INITIALIZATIONS)):
        if value not in choices:
            raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")


@dataclass(frozen=True)
class WrittenCases:
    """What one mode wrote into the staging folder, and how dataset.json and the summary describe it."""

    records: list[CaseRecord]
    channel_names: list[str]
    block: dict[str, Any]  # the mode's part of the 'nnunet_mm' block
    notes: list[str]  # extra summary lines
    description: str


def write_multichannel(patients: Sequence[PatientFiles], staging: Path, *, reference: str, registration: str,
                       initialization: str, num_processes: int = 1) -> WrittenCases:
    """Write one 3-channel case per patient (see :func:`convert_multichannel_case`) into ``staging``."""
    records = map_cases(partial(convert_multichannel_case, staging_dir=staging, reference=reference,
                                registration=registration, initialization=initialization),
                        patients, num_processes=num_processes, description="MS-CMRSeg patients")
    order = list(channel_order(reference))
    notes = [f"reference sequence {reference}; {', '.join(order[1:])} resampled onto its grid"]
    if registration != "none":
        outcomes = [a["outcome"] for r in records for a in r.extra["alignment"].values()]
        notes.append(f"registration {registration}: {outcomes.count('registered')} of {len(outcomes)} sequence "
                     f"images registered, {outcomes.count('kept scanner alignment')} kept in scanner alignment (the "
                     f"registration lowered their mutual information with {reference})")
    return WrittenCases(
        records=records, channel_names=order,
        block={"reference_channel": 0, "phase_names": order, "modalities": [MODALITY] * len(order),
               "registration": registration, "channel_acquisition": "separate"},  # separate breath-holds
        notes=notes,
        description=f"MS-CMRSeg 2019, one case per patient: channels {', '.join(order)} on the {reference} grid "
                    f"(registration: {registration}); labels from the {reference} sequence.")


def write_per_sequence(patients: Sequence[PatientFiles], staging: Path, *, num_processes: int = 1) -> WrittenCases:
    """Write one single-channel case per sequence image into ``staging``, plus ``splits_final.json`` grouped by
    patient (see :func:`patient_grouped_splits`)."""
    cases = [SequenceCase(patient, sequence) for patient in patients for sequence in SEQUENCES
             if sequence in patient.images]
    records = map_cases(partial(convert_sequence_case, staging_dir=staging), cases, num_processes=num_processes,
                        description="MS-CMRSeg sequence images")
    splits = patient_grouped_splits({c.case_id: c.patient.case_id for c in cases if c.is_training})
    if splits:
        (staging / "splits_final.json").write_text(json.dumps(splits, indent=2) + "\n", encoding="utf-8")
    return WrittenCases(
        records=records, channel_names=[PER_SEQUENCE_CHANNEL_NAME],
        block={"reference_channel": 0, "modalities": [MODALITY],
               "per_case_modality": {case.case_id: case.sequence for case in cases}},
        notes=["one single-channel case per sequence image (sequence of each in nnunet_mm.per_case_modality); "
               + (f"splits_final.json: {len(splits)} folds grouped by patient" if splits
                  else "fewer than two labelled patients, so no splits_final.json")],
        description="MS-CMRSeg 2019, one single-channel case per sequence image (C0, LGE, T2 on their own grids); "
                    "nnunet_mm.per_case_modality names each case's sequence.")


def convert_with_summary(source_dir: Path, *, output_root: Path | None = None, dataset_id: int = DATASET_ID,
                         dataset_name: str = DATASET_NAME,
                         mode: Literal["multichannel", "per-sequence"] = "multichannel",
                         reference: Literal["C0", "LGE", "T2"] = DEFAULT_REFERENCE,
                         registration: Literal["rigid", "affine", "none"] = "rigid",
                         initialization: Literal["physical", "geometry"] = "physical", overwrite: bool = False,
                         num_processes: int = 1) -> DatasetSummary:
    """:func:`convert`, returning the :class:`~nnunet_mm.conversion.DatasetSummary` that ``main`` prints."""
    _check_arguments(mode=mode, reference=reference, registration=registration, initialization=initialization)
    source_dir = Path(source_dir)
    final_dir = prepare_output(source_dir, dataset_id=dataset_id, dataset_name=dataset_name,
                               output_root=output_root, overwrite=overwrite)
    with source_folder(source_dir) as root:
        patients, problems = find_patients(root)
        problems += layout_problems(patients, mode=mode, reference=reference)
        per_patient = map_cases(partial(validate_patient, mode=mode, reference=reference), patients,
                                num_processes=num_processes, description=f"Dataset{dataset_id:03d} check")
        raise_if_problems(problems + [line for lines in per_patient for line in lines], source_dir)

        labels = label_dict(LABEL_NAMES)
        with staged_dataset(final_dir, overwrite=overwrite) as staging:
            for sub_folder in ("imagesTr", "labelsTr", "imagesTs"):
                (staging / sub_folder).mkdir()
            if mode == "multichannel":
                written = write_multichannel(patients, staging, reference=reference, registration=registration,
                                             initialization=initialization, num_processes=num_processes)
            else:
                written = write_per_sequence(patients, staging, num_processes=num_processes)
            summary = summarize(written.records, output_dir=final_dir,
                                channel_names={str(i): name for i, name in enumerate(written.channel_names)},
                                labels=labels, notes=written.notes)
            write_dataset_json(
                staging, channel_names=written.channel_names, labels=labels, num_training=summary.num_training,
                file_ending=FILE_ENDING, dataset_name=final_dir.name,
                nnunet_mm_block={**written.block, "source": str(source_dir.resolve()),
                                 "converter": Path(__file__).stem},
                description=written.description + " Label values 500/600/200 mapped to 1/2/3.",
                reference="Zhuang, Multivariate mixture model for myocardial segmentation combining multi-source "
                          "images, IEEE TPAMI 2019; MS-CMRSeg 2019 challenge (zmiclab)",
                license="MS-CMRSeg data-use terms (download after registration); not redistributable.",
            )
    logger.info("converted %d training and %d test case(s) into %s", summary.num_training, summary.num_test,
                final_dir)
    return summary


def convert(source_dir: Path, *, output_root: Path | None = None, dataset_id: int = DATASET_ID,
            dataset_name: str = DATASET_NAME, mode: Literal["multichannel", "per-sequence"] = "multichannel",
            reference: Literal["C0", "LGE", "T2"] = DEFAULT_REFERENCE,
            registration: Literal["rigid", "affine", "none"] = "rigid",
            initialization: Literal["physical", "geometry"] = "physical", overwrite: bool = False,
            num_processes: int = 1) -> Path:
    """Convert the MS-CMRSeg 2019 download into ``<output_root>/Dataset<id>_<name>`` and return that folder; the
    other arguments and the errors are those of every converter (:mod:`nnunet_mm.dataset_conversion`).

    Args:
        source_dir: folder or ``.zip``/``.tar`` archive holding the challenge files anywhere below it; only read.
        mode: ``"multichannel"`` (one 3-channel case per patient on the reference grid) or ``"per-sequence"`` (one
            single-channel case per sequence image); see the module docstring.
        reference: multichannel: the sequence whose grid and label the case uses (channel 0).
        registration: multichannel: how the other sequences are aligned to the reference before resampling.
        initialization: start of the registration: ``"physical"`` (scanner coordinates) or ``"geometry"`` (image
            centres on each other).

    Raises:
        ValueError: also for a failed registration (nothing is written then either).
    """
    return convert_with_summary(source_dir, output_root=output_root, dataset_id=dataset_id,
                                dataset_name=dataset_name, mode=mode, reference=reference, registration=registration,
                                initialization=initialization, overwrite=overwrite,
                                num_processes=num_processes).output_dir


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command-line options: the source, the mode and registration options, and the shared options."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Convert MS-CMRSeg 2019 (bSSFP C0, LGE, T2 cardiac MR, labels 200/500/600) into an "
                               "nnU-Net raw dataset.")
    parser.add_argument("source_dir", type=Path,
                        help="folder (or .zip/.tar archive) holding C0LET2_nii45_for_challenge19/ and, optionally, "
                             "C0LET2_gt_for_challenge19/")
    parser.add_argument("--mode", choices=MODES, default="multichannel",
                        help="multichannel: one 3-channel case per patient on the reference grid; per-sequence: one "
                             "single-channel case per sequence image (default: %(default)s)")
    parser.add_argument("--reference", choices=SEQUENCES, default=DEFAULT_REFERENCE,
                        help="multichannel: sequence giving the grid and the label (default: %(default)s)")
    parser.add_argument("--registration", choices=REGISTRATION_CHOICES, default="rigid",
                        help="multichannel: align the other sequences to the reference (default: %(default)s)")
    parser.add_argument("--initialization", choices=INITIALIZATIONS, default="physical",
                        help="registration start: scanner coordinates (physical) or image centres (geometry) "
                             "(default: %(default)s)")
    add_common_arguments(parser, dataset_id=DATASET_ID, dataset_name=DATASET_NAME)
    return parser


main = converter_main(convert_with_summary, build_parser)


if __name__ == "__main__":
    sys.exit(main())
