"""Dataset503_CHAOS_CT: CHAOS CT (contrast-enhanced, portal-venous phase; liver) → nnU-Net raw.

Input: the CHAOS training set, given as the folder that holds ``CT/`` (``CHAOS_Train_Sets/Train_Sets``), a folder up
to two levels above it, or a ``.zip``/``.tar`` of either; optionally the test set (same layout without ``Ground``)
with ``test_source`` / ``--test-source``::

    CT/<id>/DICOM_anon/i0000,0000b.dcm ...    one slice per file
    CT/<id>/Ground/liver_GT_000.png ...       liver mask, 1 or 255 depending on the copy of the data

DICOM slices are ordered by position (ascending along the slice normal), never grouped by series UID. The CT Ground
order is reversed relative to that: by default liver_GT PNG k (natural name order) lies on slice N-1-k of the
position-sorted volume. This follows jonasteuwen/chaos-challenge, which reverses the CT Ground list after GDCM's
position sort ("the CT masks seem to be flipped"); it was not checked against real data here (none available). A
plausible cause is that PNG k belongs to DICOM file k and the files are numbered from the top slice down; if a copy of
the data does not have the flip, ``flip_ct_masks=False`` (``--no-flip-ct-masks``) places PNG k on slice k. Every
non-zero pixel is liver (copies use 1 or 255).

Output, one case per patient ``chaos_ct_<id>``, in ``<output_root>/Dataset503_CHAOS_CT/``:
``imagesTr/chaos_ct_<id>_0000.nii.gz`` (CT as stored, Hounsfield units after the DICOM rescale),
``labelsTr/chaos_ct_<id>.nii.gz`` (0 background, 1 liver), test patients in ``imagesTs``. ``dataset.json`` names the
channel ``CT`` (nnU-Net's CT normalisation); the ``'nnunet_mm'`` block holds ``reference_channel`` 0,
``modalities``, ``registration`` (none), ``source``, ``converter`` and ``notes`` (the mask order used). CT and MR of
CHAOS come from different patients, so they are separate datasets, never channels of one.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import SimpleITK as sitk

from nnunet_mm.conversion import (CaseRecord, DatasetSummary, add_common_arguments, converter_main, image_from_array,
                                  label_dict, map_cases, prepare_output, raise_if_problems, summarize, voxel_counts)
from nnunet_mm.dataset_conversion.chaos_layout import (CT_LABEL_NAMES, DICOM_FOLDER, GROUND_FOLDER, MaskOrder, Patient,
                                                       add_source_arguments, checked_patients, ct_ground_labels,
                                                       place_ground, read_ground, read_series_folder, required_folder,
                                                       source_block, source_folders)
from nnunet_mm.io import staged_dataset, write_dataset_json, write_image

logger = logging.getLogger(__name__)

DATASET_ID = 503
DATASET_NAME = "CHAOS_CT"
CASE_PREFIX = "chaos_ct"
FILE_ENDING = ".nii.gz"
CHANNEL_NAME = "CT"  # nnU-Net picks CT normalisation by this name


def mask_order(flip_ct_masks: bool) -> MaskOrder:
    """The Ground placement rule: reversed relative to the position-sorted slices, or not."""
    return "reversed_position" if flip_ct_masks else "position"


@dataclass(frozen=True)
class CtCase:
    """The CT volume of one patient and, for training patients, the liver label on its grid."""

    image: sitk.Image
    label: sitk.Image | None


def read_case(patient: Patient, *, flip_ct_masks: bool) -> tuple[CtCase | None, list[str]]:
    """Read every file of ``patient`` and return the case, or None and one problem line per missing, unreadable or
    inconsistent file (each naming it)."""
    problems: list[str] = []
    series = label = None
    try:
        series = read_series_folder(required_folder(patient.folder, DICOM_FOLDER), root=patient.root)
    except ValueError as error:
        problems.append(str(error))
    if patient.is_training:
        try:
            ground_folder = required_folder(patient.folder, GROUND_FOLDER)
            _, stack = read_ground(ground_folder, root=patient.root)
            if series is not None:
                placed = place_ground(ct_ground_labels(stack), series, ground_folder=ground_folder,
                                      order=mask_order(flip_ct_masks))
                label = image_from_array(placed, series.image.GetSpacing(), reference=series.image)
        except ValueError as error:
            problems.append(str(error))
    if problems:
        return None, problems
    assert series is not None
    return CtCase(series.image, label), []


def check_case(patient: Patient, *, flip_ct_masks: bool) -> list[str]:
    """The problems of one patient (its volumes are read and dropped, so memory stays at one case per process)."""
    return read_case(patient, flip_ct_masks=flip_ct_masks)[1]


def convert_case(patient: Patient, *, staging: Path, flip_ct_masks: bool) -> CaseRecord:
    """Write one patient into ``staging``."""
    case, problems = read_case(patient, flip_ct_masks=flip_ct_masks)
    raise_if_problems(problems, patient.folder)
    assert case is not None
    image, label = case.image, case.label
    sub_folder = "imagesTr" if label is not None else "imagesTs"
    write_image(image, staging / sub_folder / f"{patient.case_id}_0000{FILE_ENDING}")
    counts = None
    if label is not None:
        write_image(label, staging / "labelsTr" / f"{patient.case_id}{FILE_ENDING}")
        counts = voxel_counts(sitk.GetArrayViewFromImage(label), len(CT_LABEL_NAMES) + 1)
    return CaseRecord(patient.case_id, label is not None, tuple(image.GetSpacing()), counts)


def _mask_note(flip_ct_masks: bool) -> str:
    if flip_ct_masks:
        return ("Ground liver_GT PNG k placed on slice N-1-k of the DICOM slices sorted by position (the CHAOS CT "
                "masks are reversed; --no-flip-ct-masks keeps PNG k on slice k)")
    return "Ground liver_GT PNG k placed on slice k of the DICOM slices sorted by position (no flip)"


def convert_with_summary(source_dir: Path, *, test_source: Path | None = None, flip_ct_masks: bool = True,
                         dataset_id: int = DATASET_ID, dataset_name: str = DATASET_NAME,
                         output_root: Path | None = None, overwrite: bool = False,
                         num_processes: int = 1) -> DatasetSummary:
    """:func:`convert`, returning the summary instead of only the output folder."""
    final_dir = prepare_output(source_dir, dataset_id=dataset_id, dataset_name=dataset_name, output_root=output_root,
                               overwrite=overwrite, test_source=test_source)
    with source_folders(source_dir, test_source) as (root, test_root):
        patients = checked_patients(root, test_root, modality="CT", prefix=CASE_PREFIX,
                                    check=partial(check_case, flip_ct_masks=flip_ct_masks),
                                    num_processes=num_processes, description=f"Dataset{dataset_id:03d} check",
                                    reported_source=source_dir)
        with staged_dataset(final_dir, overwrite=overwrite) as staging:
            for sub_folder in ("imagesTr", "labelsTr", "imagesTs"):
                (staging / sub_folder).mkdir()
            records = map_cases(partial(convert_case, staging=staging, flip_ct_masks=flip_ct_masks), patients,
                                num_processes=num_processes, description=f"Dataset{dataset_id:03d} convert")
            summary = summarize(records, output_dir=final_dir, channel_names={"0": CHANNEL_NAME},
                                labels=label_dict(CT_LABEL_NAMES), notes=[_mask_note(flip_ct_masks)])
            write_dataset_json(
                staging, channel_names=summary.channel_names, labels=summary.labels,
                num_training=summary.num_training, file_ending=FILE_ENDING, dataset_name=final_dir.name,
                nnunet_mm_block={"reference_channel": 0, "modalities": {"0": "CT"},
                                 "registration": "none (one channel)",
                                 "source": source_block(source_dir, test_source),
                                 "converter": Path(__file__).stem, "notes": [_mask_note(flip_ct_masks)]},
                description="CHAOS CT (portal-venous phase), liver only.",
                reference="https://chaos.grand-challenge.org/",
                license="see the CHAOS data terms (Zenodo record 3431873)")
    logger.info("converted %d training and %d test case(s) into %s", summary.num_training, summary.num_test, final_dir)
    return summary


def convert(source_dir: Path, *, test_source: Path | None = None, flip_ct_masks: bool = True,
            dataset_id: int = DATASET_ID, dataset_name: str = DATASET_NAME, output_root: Path | None = None,
            overwrite: bool = False, num_processes: int = 1) -> Path:
    """Convert CHAOS CT into ``<output_root>/Dataset<id>_<name>`` and return that folder; the other arguments and
    the errors are those of every converter (:mod:`nnunet_mm.dataset_conversion`).

    Args:
        source_dir: the training set (folder holding ``CT/``, a parent up to two levels above, or an archive).
        test_source: the test set in the same layout (no ``Ground``), written to ``imagesTs``.
        flip_ct_masks: place Ground PNG k on slice N-1-k of the position-sorted volume (the CHAOS CT quirk); False
            places it on slice k.
    """
    return convert_with_summary(source_dir, test_source=test_source, flip_ct_masks=flip_ct_masks,
                                dataset_id=dataset_id, dataset_name=dataset_name, output_root=output_root,
                                overwrite=overwrite, num_processes=num_processes).output_dir


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command line of this converter (``nnunet_mm convert 503 --help``)."""
    parser = argparse.ArgumentParser(prog=prog, description="Convert CHAOS CT (liver) into an nnU-Net raw dataset.")
    add_source_arguments(parser, "CT")
    parser.add_argument("--no-flip-ct-masks", dest="flip_ct_masks", action="store_false",
                        help="place Ground PNG k on slice k of the position-sorted DICOM slices instead of slice N-1-k")
    add_common_arguments(parser, dataset_id=DATASET_ID, dataset_name=DATASET_NAME)
    return parser


main = converter_main(convert_with_summary, build_parser)


if __name__ == "__main__":
    sys.exit(main())
