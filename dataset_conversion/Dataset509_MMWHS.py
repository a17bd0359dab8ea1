"""Dataset509_MMWHS: MM-WHS 2017 whole-heart CT and MR (different patients, unpaired) → one single-channel dataset.

Input: the challenge release, given as a folder (searched recursively) or a ``.zip``/``.tar`` archive::

    MM-WHS 2017 Dataset/ct_train/ct_train_1001_image.nii.gz   ct_train_1001_label.nii.gz   ... 1020
    MM-WHS 2017 Dataset/mr_train/mr_train_1001_image.nii.gz   mr_train_1001_label.nii.gz   ... 1020
    MM-WHS 2017 Dataset/ct_test/ct_test_2001_image.nii.gz     ... 2040  (images only)
    MM-WHS 2017 Dataset/mr_test/mr_test_2001_image.nii.gz     ... 2040

Sub-folder names do not matter (files are found by name anywhere below the input; a flat folder works too), ``.nii``
is accepted as well as ``.nii.gz``, and symbolic links are followed only while they stay inside the input. A
``*_test_*_label`` file, if present, is written to ``labelsTs/``.

Output, in ``<output_root>/Dataset509_MMWHS/``:

* ``imagesTr/ct_1001_0000.nii.gz`` + ``labelsTr/ct_1001.nii.gz``, ``imagesTr/mr_1001_0000.nii.gz`` ..., test scans
  in ``imagesTs/ct_2001_0000.nii.gz`` ...: the case id is the modality plus the number, because CT and MR numbers
  overlap although the patients differ.
* Every image and label reoriented to LPS (identity direction; MR volumes come in mixed orientations), voxel values
  unchanged; see :mod:`nnunet_mm.dataset_conversion.unpaired_layout`.
* Labels 205/420/500/550/600/820/850 → 1..7 (:data:`RAW_TO_NNUNET`, a whitelist; :func:`labels_back_to_mmwhs` is the
  inverse for exporting predictions). The stray value 421 (known in ``mr_train_1010_label``) is read as 420 with a
  warning naming the file, and listed in the dataset.json notes; every other value is an error naming the file.
* dataset.json: one channel, ``"either_CT_or_MR"`` (z-score per case) by default, ``"CT"`` (CT normalisation) for
  ``modality="ct"``, ``"MR"`` (z-score) for ``modality="mr"``; per-case modality in ``'nnunet_mm'``
  (``"modalities": {"0": "CT|MR"}``, ``"per_case_modality": {"ct_1001": "CT", "mr_1001": "MR", ...}``).

Facts from docs/datasets.md §2.6 and where they were checked: the file names and the ``ct_train/``, ``mr_train/``,
``ct_test/``, ``mr_test/`` folders under "MM-WHS 2017 Dataset" (some copies hold uncompressed ``.nii``), the label
values and the stray 421 in ``mr_train_1010_label`` were confirmed in public code that reads the release (NanYoMy/cmmas
``error_nii_fix.py`` and two other readers); the label values and structure names also on the WHS++ page
(zmic.org.cn/care_2024/track5). Mixed MR orientations and the cmmas crop of ``mr_train_1002`` were not
checked on real files (no MM-WHS data is available here): the converter reorients whatever it finds, and refuses an
image/label pair whose grids differ, naming the file. Tested on layout fixtures only.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

import numpy as np

from nnunet_mm.conversion.archives import source_folder
from nnunet_mm.conversion.errors import ConversionError
from nnunet_mm.conversion.labels import labels_back
from nnunet_mm.conversion.runner import DatasetSummary, add_common_arguments, converter_main, prepare_output
from nnunet_mm.dataset_conversion.unpaired_layout import (MODALITY_CHOICES, LabelEncoding, UnpairedCase,
                                                          convert_unpaired_dataset, duplicate_id_problems,
                                                          find_nifti_files, nifti_stem, selected_modalities)

__all__ = ["DATASET_ID", "DATASET_NAME", "LABEL_NAMES", "RAW_TO_NNUNET", "ConversionError", "build_parser",
           "convert", "convert_with_summary", "find_cases", "labels_back_to_mmwhs", "main"]

logger = logging.getLogger(__name__)

DATASET_ID = 509
DATASET_NAME = "MMWHS"
LABEL_NAMES = ("LV myocardium", "LA blood cavity", "LV blood cavity", "RA blood cavity", "RV blood cavity",
               "ascending aorta", "pulmonary artery")
RAW_TO_NNUNET = {0: 0, 205: 1, 420: 2, 500: 3, 550: 4, 600: 5, 820: 6, 850: 7}
NNUNET_TO_RAW = {value: raw for raw, value in RAW_TO_NNUNET.items()}
STRAY_VALUE_FIXES = {421: 420}  # mr_train_1010_label; the only value that is repaired rather than refused
ENCODING = LabelEncoding(
    label_names=LABEL_NAMES,
    source_to_nnunet=RAW_TO_NNUNET,
    fixes=STRAY_VALUE_FIXES,
    hint="MM-WHS labels are 0 background, " + ", ".join(f"{raw} {name}" for raw, name in
                                                        zip(list(RAW_TO_NNUNET)[1:], LABEL_NAMES))
         + " (421 is read as 420).",
)
FILE_NAME = re.compile(r"(?P<modality>ct|mr)_(?P<split>train|test)_(?P<number>\d+)_(?P<kind>image|label)",
                       re.IGNORECASE)
REFERENCE = ("http://www.sdspeople.fudan.edu.cn/zhuangxiahai/0/mmwhs/ ; Zhuang et al., Evaluation of algorithms for "
             "Multi-Modality Whole Heart Segmentation, Medical Image Analysis 58 (2019) 101537")
LICENSE = "MM-WHS 2017 challenge data: registration required, research use only; do not redistribute"


def labels_back_to_mmwhs(segmentation: np.ndarray) -> np.ndarray:
    """nnU-Net label values 0..7 → the MM-WHS values 0, 205, ..., 850 (uint16), for exporting predictions.

    Raises:
        ValueError: a value outside 0..7.
    """
    return labels_back(segmentation, NNUNET_TO_RAW, dtype=np.uint16)


def find_cases(folder: Path, *, modalities: tuple[str, ...]) -> tuple[list[UnpairedCase], list[str]]:
    """The cases of the selected modalities anywhere below ``folder``, and one problem per training image without
    label, label without image, file name used twice, or link escaping the input.

    Args:
        folder: the input folder.
        modalities: ``("CT", "MR")``, ``("CT",)`` or ``("MR",)``.
    """
    files, problems = find_nifti_files(folder, recursive=True)
    found: dict[tuple[str, str, int], dict[str, list[Path]]] = {}
    for file in files:
        match = FILE_NAME.fullmatch(nifti_stem(file))
        if match is None:
            logger.debug("%s: not an MM-WHS file name; skipped", file)
            continue
        key = (match["modality"].upper(), match["split"].lower(), int(match["number"]))
        found.setdefault(key, {"image": [], "label": []})[match["kind"].lower()].append(file)
    if not found:
        problems.append(f"{folder}: no MM-WHS files found (expected ct_train_1001_image.nii.gz, "
                        f"ct_train_1001_label.nii.gz, mr_test_2001_image.nii.gz, ... anywhere below it).")
    cases: list[UnpairedCase] = []
    for (modality, split, number), kinds in sorted(found.items()):
        if modality not in modalities:
            continue
        for kind, same in kinds.items():
            if len(same) > 1:
                problems.append(f"{same[1]}: the {modality.lower()}_{split}_{number} {kind} exists more than once: "
                                f"{[str(f) for f in same]}; keep only one.")
        images, labels = kinds["image"], kinds["label"]
        if not images:
            problems.append(f"{labels[0]}: label without image; expected "
                            f"{labels[0].parent / labels[0].name.replace('_label', '_image')}.")
        elif split == "train" and not labels:
            problems.append(f"{images[0]}: training image without label; expected "
                            f"{images[0].parent / images[0].name.replace('_image', '_label')}.")
        else:
            cases.append(UnpairedCase(case_id=f"{modality.lower()}_{number}", modality=modality,
                                      image_file=images[0], label_file=labels[0] if labels else None,
                                      is_training=split == "train"))
    problems += duplicate_id_problems(cases)
    return cases, problems


def convert_with_summary(source_dir: Path, *, dataset_id: int = DATASET_ID, dataset_name: str = DATASET_NAME,
                         output_root: Path | None = None, modality: str = "all", overwrite: bool = False,
                         num_processes: int = 1) -> DatasetSummary:
    """:func:`convert`, returning the summary instead of only the output folder."""
    source_dir = Path(source_dir)
    modalities = selected_modalities(modality)
    final_dir = prepare_output(source_dir, dataset_id=dataset_id, dataset_name=dataset_name, output_root=output_root,
                               overwrite=overwrite)
    with source_folder(source_dir) as folder:
        cases, problems = find_cases(folder, modalities=modalities)
        return convert_unpaired_dataset(
            cases, problems, source_dir=source_dir, final_dir=final_dir, encoding=ENCODING,
            converter=Path(__file__).stem, overwrite=overwrite, num_processes=num_processes,
            description=f"MM-WHS 2017 whole-heart segmentation, {' and '.join(modalities)} (different patients, one "
                        f"channel; per-case modality in nnunet_mm.per_case_modality). Labels 205/420/500/550/600/"
                        f"820/850 → 1..7. Images and labels reoriented to LPS.",
            reference=REFERENCE, license=LICENSE,
        )


def convert(source_dir: Path, *, dataset_id: int = DATASET_ID, dataset_name: str = DATASET_NAME,
            output_root: Path | None = None, modality: str = "all", overwrite: bool = False,
            num_processes: int = 1) -> Path:
    """Convert the MM-WHS 2017 release into ``<output_root>/Dataset<id>_<name>`` and return that folder; the other
    arguments and the errors are those of every converter (:mod:`nnunet_mm.dataset_conversion`).

    Args:
        source_dir: the release folder or archive; only read.
        modality: ``"all"`` (CT and MR in one dataset), ``"ct"`` or ``"mr"``. A second, single-modality dataset
            needs another ``dataset_id``.
    """
    return convert_with_summary(source_dir, dataset_id=dataset_id, dataset_name=dataset_name,
                                output_root=output_root, modality=modality, overwrite=overwrite,
                                num_processes=num_processes).output_dir


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command-line options of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Convert MM-WHS 2017 (CT and MR of different patients) into one single-channel "
                               "nnU-Net raw dataset with the per-case modality in dataset.json.")
    parser.add_argument("source_dir", type=Path, help="the MM-WHS release folder (searched recursively) or archive")
    add_common_arguments(parser, dataset_id=DATASET_ID, dataset_name=DATASET_NAME)
    parser.add_argument("--modality", choices=MODALITY_CHOICES, default="all",
                        help="which scans to convert (default: %(default)s)")
    return parser


main = converter_main(convert_with_summary, build_parser)


if __name__ == "__main__":
    sys.exit(main())
