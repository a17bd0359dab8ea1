"""BraTS 2018/2019 → nnU-Net raw (shared by ``Dataset506_BraTS2018`` and ``Dataset507_BraTS2019``), and the inverse
label mapping that turns nnU-Net predictions back into BraTS labels.

Input: the official training folder (unpacked, or the ``.zip``/``.tar`` it came in)::

    MICCAI_BraTS_2018_Data_Training/                      source_dir
        survival_data.csv                                 ignored (2019 also has name_mapping.csv)
        HGG/Brats18_<inst>_<id>_1/Brats18_<inst>_<id>_1_{t1,t1ce,t2,flair,seg}.nii.gz
        LGG/Brats18_.../...
    MICCAI_BraTS_2018_Data_Validation/                    test_source (optional; flat, no _seg files)
        Brats18_<inst>_<id>_1/Brats18_<inst>_<id>_1_{t1,t1ce,t2,flair}.nii.gz

2019 is the same with ``BraTS19_`` names. Case folders are the sub-folders of ``HGG/`` and ``LGG/`` and any other
sub-folder of the source (so the flat validation layout needs no special case). Files are matched by their
``_<sequence>`` suffix and may end in ``.nii.gz`` (the official archives) or ``.nii``: nnU-Net v2's
``Dataset042_BraTS18``/``Dataset043_BraTS19`` hard-code ``.nii``, a known bug (datasets.md §1).

Output, in ``<output_root>/Dataset<id>_<name>/``:

* ``imagesTr/<case>_0000..0003.nii.gz`` = t1, t1ce, t2, flair; ``.nii.gz`` inputs are copied byte for byte,
  ``.nii`` inputs are compressed. Validation cases go to ``imagesTs``.
* ``labelsTr/<case>.nii.gz`` (uint8), nnU-Net's remap of the BraTS labels: 2 (edema) → 1, 1 (NCR/NET) → 2,
  4 (enhancing tumour) → 3. Any other value is refused, naming the file. Label 3 (the BRATS 2015 "non-enhancing
  tumour", merged into NCR/NET from BraTS 2017 on) is refused with a hint, or with ``legacy_2015`` merged into
  NCR/NET (→ 2). Float label files are fine when their values are whole numbers.
* ``dataset.json``: channel_names ``{0: T1, 1: T1ce, 2: T2, 3: Flair}`` (z-score), region training as in nnU-Net's
  Dataset042: labels ``{background: 0, whole tumor: [1, 2, 3], tumor core: [2, 3], enhancing tumor: [3]}``,
  ``regions_class_order`` ``[1, 2, 3]``; the ``'nnunet_mm'`` block declares ``"channel_acquisition":
  "co_registered"`` (the release co-registers the sequences), so the trainer neither misaligns nor drops them; add
  ``"modality_dropout": {"probability": 0.1}`` to train for missing sequences.

nnU-Net writes region predictions as 1 edema, 2 NCR/NET, 3 enhancing; :func:`convert_folder_back_to_brats`
(``python -m nnunet_mm.dataset_conversion.brats_layout PREDICTIONS OUTPUT``) maps them back to 2/1/4 for BraTS evaluation.

Where the facts come from: the label encoding, the channel order and the regions are nnU-Net's
``Dataset042_BraTS18`` (read in nnU-Net 2.8.1). The folder and file names, the ``.nii.gz`` ending, the csv files
in the training root, int16 images and uint8 segmentations are from datasets.md §2.4 and memory of the archives,
not confirmed on real 2018/2019 data. Confirmed on the real BRATS 2015 cases of deepmedic (the only real BraTS
data here): 240×240×155 voxels of 1 mm, origin (0, -239, 0), identity direction, float32 label files holding
0, 1, 2, 3 and 4.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_mm.conversion.archives import IGNORED_PREFIXES, check_inside, source_folder
from nnunet_mm.conversion.errors import attempt, raise_if_problems
from nnunet_mm.conversion.labels import label_value_problems, labels_back, remap_labels, voxel_counts
from nnunet_mm.conversion.runner import (CaseRecord, DatasetSummary, add_common_arguments, case_id_collisions,
                                         converter_main, map_cases, prepare_output, sanitize_case_id, summarize)
from nnunet_mm.conversion.slices import image_from_array
from nnunet_mm.io.console import error_text
from nnunet_mm.io import (describe_geometry, geometry_differences, read_image, staged_dataset, write_dataset_json,
                          write_image)

logger = logging.getLogger(__name__)

SEQUENCES = ("t1", "t1ce", "t2", "flair")  # channel order, as in nnU-Net's Dataset042_BraTS18
CHANNEL_NAMES = {"0": "T1", "1": "T1ce", "2": "T2", "3": "Flair"}
SEGMENTATION = "seg"
GRADES = ("HGG", "LGG")
NIFTI_ENDINGS = (".nii.gz", ".nii")
FILE_ENDING = ".nii.gz"
GEOMETRY_TOLERANCE = 1e-3  # mm (spacing, origin) and direction cosines

# BraTS (2017 on) label value → nnU-Net label value, and back; kept side by side
BRATS_TO_NNUNET = {0: 0, 2: 1, 1: 2, 4: 3}
NNUNET_TO_BRATS = {nnunet: brats for brats, nnunet in BRATS_TO_NNUNET.items()}
LEGACY_2015_LABEL = 3  # BRATS 2015 non-enhancing tumour; with legacy_2015 it becomes NCR/NET:
LEGACY_2015_TARGET = 1  # BraTS NCR/NET (nnU-Net 2)
LABEL_VALUES = {"background": 0, "edema": 1, "NCR/NET": 2, "enhancing tumor": 3}  # what labelsTr holds
REGION_LABELS = {"background": 0, "whole tumor": (1, 2, 3), "tumor core": (2, 3), "enhancing tumor": (3,)}
REGIONS_CLASS_ORDER = (1, 2, 3)
LABELS_NOTE = ("labelsTr: 1 edema (BraTS 2), 2 NCR/NET (BraTS 1), 3 enhancing tumor (BraTS 4); dataset.json trains on "
               "the regions whole tumor (1, 2, 3), tumor core (2, 3), enhancing tumor (3)")
EXPORT_NOTE = "predictions back to BraTS labels: python -m nnunet_mm.dataset_conversion.brats_layout PREDICTIONS OUTPUT"
LEGACY_HINT = (f"Label {LEGACY_2015_LABEL} is the BRATS 2015 'non-enhancing tumour', merged into NCR/NET (1) from "
               f"BraTS 2017 on; pass --legacy-2015 (legacy_2015=True) to merge it into NCR/NET.")


@dataclass(frozen=True)
class BratsCase:
    """The files of one case; ``image_files`` in :data:`SEQUENCES` order (None marks a missing file, which
    :func:`find_cases` has reported)."""

    case_id: str
    folder: Path
    grade: str | None  # "HGG", "LGG", or None for the flat validation layout
    is_training: bool
    image_files: tuple[Path | None, ...]
    segmentation_file: Path | None


# ----------------------------------------------------------------------------------------------------------------
# label mapping and its inverse

def convert_labels_to_nnunet(segmentation: np.ndarray, file: Path, *, legacy_2015: bool = False) -> np.ndarray:
    """BraTS labels (0, 1 NCR/NET, 2 edema, 4 enhancing) → nnU-Net's (0, 1 edema, 2 NCR/NET, 3 enhancing), uint8.

    Args:
        segmentation: label voxels as read from ``file`` (any numeric dtype with whole-number values).
        file: the segmentation file, named in messages.
        legacy_2015: merge label 3 (BRATS 2015 non-enhancing tumour) into NCR/NET, with a warning naming ``file``.

    Raises:
        ValueError: any other value, non-integer values, or label 3 without ``legacy_2015``.
    """
    is_legacy = segmentation == LEGACY_2015_LABEL
    if np.any(is_legacy):
        if not legacy_2015:
            values = np.unique(segmentation)
            raise ValueError(" ".join(label_value_problems(values, BRATS_TO_NNUNET, file, hint=LEGACY_HINT)))
        # merged here, not by remap_labels(fixes=...), whose stray-value check reads its -1 marker as 255 in uint8
        logger.warning("%s: %d voxel(s) of label 3 (BRATS 2015 non-enhancing tumour) merged into NCR/NET", file,
                       int(np.count_nonzero(is_legacy)))
        segmentation = np.where(is_legacy, LEGACY_2015_TARGET, segmentation)
    return remap_labels(segmentation, BRATS_TO_NNUNET, file)


def convert_labels_back_to_brats(segmentation: np.ndarray) -> np.ndarray:
    """nnU-Net labels (0, 1 edema, 2 NCR/NET, 3 enhancing) → BraTS labels (0, 2, 1, 4), uint8, same shape.

    Raises:
        ValueError: values other than 0..3 (the message lists them).
    """
    return labels_back(segmentation, NNUNET_TO_BRATS, dtype=np.uint8,
                       meaning="0 background, 1 edema, 2 NCR/NET, 3 enhancing tumour")


def _nifti_ending(path: Path) -> str | None:
    name = path.name.lower()
    return next((ending for ending in NIFTI_ENDINGS if name.endswith(ending)), None)


def convert_file_back_to_brats(prediction_file: Path, output_folder: Path) -> Path:
    """Write ``output_folder/<same name>`` with the labels of ``prediction_file`` mapped back to BraTS values
    (geometry unchanged). Raises ValueError naming the file for values other than 0..3."""
    image = read_image(prediction_file)
    try:
        brats = convert_labels_back_to_brats(sitk.GetArrayViewFromImage(image))
    except ValueError as error:
        raise ValueError(f"{prediction_file}: {error}") from None
    target = Path(output_folder) / Path(prediction_file).name
    write_image(image_from_array(brats, image.GetSpacing(), reference=image), target)
    return target


def convert_folder_back_to_brats(input_folder: Path, output_folder: Path, *, num_processes: int = 1) -> list[Path]:
    """Map every ``.nii.gz``/``.nii`` prediction of ``input_folder`` back to BraTS labels into ``output_folder``
    (same file names; other files such as nnU-Net's ``plans.json`` are ignored).

    Returns:
        The written files.

    Raises:
        FileNotFoundError: ``input_folder`` does not exist.
        ValueError: no predictions in it, ``output_folder`` is ``input_folder``, or a file with values outside 0..3.
    """
    input_folder, output_folder = Path(input_folder), Path(output_folder)
    if not input_folder.is_dir():
        raise FileNotFoundError(f"{input_folder}: prediction folder not found.")
    if output_folder.resolve() == input_folder.resolve():
        raise ValueError(f"{output_folder}: the output folder must differ from the prediction folder (the "
                         f"predictions would be overwritten).")
    files = sorted(p for p in input_folder.iterdir() if p.is_file() and _nifti_ending(p))
    if not files:
        raise ValueError(f"{input_folder}: no .nii.gz or .nii predictions found.")
    output_folder.mkdir(parents=True, exist_ok=True)
    return map_cases(partial(convert_file_back_to_brats, output_folder=output_folder), files,
                     num_processes=num_processes, description="to BraTS labels")


# ----------------------------------------------------------------------------------------------------------------
# finding and checking the input

def _visible_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(IGNORED_PREFIXES))


def case_folders(root: Path) -> list[tuple[Path, str | None]]:
    """``(case folder, grade)`` for every sub-folder of ``root/HGG`` and ``root/LGG`` (grade from the folder name)
    and every other sub-folder of ``root`` (grade None)."""
    found: list[tuple[Path, str | None]] = []
    for entry in _visible_folders(root):
        grade = next((g for g in GRADES if entry.name.upper() == g), None)
        if grade is None:
            found.append((entry, None))
        else:
            found.extend((case, grade) for case in _visible_folders(entry))
    return found


def _find_case_file(folder: Path, suffix: str, root: Path) -> tuple[Path | None, str | None]:
    """The file of ``folder`` whose name ends in ``_<suffix>.nii.gz`` or ``_<suffix>.nii`` (ignoring case), or a
    problem line for a missing, ambiguous or escaping file."""
    endings = tuple(f"_{suffix}{ending}" for ending in NIFTI_ENDINGS)
    matches = sorted(p for p in folder.iterdir() if p.name.lower().endswith(endings) and not p.is_dir())
    if not matches:
        present = sorted(p.name for p in folder.iterdir())
        return None, (f"{folder}: missing {suffix} file: expected {folder / f'{folder.name}_{suffix}.nii.gz'} "
                      f"(or .nii); the folder holds {present}.")
    if len(matches) > 1:
        return None, f"{folder}: several {suffix} files {[p.name for p in matches]}; keep only one."
    try:
        check_inside(matches[0], root)
    except ValueError as error:
        return None, str(error)
    return matches[0], None


def find_cases(root: Path, release: BratsRelease, *, training: bool) -> tuple[list[BratsCase], list[str]]:
    """The cases under ``root`` and one problem line per empty source, misnamed case folder, or missing, ambiguous
    or escaping file. Training cases need a ``_seg`` file; in test sources it is ignored."""
    problems: list[str] = []
    folders = case_folders(root)
    if not folders:
        expected = (f"{root}/HGG/{release.example_case}/{release.example_case}_t1.nii.gz" if training
                    else f"{root}/{release.example_case}/{release.example_case}_t1.nii.gz")
        problems.append(f"{root}: no BraTS case folders found (empty, or only files); expected {expected}, ...")
    cases = []
    for folder, grade in folders:
        if not folder.name.lower().startswith(release.case_prefix.lower()):
            problems.append(f"{folder}: not a BraTS {release.year} case folder: the name should start with "
                            f"'{release.case_prefix}' (e.g. {release.example_case}); is this another BraTS year?")
        found = [_find_case_file(folder, sequence, root) for sequence in SEQUENCES]
        segmentation, problem = _find_case_file(folder, SEGMENTATION, root) if training else (None, None)
        problems += [p for _, p in found if p] + ([problem] if problem else [])
        cases.append(BratsCase(sanitize_case_id(folder.name), folder, grade, training,
                               tuple(file for file, _ in found), segmentation))
    return cases, problems


def duplicate_case_problems(cases: Sequence[BratsCase]) -> list[str]:
    """One line per case id used by more than one folder (e.g. a case in HGG and LGG, or in training and test)."""
    return [f"{case.folder}: duplicate case id '{case.case_id}': also {first.folder}; remove one."
            for case, first in case_id_collisions(cases, lambda case: case.case_id)]


def validate_case(case: BratsCase, *, legacy_2015: bool) -> list[str]:
    """Read every file of ``case``; one problem line per unreadable or non-finite file, file off the grid of the
    first sequence, or bad segmentation value."""
    problems: list[str] = []
    reference, reference_file = None, None
    files = [*case.image_files, case.segmentation_file]
    for file in files:
        image = attempt(problems, read_image, file) if file is not None else None
        if image is None:
            continue
        if reference is None:
            reference, reference_file = image, file
        else:
            differences = geometry_differences(image, reference, tolerance=GEOMETRY_TOLERANCE)
            if differences:
                problems.append(f"{file}: not on the grid of {reference_file} ({', '.join(differences)} differ): "
                                f"{describe_geometry(image)} vs {describe_geometry(reference)}; the BraTS sequences "
                                f"and the segmentation must be co-registered on one grid.")
        if file is case.segmentation_file:
            values = np.unique(sitk.GetArrayViewFromImage(image))
            allowed = [*BRATS_TO_NNUNET, *([LEGACY_2015_LABEL] if legacy_2015 else [])]
            hint = LEGACY_HINT if LEGACY_2015_LABEL in values and not legacy_2015 else ""
            problems += label_value_problems(values, allowed, file, hint=hint)
    return problems


# ----------------------------------------------------------------------------------------------------------------
# converting

def _copy_channel(file: Path, target: Path) -> None:
    if _nifti_ending(file) == ".nii.gz":
        shutil.copyfile(file, target)  # already compressed NIfTI: lossless and fast
    else:
        write_image(read_image(file, check_finite=False), target)


def _spacing(file: Path) -> tuple[float, ...]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(file))
    reader.ReadImageInformation()
    return tuple(float(s) for s in reader.GetSpacing())


def convert_case(case: BratsCase, *, staging_dir: Path, legacy_2015: bool) -> CaseRecord:
    """Write the channels (and, for training cases, the remapped segmentation) of a checked case into
    ``staging_dir``."""
    images_folder = staging_dir / ("imagesTr" if case.is_training else "imagesTs")
    for channel, file in enumerate(case.image_files):
        _copy_channel(file, images_folder / f"{case.case_id}_{channel:04d}{FILE_ENDING}")
    extra = {"grade": case.grade}
    if not case.is_training:
        return CaseRecord(case.case_id, False, _spacing(case.image_files[0]), extra=extra)
    segmentation = read_image(case.segmentation_file)
    array = sitk.GetArrayFromImage(segmentation)
    label = convert_labels_to_nnunet(array, case.segmentation_file, legacy_2015=legacy_2015)
    extra["legacy_2015_voxels"] = int(np.count_nonzero(array == LEGACY_2015_LABEL))
    write_image(image_from_array(label, segmentation.GetSpacing(), reference=segmentation),
                staging_dir / "labelsTr" / f"{case.case_id}{FILE_ENDING}")
    return CaseRecord(case.case_id, True, tuple(segmentation.GetSpacing()), voxel_counts(label, len(LABEL_VALUES)),
                      extra)


def _notes(records: Sequence[CaseRecord], legacy_2015: bool) -> list[str]:
    grades = Counter(record.extra["grade"] or "no grade folder" for record in records if record.is_training)
    notes = [f"training grades: {', '.join(f'{grade} {count}' for grade, count in sorted(grades.items()))}",
             LABELS_NOTE, EXPORT_NOTE]
    if legacy_2015:
        merged = [record.extra.get("legacy_2015_voxels", 0) for record in records]
        notes.append(f"legacy 2015: {sum(merged)} voxel(s) of label 3 in {sum(n > 0 for n in merged)} file(s) "
                     f"merged into NCR/NET")
    return notes


# ----------------------------------------------------------------------------------------------------------------
# one release: the converter and its command line

@dataclass(frozen=True)
class BratsRelease:
    """What differs between the BraTS years (the year, the dataset id and how case folders are named), and the entry
    points of that year's converter: ``DatasetNNN_BraTSYYYY`` binds :meth:`convert_with_summary`, :meth:`convert`,
    :meth:`build_parser` and :meth:`main` of its release to module-level names."""

    year: int
    dataset_id: int
    case_prefix: str  # start of every case folder name, e.g. "Brats18_" (compared ignoring case)

    @property
    def dataset_name(self) -> str:
        """``BraTS<year>``."""
        return f"BraTS{self.year}"

    @property
    def example_case(self) -> str:
        """A case folder name for messages, e.g. ``Brats18_2013_2_1``."""
        return f"{self.case_prefix}2013_2_1"

    @property
    def converter(self) -> str:
        """The converter module's name, e.g. ``Dataset506_BraTS2018``."""
        return f"Dataset{self.dataset_id:03d}_{self.dataset_name}"

    def convert_with_summary(self, source_dir: Path, *, test_source: Path | None = None, legacy_2015: bool = False,
                             dataset_id: int | None = None, dataset_name: str | None = None,
                             output_root: Path | None = None, overwrite: bool = False,
                             num_processes: int = 1) -> DatasetSummary:
        """Convert this release (see the module docstring) and return the summary that :meth:`main` prints; the
        other arguments and the errors are those of every converter (:mod:`nnunet_mm.dataset_conversion`).

        Args:
            source_dir: the training folder (holding ``HGG/`` and ``LGG/``) or a ``.zip``/``.tar`` of it; only read.
            test_source: the validation folder (or archive); its cases go to ``imagesTs``.
            legacy_2015: merge label 3 into NCR/NET instead of refusing it.
            dataset_id, dataset_name: default to the release's.
        """
        dataset_id = self.dataset_id if dataset_id is None else dataset_id
        dataset_name = self.dataset_name if dataset_name is None else dataset_name
        final_dir = prepare_output(source_dir, dataset_id=dataset_id, dataset_name=dataset_name,
                                   output_root=output_root, overwrite=overwrite, test_source=test_source)
        sources = [Path(source_dir)] + ([Path(test_source)] if test_source is not None else [])
        with contextlib.ExitStack() as stack:
            cases, problems = [], []
            for source, training in zip(sources, (True, False)):
                root = stack.enter_context(source_folder(source))
                found, found_problems = find_cases(root, self, training=training)
                cases += found
                problems += found_problems
            problems += duplicate_case_problems(cases)
            checks = map_cases(partial(validate_case, legacy_2015=legacy_2015), cases, num_processes=num_processes,
                               description=f"Dataset{dataset_id:03d} check")
            raise_if_problems(problems + [problem for per_case in checks for problem in per_case], Path(source_dir))
            if legacy_2015:
                logger.warning("legacy_2015: label 3 (BRATS 2015 non-enhancing tumour) is merged into NCR/NET.")

            with staged_dataset(final_dir, overwrite=overwrite) as staging:
                for sub_folder in ("imagesTr", "labelsTr", "imagesTs"):
                    (staging / sub_folder).mkdir()
                records = map_cases(partial(convert_case, staging_dir=staging, legacy_2015=legacy_2015), cases,
                                    num_processes=num_processes, description=f"Dataset{dataset_id:03d} convert")
                write_dataset_json(
                    staging, channel_names=CHANNEL_NAMES, labels=dict(REGION_LABELS),
                    num_training=sum(record.is_training for record in records), file_ending=FILE_ENDING,
                    dataset_name=final_dir.name, regions_class_order=list(REGIONS_CLASS_ORDER),
                    nnunet_mm_block={"source": str(Path(source_dir).resolve()), "converter": self.converter,
                                     "channel_acquisition": "co_registered",  # the release co-registers them
                                     "notes": [LABELS_NOTE, EXPORT_NOTE]},
                    description=f"BraTS {self.year} brain tumour segmentation: T1, T1ce, T2, FLAIR "
                                f"(co-registered, 1 mm, skull-stripped). Labels remapped as in nnU-Net's "
                                f"Dataset042_BraTS18; trained on regions.",
                    reference="Menze et al., IEEE TMI 2015; Bakas et al., Sci. Data 2017; Bakas et al., "
                              "arXiv:1811.02629",
                    license="BraTS data-use terms (registration required; not redistributable)",
                )
        summary = summarize(records, output_dir=final_dir, channel_names=CHANNEL_NAMES, labels=dict(REGION_LABELS),
                            count_labels=LABEL_VALUES, notes=_notes(records, legacy_2015))
        logger.info("converted %d training and %d test case(s) into %s", summary.num_training, summary.num_test,
                    final_dir)
        return summary

    def convert(self, source_dir: Path, *, test_source: Path | None = None, legacy_2015: bool = False,
                dataset_id: int | None = None, dataset_name: str | None = None, output_root: Path | None = None,
                overwrite: bool = False, num_processes: int = 1) -> Path:
        """Convert this release into ``<output_root>/Dataset<id>_<name>`` and return that folder; the arguments and
        errors are those of :meth:`convert_with_summary`."""
        return self.convert_with_summary(source_dir, test_source=test_source, legacy_2015=legacy_2015,
                                         dataset_id=dataset_id, dataset_name=dataset_name, output_root=output_root,
                                         overwrite=overwrite, num_processes=num_processes).output_dir

    def build_parser(self, prog: str | None = None) -> argparse.ArgumentParser:
        """The converter's options: the source, ``--test-source``, ``--legacy-2015`` and the common ones."""
        parser = argparse.ArgumentParser(
            prog=prog, description=f"Convert the BraTS {self.year} training data (and optionally the validation "
                                   f"data) into the nnU-Net raw dataset {self.converter}.")
        parser.add_argument("source_dir", type=Path,
                            help=f"MICCAI_BraTS_{self.year}_Data_Training (holding HGG/ and LGG/), or a .zip/.tar of "
                                 f"it")
        parser.add_argument("--test-source", type=Path, default=None,
                            help=f"MICCAI_BraTS_{self.year}_Data_Validation (cases without _seg), or an archive; → "
                                 f"imagesTs")
        parser.add_argument("--legacy-2015", action="store_true",
                            help="merge label 3 (BRATS 2015 non-enhancing tumour) into NCR/NET instead of refusing "
                                 "it")
        add_common_arguments(parser, dataset_id=self.dataset_id, dataset_name=self.dataset_name)
        return parser

    def main(self, argv: list[str] | None = None) -> int:
        """The converter's command line; returns the exit status (0 success, 1 a problem with the input or
        arguments)."""
        return converter_main(self.convert_with_summary, self.build_parser)(argv)


# ----------------------------------------------------------------------------------------------------------------
# the export command line

def build_export_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """Options of ``python -m nnunet_mm.dataset_conversion.brats_layout``."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Map nnU-Net BraTS predictions (1 edema, 2 NCR/NET, 3 enhancing) back to the BraTS "
                               "labels (2, 1, 4).")
    parser.add_argument("input_folder", type=Path, help="folder of predicted .nii.gz/.nii files")
    parser.add_argument("output_folder", type=Path, help="where the converted files go (same names)")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="parallel files (default: 1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Export predictions in BraTS labels; returns the exit status (0 success, 1 a problem with the input)."""
    args = build_export_parser().parse_args(argv)
    try:
        written = convert_folder_back_to_brats(args.input_folder, args.output_folder,
                                               num_processes=args.num_processes)
    except (ValueError, OSError) as error:
        print(f"error: {error_text(error)}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} segmentation(s) with BraTS labels into {args.output_folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
