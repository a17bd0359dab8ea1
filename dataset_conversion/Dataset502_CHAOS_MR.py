"""Dataset502_CHAOS_MR: CHAOS MR (T1-DUAL in/opposed phase and T2-SPIR; liver, kidneys, spleen) → nnU-Net raw.

Input: the CHAOS training set, given as the folder that holds ``MR/`` (``CHAOS_Train_Sets/Train_Sets``), a folder up
to two levels above it, or a ``.zip``/``.tar`` of either; optionally the test set (same layout without ``Ground``)
with ``test_source`` / ``--test-source``::

    MR/<id>/T1DUAL/DICOM_anon/InPhase/IMG-....dcm    in phase (longer echo)      one acquisition, co-registered
    MR/<id>/T1DUAL/DICOM_anon/OutPhase/IMG-....dcm   opposed phase               with one Ground
    MR/<id>/T1DUAL/Ground/IMG-....png                organs as grey levels 63 / 126 / 189 / 252
    MR/<id>/T2SPIR/DICOM_anon/IMG-....dcm            separate acquisition: own grid, breath-hold offset
    MR/<id>/T2SPIR/Ground/IMG-....png

Without ``InPhase/`` and ``OutPhase/`` folders, the T1-DUAL files directly in ``DICOM_anon`` are split by echo time
(the longer echo is in phase at 1.5 T). DICOM slices are ordered by position, not by series UID (every anonymised file
has its own). Ground PNG k (natural name order) lies on the slice of DICOM file k (natural name order) of the
in-phase series (or of T2-SPIR), see :mod:`nnunet_mm.dataset_conversion.chaos_layout`; the summary says how the file names ran in
space. Grey levels become labels by bins: (55, 70] liver 1, (110, 135] right kidney 2, (175, 200] left kidney 3,
(240, 255] spleen 4 (nnU-Net v1 ``convert_MR_seg``); any other non-zero grey level is an error naming the PNG.

Output, one case per patient ``chaos_mr_<id>`` (so nnU-Net's default split is already by patient), in
``<output_root>/Dataset502_CHAOS_MR/``:

* ``t2="channel"`` (default): ``_0000`` T1 in phase (the reference grid), ``_0001`` T1 opposed phase, ``_0002`` T2-SPIR
  registered onto the in-phase image (``t2_registration``: rigid by default, affine, or none = scanner coordinates;
  Mattes mutual information started from scanner coordinates, as both sequences come from one session) and resampled
  linearly onto its grid. ``labelsTr/chaos_mr_<id>.nii.gz`` from ``T1DUAL/Ground`` on the in-phase grid.
* ``t2="separate"``: 502 has the two T1 channels only, and T2-SPIR becomes its own single-channel dataset
  (``Dataset512_CHAOS_MR_T2``: ``t2_dataset_id`` / ``t2_dataset_name``) on its own grid with labels from
  ``T2SPIR/Ground``, with the same case ids. Both raw folders then get the same ``splits_final.json`` (nnU-Net's
  format, a list of ``{"train": [...], "val": [...]}``; 5 folds, fewer with fewer than 5 patients), so paired
  experiments use identical folds. nnU-Net reads splits only from the preprocessed folder;
  :class:`nnunet_mm.training.multimodal_trainer.MultiModalTrainer` copies the raw folder's ``splits_final.json``
  there when the preprocessed folder has none.
* ``dataset.json``: channel names ``T1_in``, ``T1_out``, ``T2`` (unknown names → nnU-Net's z-score normalisation),
  labels ``background 0, liver 1, right_kidney 2, left_kidney 3, spleen 4``; the ``'nnunet_mm'`` block holds
  ``reference_channel`` 0, ``modalities``, ``registration``, ``source``, ``converter``, ``notes`` and
  ``channel_acquisition``: ``"separate"`` with T2-SPIR as a channel (another breath-hold, so the trainer's
  misalignment and modality dropout are on), ``"co_registered"`` for the two T1-DUAL echoes alone, none for the
  single-channel T2-SPIR dataset.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import SimpleITK as sitk

from nnunet_mm.conversion import (CaseRecord, ConversionError, DatasetSummary, add_common_arguments, attempt,
                                  converter_main, image_from_array, label_dict, map_cases, prepare_output,
                                  raise_if_problems, summarize, voxel_counts)
from nnunet_mm.dataset_conversion.chaos_layout import (DICOM_FOLDER, GROUND_FOLDER, MR_LABEL_NAMES, DicomSeries, Patient,
                                                       add_source_arguments, checked_patients, mr_ground_labels,
                                                       patient_splits, place_ground, read_ground, read_series,
                                                       read_series_folder, required_folder, source_block,
                                                       source_folders, t1dual_echo_files)
from nnunet_mm.io import (geometry_differences, register, resample_to_reference, staged_dataset, write_dataset_json,
                          write_image)

logger = logging.getLogger(__name__)

DATASET_ID = 502
DATASET_NAME = "CHAOS_MR"
T2_DATASET_ID = 512
T2_DATASET_NAME = "CHAOS_MR_T2"
T2_MODES = ("channel", "separate")
T2_REGISTRATIONS = ("rigid", "affine", "none")
CASE_PREFIX = "chaos_mr"
FILE_ENDING = ".nii.gz"
CHANNEL_NAMES = ("T1_in", "T1_out", "T2")
MODALITIES = ("MR-T1in", "MR-T1out", "MR-T2SPIR")
GEOMETRY_TOLERANCE = 1e-3  # mm and direction cosines
SPLITS_FILE = "splits_final.json"



@dataclass(frozen=True)
class MrCase:
    """The volumes of one patient; labels are None for test patients (and ``t2_label`` unless asked for)."""

    t1_in: sitk.Image
    t1_out: sitk.Image  # on the t1_in grid
    t2: sitk.Image
    t1_label: sitk.Image | None
    t2_label: sitk.Image | None
    t2_where: Path
    echo_split: str  # "folders" or "echo time"
    t1_file_order: str  # how the DICOM names ran in space ("ascending", "descending", "mixed")
    t2_file_order: str


def _read_labels(series: DicomSeries | None, ground_parent: Path, root: Path, problems: list[str]) -> sitk.Image | None:
    """Labels from ``<ground_parent>/Ground`` placed on ``series`` through the DICOM file order."""
    folder = attempt(problems, required_folder, ground_parent, GROUND_FOLDER)
    ground = attempt(problems, read_ground, folder, root=root) if folder is not None else None
    if ground is None:
        return None
    labels, label_problems = mr_ground_labels(*ground)
    problems += label_problems
    if series is None or label_problems:
        return None
    placed = attempt(problems, place_ground, labels, series, ground_folder=folder, order="dicom_file_order")
    if placed is None:
        return None
    return image_from_array(placed, series.image.GetSpacing(), reference=series.image)


def _t1_out_on_in_grid(t1_in: DicomSeries, t1_out: DicomSeries, problems: list[str]) -> sitk.Image | None:
    """The opposed-phase volume on the in-phase grid: the same slices are required; small grid differences are
    resampled away in scanner coordinates."""
    if t1_out.image.GetSize() != t1_in.image.GetSize():
        (out_x, out_y, out_z), (in_x, in_y, in_z) = t1_out.image.GetSize(), t1_in.image.GetSize()
        problems.append(f"{t1_out.where}: {out_z} opposed-phase slices of {out_x} x {out_y} do not match the in-phase "
                        f"volume {t1_in.where} ({in_z} slices of {in_x} x {in_y}); T1-DUAL echoes must share their "
                        f"slices.")
        return None
    differences = geometry_differences(t1_out.image, t1_in.image, tolerance=GEOMETRY_TOLERANCE)
    if differences:
        logger.warning("%s: %s differ from the in-phase series %s; resampled onto the in-phase grid", t1_out.where,
                       ", ".join(differences), t1_in.where)
        return resample_to_reference(t1_out.image, t1_in.image)
    return t1_out.image


def read_case(patient: Patient, *, with_t2_label: bool) -> tuple[MrCase | None, list[str]]:
    """Read every file of ``patient`` and return the case, or None and one problem line per missing, unreadable
    or inconsistent file (each naming it)."""
    problems: list[str] = []
    root = patient.root
    t1_dual = attempt(problems, required_folder, patient.folder, "T1DUAL")
    echoes = None
    if t1_dual is not None:
        dicom_anon = attempt(problems, required_folder, t1_dual, DICOM_FOLDER)
        echoes = attempt(problems, t1dual_echo_files, dicom_anon, root=root) if dicom_anon is not None else None
    t1_in = t1_out = None
    if echoes is not None:
        t1_in = attempt(problems, read_series, echoes.in_phase, where=echoes.in_phase_where, root=root)
        t1_out = attempt(problems, read_series, echoes.out_phase, where=echoes.out_phase_where, root=root)
    t1_out_image = _t1_out_on_in_grid(t1_in, t1_out, problems) if t1_in is not None and t1_out is not None else None
    t2_folder = attempt(problems, required_folder, patient.folder, "T2SPIR", DICOM_FOLDER)
    t2 = attempt(problems, read_series_folder, t2_folder, root=root) if t2_folder is not None else None

    t1_label = t2_label = None
    if patient.is_training and t1_dual is not None:
        t1_label = _read_labels(t1_in, t1_dual, root, problems)
    if patient.is_training and with_t2_label:
        t2_parent = attempt(problems, required_folder, patient.folder, "T2SPIR")
        if t2_parent is not None:
            t2_label = _read_labels(t2, t2_parent, root, problems)
    if problems:
        return None, problems
    assert t1_in is not None and t1_out_image is not None and t2 is not None and echoes is not None
    return MrCase(t1_in.image, t1_out_image, t2.image, t1_label, t2_label, t2.where, echoes.split_by,
                  t1_in.file_order, t2.file_order), []


def check_case(patient: Patient, *, with_t2_label: bool) -> list[str]:
    """The problems of one patient (its volumes are read and dropped, so memory stays at one case per process)."""
    return read_case(patient, with_t2_label=with_t2_label)[1]


def _t2_on_t1_grid(case: MrCase, registration: str) -> sitk.Image:
    """T2-SPIR registered (unless ``"none"``) onto the in-phase image and resampled linearly onto its grid."""
    transform = None
    if registration != "none":
        try:
            transform = register(case.t1_in, case.t2, mode=registration, initialization="physical")
        except RuntimeError as error:
            raise ConversionError([f"{case.t2_where}: {error} (T2-SPIR onto the T1 in-phase image); try "
                                   f"--t2-registration none or --t2 separate."]) from None
    return resample_to_reference(case.t2, case.t1_in, transform=transform)


def _record(case_id: str, image: sitk.Image, label: sitk.Image | None, *, echo_split: str,
            file_order: str) -> CaseRecord:
    """What was written for one case; ``file_order`` (of the series the Ground was placed on) only with a label."""
    counts = None
    if label is not None:
        counts = voxel_counts(sitk.GetArrayViewFromImage(label), len(MR_LABEL_NAMES) + 1)
    extra = {"echo_split": echo_split, "ground_file_order": file_order if label is not None else None}
    return CaseRecord(case_id, label is not None, tuple(image.GetSpacing()), counts, extra)


def _write_case(folder: Path, case_id: str, images: Sequence[sitk.Image], label: sitk.Image | None) -> None:
    sub_folder = "imagesTr" if label is not None else "imagesTs"
    for channel, image in enumerate(images):
        write_image(image, folder / sub_folder / f"{case_id}_{channel:04d}{FILE_ENDING}")
    if label is not None:
        write_image(label, folder / "labelsTr" / f"{case_id}{FILE_ENDING}")


def convert_case(patient: Patient, *, staging: Path, t2_staging: Path | None, t2_registration: str
                 ) -> tuple[CaseRecord, CaseRecord | None]:
    """Write one patient into ``staging`` (and its T2-SPIR into ``t2_staging`` when T2 is a separate dataset).

    Returns:
        The record for this dataset and, with ``t2_staging``, the one for the T2 dataset.
    """
    case, problems = read_case(patient, with_t2_label=t2_staging is not None)
    raise_if_problems(problems, patient.folder)
    assert case is not None
    images = [case.t1_in, case.t1_out]
    if t2_staging is None:
        images.append(_t2_on_t1_grid(case, t2_registration))
    _write_case(staging, patient.case_id, images, case.t1_label)
    t2_record = None
    if t2_staging is not None:
        _write_case(t2_staging, patient.case_id, [case.t2], case.t2_label)
        t2_record = _record(patient.case_id, case.t2, case.t2_label, echo_split=case.echo_split,
                            file_order=case.t2_file_order)
    record = _record(patient.case_id, case.t1_in, case.t1_label, echo_split=case.echo_split,
                     file_order=case.t1_file_order)
    return record, t2_record


def _echo_note(records: Sequence[CaseRecord]) -> str:
    """How the T1-DUAL echoes were told apart, over all patients."""
    splits = Counter(record.extra["echo_split"] for record in records)
    return "T1-DUAL echoes told apart by " + ", ".join(f"{how} in {count} patient(s)"
                                                       for how, count in sorted(splits.items()))


def _ground_order_notes(records: Sequence[CaseRecord]) -> list[str]:
    """How the DICOM file numbers ran in space in the series the Ground masks were placed on."""
    orders = Counter(record.extra["ground_file_order"] for record in records if record.extra["ground_file_order"])
    if not orders:
        return []
    counts = ", ".join(f"{order} in {count} series" for order, count in sorted(orders.items()))
    return [f"Ground PNG k placed on DICOM file k (natural name order); file numbers vs slice position: {counts}"]


def _registration_text(t2: str, t2_registration: str, t2_dir: Path | None) -> str:
    if t2_dir is not None:
        return f"none: T2-SPIR is the separate dataset {t2_dir.name} on its own grid"
    if t2_registration == "none":
        return "T2-SPIR (channel 2) resampled onto the T1 in-phase grid in scanner coordinates, without registration"
    return (f"T2-SPIR (channel 2) registered {t2_registration} onto the T1 in-phase image (Mattes mutual information, "
            f"started from scanner coordinates) and resampled linearly onto its grid")


def _check_options(t2: str, t2_registration: str, dataset_id: int, t2_dataset_id: int) -> None:
    if t2 not in T2_MODES:
        raise ValueError(f"unknown t2 mode {t2!r}; expected one of {list(T2_MODES)}.")
    if t2_registration not in T2_REGISTRATIONS:
        raise ValueError(f"unknown t2_registration {t2_registration!r}; expected one of {list(T2_REGISTRATIONS)}.")
    if t2 == "separate" and int(t2_dataset_id) == int(dataset_id):
        raise ValueError(f"--t2-dataset-id must differ from --dataset-id (both {dataset_id}).")


def _channel_acquisition(channels: Sequence[int]) -> dict[str, str]:
    """The block's ``channel_acquisition`` for ``channels`` (indices of CHANNEL_NAMES): T2-SPIR is a separate
    breath-hold, so with it the channels are ``separate``; the two T1-DUAL echoes come from one acquisition
    (``co_registered``); a single channel declares nothing."""
    if len(channels) < 2:
        return {}
    return {"channel_acquisition": "separate" if CHANNEL_NAMES.index("T2") in channels else "co_registered"}


def _write_dataset(staging: Path, final_dir: Path, records: Sequence[CaseRecord], *, channels: Sequence[int],
                   registration: str, sources: dict[str, str | None], layout_notes: Sequence[str],
                   description: str, summary_notes: Sequence[str] = ()) -> DatasetSummary:
    """dataset.json of one of the datasets (``channels`` index CHANNEL_NAMES); returns the summary to print, whose
    notes are the registration, ``layout_notes`` (also kept in dataset.json) and ``summary_notes``."""
    channel_names = {str(i): CHANNEL_NAMES[channel] for i, channel in enumerate(channels)}
    summary = summarize(records, output_dir=final_dir, channel_names=channel_names, labels=label_dict(MR_LABEL_NAMES),
                        notes=[f"registration: {registration}", *layout_notes, *summary_notes])
    write_dataset_json(
        staging, channel_names=channel_names, labels=summary.labels, num_training=summary.num_training,
        file_ending=FILE_ENDING, dataset_name=final_dir.name,
        nnunet_mm_block={"reference_channel": 0,
                         "modalities": {str(i): MODALITIES[channel] for i, channel in enumerate(channels)},
                         "registration": registration, "source": sources, "converter": Path(__file__).stem,
                         "notes": list(layout_notes), **_channel_acquisition(channels)},
        description=description, reference="https://chaos.grand-challenge.org/",
        license="see the CHAOS data terms (Zenodo record 3431873)")
    return summary


def _write_splits(folders: Sequence[Path], training_ids: Sequence[str]) -> str:
    """The same patient-grouped ``splits_final.json`` into every folder; returns a line for the summary."""
    if len(training_ids) < 2:
        return f"{SPLITS_FILE}: not written (fewer than two training patients)"
    splits = patient_splits(training_ids)
    for folder in folders:
        (folder / SPLITS_FILE).write_text(json.dumps(splits, indent=2) + "\n", encoding="utf-8")
    return f"{SPLITS_FILE}: {len(splits)} folds by patient, the same in both datasets"


def _write_separate_t2(t2_staging: Path, t2_dir: Path, staging: Path,
                       results: Sequence[tuple[CaseRecord, CaseRecord | None]],
                       sources: dict[str, str | None]) -> list[str]:
    """The T2-SPIR dataset's dataset.json and the shared splits; returns the lines for this dataset's summary."""
    records = [t2_record for _, t2_record in results if t2_record is not None]
    t2_summary = _write_dataset(
        t2_staging, t2_dir, records, channels=[2], registration="none: T2-SPIR on its own grid with its own Ground",
        sources=sources, layout_notes=_ground_order_notes(records),
        description="CHAOS MR T2-SPIR, paired with the T1-DUAL dataset (same case ids and folds); labels from "
                    "T2SPIR/Ground.")
    splits_note = _write_splits([staging, t2_staging], [r.case_id for r in records if r.is_training])
    return [splits_note, "T2-SPIR dataset:", *("  " + line for line in t2_summary.format().splitlines())]


def convert_with_summary(source_dir: Path, *, test_source: Path | None = None,
                         t2: Literal["channel", "separate"] = "channel",
                         t2_registration: Literal["rigid", "affine", "none"] = "rigid",
                         t2_dataset_id: int = T2_DATASET_ID, t2_dataset_name: str = T2_DATASET_NAME,
                         dataset_id: int = DATASET_ID, dataset_name: str = DATASET_NAME,
                         output_root: Path | None = None, overwrite: bool = False,
                         num_processes: int = 1) -> DatasetSummary:
    """:func:`convert`, returning the summary of this dataset (its notes include the T2 dataset's summary when T2 is
    separate)."""
    _check_options(t2, t2_registration, dataset_id, t2_dataset_id)
    outputs = dict(output_root=output_root, overwrite=overwrite, test_source=test_source)
    final_dir = prepare_output(source_dir, dataset_id=dataset_id, dataset_name=dataset_name, **outputs)
    t2_dir = None
    if t2 == "separate":
        t2_dir = prepare_output(source_dir, dataset_id=t2_dataset_id, dataset_name=t2_dataset_name, **outputs)
    sources = source_block(source_dir, test_source)
    with source_folders(source_dir, test_source) as (root, test_root):
        patients = checked_patients(root, test_root, modality="MR", prefix=CASE_PREFIX,
                                    check=partial(check_case, with_t2_label=t2_dir is not None),
                                    num_processes=num_processes, description=f"Dataset{dataset_id:03d} check",
                                    reported_source=source_dir)
        with staged_dataset(final_dir, overwrite=overwrite) as staging, \
                (staged_dataset(t2_dir, overwrite=overwrite) if t2_dir else contextlib.nullcontext()) as t2_staging:
            for folder in [staging] + ([t2_staging] if t2_dir else []):
                for sub_folder in ("imagesTr", "labelsTr", "imagesTs"):
                    (folder / sub_folder).mkdir()
            results = map_cases(partial(convert_case, staging=staging, t2_staging=t2_staging,
                                        t2_registration=t2_registration),
                                patients, num_processes=num_processes, description=f"Dataset{dataset_id:03d} convert")
            records = [record for record, _ in results]
            t2_notes = _write_separate_t2(t2_staging, t2_dir, staging, results, sources) if t2_dir else []
            summary = _write_dataset(
                staging, final_dir, records, channels=[0, 1] if t2_dir else [0, 1, 2],
                registration=_registration_text(t2, t2_registration, t2_dir), sources=sources,
                layout_notes=[_echo_note(records), *_ground_order_notes(records)], summary_notes=t2_notes,
                description="CHAOS MR: T1-DUAL in and opposed phase" + ("" if t2_dir else " and T2-SPIR")
                            + "; labels from T1DUAL/Ground on the in-phase grid.")
    logger.info("converted %d training and %d test case(s) into %s", summary.num_training, summary.num_test, final_dir)
    return summary


def convert(source_dir: Path, *, test_source: Path | None = None, t2: Literal["channel", "separate"] = "channel",
            t2_registration: Literal["rigid", "affine", "none"] = "rigid", t2_dataset_id: int = T2_DATASET_ID,
            t2_dataset_name: str = T2_DATASET_NAME, dataset_id: int = DATASET_ID, dataset_name: str = DATASET_NAME,
            output_root: Path | None = None, overwrite: bool = False, num_processes: int = 1) -> Path:
    """Convert CHAOS MR into ``<output_root>/Dataset<id>_<name>`` (and the T2 dataset with ``t2="separate"``) and
    return the first folder; the other arguments and the errors are those of every converter
    (:mod:`nnunet_mm.dataset_conversion`), for both dataset folders.

    Args:
        source_dir: the training set (folder holding ``MR/``, a parent up to two levels above, or an archive).
        test_source: the test set in the same layout (no ``Ground``), written to ``imagesTs``.
        t2: ``"channel"``: T2-SPIR registered onto T1 as channel 2; ``"separate"``: its own dataset.
        t2_registration: ``"rigid"``, ``"affine"`` or ``"none"`` (only with ``t2="channel"``).
        t2_dataset_id: id of the T2 dataset (``t2="separate"``).
        t2_dataset_name: name of the T2 dataset.

    Raises:
        ConversionError: also for a failed registration (nothing is written then either).
    """
    return convert_with_summary(source_dir, test_source=test_source, t2=t2, t2_registration=t2_registration,
                                t2_dataset_id=t2_dataset_id, t2_dataset_name=t2_dataset_name, dataset_id=dataset_id,
                                dataset_name=dataset_name, output_root=output_root, overwrite=overwrite,
                                num_processes=num_processes).output_dir


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command line of this converter (``nnunet_mm convert 502 --help``)."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Convert CHAOS MR (T1-DUAL in/opposed phase, T2-SPIR) into an nnU-Net raw dataset.")
    add_source_arguments(parser, "MR")
    parser.add_argument("--t2", choices=T2_MODES, default="channel",
                        help="channel: T2-SPIR registered onto T1 as channel 2; separate: its own dataset "
                             "(default: %(default)s)")
    parser.add_argument("--t2-registration", choices=T2_REGISTRATIONS, default="rigid",
                        help="registration of T2-SPIR onto the T1 in-phase image (default: %(default)s)")
    parser.add_argument("--t2-dataset-id", type=int, default=T2_DATASET_ID,
                        help="id of the T2 dataset with --t2 separate (default: %(default)s)")
    parser.add_argument("--t2-dataset-name", default=T2_DATASET_NAME,
                        help="name of the T2 dataset with --t2 separate (default: %(default)s)")
    add_common_arguments(parser, dataset_id=DATASET_ID, dataset_name=DATASET_NAME)
    return parser


main = converter_main(convert_with_summary, build_parser)


if __name__ == "__main__":
    sys.exit(main())
