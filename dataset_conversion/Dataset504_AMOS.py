"""Dataset504_AMOS: AMOS 2022 abdominal CT and MRI (different patients, unpaired) → one single-channel dataset.

Input: the post-challenge release (Zenodo 7262581, ``amos22.zip``, CC BY 4.0), given as the ``amos22`` folder, a
folder holding it, or the archive itself::

    amos22/imagesTr/amos_XXXX.nii.gz    labelsTr/amos_XXXX.nii.gz    (training, labelled)
    amos22/imagesVa/amos_XXXX.nii.gz    labelsVa/amos_XXXX.nii.gz    (validation, labelled after the challenge)
    amos22/imagesTs/amos_XXXX.nii.gz                                  (test, no labels)
    amos22/dataset.json                  the challenge's own (MSD style, with the key spelled "licence")

``XXXX <= 500`` is a CT scan, ``XXXX > 500`` an MRI (``amos_0507``). ``.nii`` files are accepted too. The challenge's
dataset.json is read for its licence and release text only (quoted in ours); nothing depends on it.

Output, in ``<output_root>/Dataset504_AMOS/``:

* ``imagesTr/amos_XXXX_0000.nii.gz`` + ``labelsTr/amos_XXXX.nii.gz`` for Tr and (``include_validation``, the default,
  as nnU-Net's post-challenge converters do) Va cases; ``imagesTs/amos_XXXX_0000.nii.gz`` for Ts cases. Without
  ``include_validation`` the Va cases go to ``imagesTs/`` with their labels in ``labelsTs/`` (a held-out set).
* Every image and label is reoriented to LPS (identity direction, see :mod:`nnunet_mm.dataset_conversion.unpaired_layout`); many
  AMOS MRIs are coronal. Voxel values are unchanged; labels are written as uint8.
* Labels: the 15 organs, values already consecutive (1 spleen ... 15 prostate/uterus), checked against that
  whitelist; any other value is an error naming the file.
* dataset.json: one channel, ``"either_CT_or_MR"`` (z-score per case) for both modalities, ``"CT"`` for
  ``modality="ct"`` (CT normalisation), ``"MR"`` for ``modality="mr"`` (z-score). The modality of every case is in
  ``'nnunet_mm': {"modalities": {"0": "CT|MR"}, "per_case_modality": {"amos_0001": "CT", "amos_0507": "MR", ...}}``
  (see :mod:`nnunet_mm.dataset_conversion.unpaired_layout` for the exact format).

Facts from docs/datasets.md §2.2 and where they were checked: the folder layout, the ``amos_XXXX`` names, the MSD-style
challenge dataset.json with ``"licence"`` and the label order were confirmed in public code that reads the release
(nnU-Net's Dataset219/223 converters, and copies of the challenge's label table, which spells "gall bladder",
"arota", "postcava"; the names here are corrected). The ID rule (> 500 = MRI) is confirmed by nnU-Net's Dataset218
filter and other readers. That many MRIs are non-axial was not checked on real files (no AMOS data is available
here); the converter does not rely on it, it reorients whatever it finds. Tested on layout fixtures only.
"""
from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

from nnunet_mm.conversion.archives import check_inside, source_folder
from nnunet_mm.conversion.errors import ConversionError
from nnunet_mm.conversion.runner import DatasetSummary, add_common_arguments, converter_main, prepare_output
from nnunet_mm.dataset_conversion.unpaired_layout import (MODALITY_CHOICES, LabelEncoding, UnpairedCase,
                                                          convert_unpaired_dataset, duplicate_id_problems,
                                                          find_nifti_files, nifti_stem, selected_modalities)

__all__ = ["DATASET_ID", "DATASET_NAME", "LABEL_NAMES", "ConversionError", "build_parser", "convert",
           "convert_with_summary", "find_cases", "main", "modality_of"]

logger = logging.getLogger(__name__)

DATASET_ID = 504
DATASET_NAME = "AMOS"
LAST_CT_ID = 500  # amos_0001 ... amos_0500 are CT, amos_0501 ... MRI
LABEL_NAMES = ("spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
               "inferior vena cava", "pancreas", "right adrenal gland", "left adrenal gland", "duodenum", "bladder",
               "prostate/uterus")
ENCODING = LabelEncoding(
    label_names=LABEL_NAMES,
    source_to_nnunet={value: value for value in range(len(LABEL_NAMES) + 1)},
    hint="AMOS labels are 0 background, " + ", ".join(f"{v} {n}" for v, n in enumerate(LABEL_NAMES, start=1)) + ".",
)
CASE_NAME = re.compile(r"amos_(\d{4})")
SPLITS = (("imagesTr", "labelsTr"), ("imagesVa", "labelsVa"), ("imagesTs", None))
RELEASE_FOLDER = "amos22"
REFERENCE = "https://amos22.grand-challenge.org/ ; https://zenodo.org/record/7262581"
DEFAULT_LICENSE = "CC BY 4.0 (AMOS 2022 post-challenge release, Zenodo 7262581)"


def modality_of(case_number: int) -> str:
    """``"CT"`` for AMOS ids up to 500, ``"MR"`` above."""
    return "CT" if case_number <= LAST_CT_ID else "MR"


def locate_release(folder: Path) -> Path | None:
    """The folder holding ``imagesTr/``: ``folder`` itself or ``folder/amos22``; None when neither has it."""
    for candidate in (folder, folder / RELEASE_FOLDER):
        if (candidate / "imagesTr").is_dir():
            return candidate
    return None


def _named_files(folder: Path, input_root: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """``{"amos_0001": [file, ...]}`` for the NIfTI files of ``folder``, and problems (odd names, links escaping
    ``input_root``)."""
    files, problems = find_nifti_files(folder, recursive=False, input_root=input_root)
    by_stem: dict[str, list[Path]] = {}
    for file in files:
        stem = nifti_stem(file)
        if CASE_NAME.fullmatch(stem) is None:
            problems.append(f"{file}: unexpected file name in {folder.name}/; AMOS files are named amos_XXXX.nii.gz "
                            f"(four digits). Move it out of the input.")
            continue
        by_stem.setdefault(stem, []).append(file)
    return by_stem, problems


def find_cases(release: Path, *, modalities: tuple[str, ...], include_validation: bool,
               input_root: Path | None = None) -> tuple[list[UnpairedCase], list[str]]:
    """The cases of the selected modalities in an AMOS release folder, and one problem per missing label, label
    without image, odd file name, duplicate case id or link escaping the input.

    Args:
        release: the folder holding ``imagesTr/`` (see :func:`locate_release`).
        modalities: ``("CT", "MR")``, ``("CT",)`` or ``("MR",)``.
        include_validation: Va cases are training cases (True) or labelled test cases (False).
        input_root: the input folder that symbolic links must not leave (default ``release``).
    """
    input_root = release if input_root is None else input_root
    cases: list[UnpairedCase] = []
    problems: list[str] = []
    for images_name, labels_name in SPLITS:
        images_dir = release / images_name
        if not images_dir.is_dir():
            logger.info("%s: no %s/ folder; skipped", release, images_name)
            continue
        images, found = _named_files(images_dir, input_root)
        problems += found
        labels: dict[str, list[Path]] = {}
        if labels_name is not None:
            if (release / labels_name).is_dir():
                labels, found = _named_files(release / labels_name, input_root)
                problems += found
            elif images:
                problems.append(f"{release / labels_name}: folder missing; every image in {images_dir} needs its "
                                f"label there.")
                continue
        is_training = images_name == "imagesTr" or (images_name == "imagesVa" and include_validation)
        for stem in sorted(set(images) | set(labels)):
            case_modality = modality_of(int(CASE_NAME.fullmatch(stem).group(1)))
            if case_modality not in modalities:
                continue
            image_files, label_files = images.get(stem, []), labels.get(stem, [])
            for same_case in (image_files, label_files):
                if len(same_case) > 1:
                    problems.append(f"{same_case[0]}: several files for {stem} in {same_case[0].parent}: "
                                    f"{[f.name for f in same_case]}; keep only one.")
            if not image_files:
                problems.append(f"{label_files[0]}: label without image; expected {images_dir / (stem + '.nii.gz')}.")
            elif labels_name is not None and not label_files:
                problems.append(f"{image_files[0]}: no label; expected {release / labels_name / (stem + '.nii.gz')}.")
            else:
                cases.append(UnpairedCase(case_id=stem, modality=case_modality, image_file=image_files[0],
                                          label_file=label_files[0] if label_files else None,
                                          is_training=is_training))
    problems += duplicate_id_problems(cases)
    return cases, problems


def read_challenge_json(release: Path) -> dict:
    """The challenge's ``dataset.json`` (for its licence and release text), or ``{}`` when absent or unreadable."""
    path = release / "dataset.json"
    if not path.is_file():
        return {}
    try:
        check_inside(path, release)
        content = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as error:
        logger.warning("%s: ignored, cannot read it: %s", path, error)
        return {}
    return content if isinstance(content, dict) else {}


def _input_problems(folder: Path) -> list[str]:
    if not any(not entry.name.startswith(".") for entry in folder.iterdir()):
        return [f"{folder}: the input folder is empty; expected the AMOS release (imagesTr/, labelsTr/, imagesVa/, "
                f"labelsVa/, imagesTs/ with amos_XXXX.nii.gz files), or the folder or archive holding amos22/."]
    return [f"{folder}: no imagesTr/ folder here or in {folder / RELEASE_FOLDER}; expected the AMOS release "
            f"(imagesTr/amos_XXXX.nii.gz, labelsTr/, imagesVa/, labelsVa/, imagesTs/)."]


def convert_with_summary(source_dir: Path, *, dataset_id: int = DATASET_ID, dataset_name: str = DATASET_NAME,
                         output_root: Path | None = None, modality: str = "all", include_validation: bool = True,
                         overwrite: bool = False, num_processes: int = 1) -> DatasetSummary:
    """:func:`convert`, returning the summary instead of only the output folder."""
    source_dir = Path(source_dir)
    modalities = selected_modalities(modality)
    final_dir = prepare_output(source_dir, dataset_id=dataset_id, dataset_name=dataset_name, output_root=output_root,
                               overwrite=overwrite)
    with source_folder(source_dir) as folder:
        release = locate_release(folder)
        if release is None:
            cases, problems, challenge = [], _input_problems(folder), {}
        else:
            cases, problems = find_cases(release, modalities=modalities, include_validation=include_validation,
                                         input_root=folder)
            challenge = read_challenge_json(release)
        validation = "merged into imagesTr" if include_validation else "written to imagesTs + labelsTs"
        return convert_unpaired_dataset(
            cases, problems, source_dir=source_dir, final_dir=final_dir, encoding=ENCODING,
            converter=Path(__file__).stem, overwrite=overwrite, num_processes=num_processes,
            description=f"AMOS 2022 abdominal multi-organ segmentation, {' and '.join(modalities)} (different "
                        f"patients, one channel; per-case modality in nnunet_mm.per_case_modality). Validation cases "
                        f"{validation}. Images and labels reoriented to LPS.",
            reference=REFERENCE,
            release=str(challenge.get("release", "")) or None,
            license=_license(challenge),
        )


def _license(challenge: dict) -> str:
    """Our licence line, quoting the challenge dataset.json's own (its key is spelled "licence") when it has one."""
    stated = challenge.get("licence", challenge.get("license"))
    return DEFAULT_LICENSE if stated is None else f"{DEFAULT_LICENSE}; the challenge's dataset.json states {stated!r}"


def convert(source_dir: Path, *, dataset_id: int = DATASET_ID, dataset_name: str = DATASET_NAME,
            output_root: Path | None = None, modality: str = "all", include_validation: bool = True,
            overwrite: bool = False, num_processes: int = 1) -> Path:
    """Convert the AMOS 2022 release into ``<output_root>/Dataset<id>_<name>`` and return that folder; the other
    arguments and the errors are those of every converter (:mod:`nnunet_mm.dataset_conversion`).

    Args:
        source_dir: the ``amos22`` folder, a folder holding it, or the ``.zip``/``.tar`` archive; only read.
        modality: ``"all"`` (CT and MRI in one dataset), ``"ct"`` or ``"mr"``.
        include_validation: merge the labelled validation cases into the training cases (default); otherwise they
            become test cases with labels in ``labelsTs/``.
    """
    return convert_with_summary(source_dir, dataset_id=dataset_id, dataset_name=dataset_name,
                                output_root=output_root, modality=modality, include_validation=include_validation,
                                overwrite=overwrite, num_processes=num_processes).output_dir


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command-line options of :func:`main`."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Convert AMOS 2022 (CT and MRI of different patients) into one single-channel nnU-Net "
                               "raw dataset with the per-case modality in dataset.json.")
    parser.add_argument("source_dir", type=Path, help="the amos22 folder, a folder holding it, or amos22.zip")
    add_common_arguments(parser, dataset_id=DATASET_ID, dataset_name=DATASET_NAME)
    parser.add_argument("--modality", choices=MODALITY_CHOICES, default="all",
                        help="which scans to convert (default: %(default)s)")
    parser.add_argument("--include-validation", action=argparse.BooleanOptionalAction, default=True,
                        help="merge imagesVa/labelsVa into the training cases (default: yes); with "
                             "--no-include-validation they go to imagesTs/labelsTs")
    return parser


main = converter_main(convert_with_summary, build_parser)


if __name__ == "__main__":
    sys.exit(main())
