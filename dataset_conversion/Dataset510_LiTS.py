"""Dataset510_LiTS: the Liver Tumor Segmentation challenge (LiTS 2017, contrast CT) → nnU-Net raw.

Input: the official download, unpacked or as a ``.zip``/``.tar`` archive, searched recursively so that the two
training batches may stay in their own folders::

    <source>/Training Batch 1/volume-0.nii, segmentation-0.nii, ... (N = 0..27)
    <source>/Training Batch 2/volume-28.nii, segmentation-28.nii, ... (N = 28..130)
    <source>/<any folder>/test-volume-0.nii, ... (N = 0..69, no segmentations)

Files are uncompressed ``.nii`` in the challenge; ``.nii.gz`` copies are accepted too. Segmentations hold
0 background, 1 liver, 2 tumour, which are already nnU-Net's consecutive labels; any other value is refused.

Output, in ``<output_root>/Dataset510_LiTS/``:

* ``imagesTr/lits_<N>_0000.nii.gz`` and ``labelsTr/lits_<N>.nii.gz`` for ``volume-N``/``segmentation-N``;
  ``imagesTs/lits_test_<N>_0000.nii.gz`` for ``test-volume-N``. ``N`` is the challenge's number without zero
  padding (so ids map back to the download by eye); cases are processed in numeric order.
* The volume is written exactly as stored (pixel type, voxel values, spacing, origin and direction cosines,
  including the flipped and oblique directions of several LiTS volumes). The label gets the voxel values of the
  segmentation as uint8 on the volume's geometry: a segmentation whose grid differs from its volume's by more than
  :data:`GEOMETRY_TOLERANCE` is refused.
* ``dataset.json``: one channel named ``"CT"`` (nnU-Net's CT normalisation), labels background/liver/tumor,
  ``'nnunet_mm': {"reference_channel": 0, "phase_names": ["pv"], "source": ..., "converter": ...}`` (LiTS is mostly
  portal-venous, from seven centres).

Facts checked: the file names and the ``Training Batch 1``/``Training Batch 2`` split (0..27, 28..130) match public
loaders of the dataset (kaiko-ai/eva ``docs/datasets/lits.md`` and other LiTS scripts); the label values 0/1/2 and
the direction quirk come from docs/datasets.md §2.7 and nnU-Net v1 Task029, and were not checked on real files here
(no LiTS data is available to this project). The folder name of the test volumes is not relied on.

The problems found before anything is written (see :mod:`nnunet_mm.dataset_conversion` for what every converter
guarantees): missing segmentation, segmentation without volume, duplicate numbers, unreadable files, unknown label
values, grid mismatches, an empty source.
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

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
    map_cases,
    prepare_output,
    raise_if_problems,
    remap_labels,
    source_files,
    source_folder,
    summarize,
    voxel_counts,
)
from nnunet_mm.io import (describe_geometry, geometry_differences, read_image, staged_dataset, write_dataset_json,
                          write_image)

logger = logging.getLogger(__name__)

DATASET_ID = 510
DATASET_NAME = "LiTS"
CHANNEL_NAME = "CT"  # selects nnU-Net's CT normalisation
PHASE_NAME = "pv"  # LiTS volumes are mostly portal-venous
LABEL_NAMES = ("liver", "tumor")
LABEL_MAPPING = {0: 0, 1: 1, 2: 2}  # LiTS value → nnU-Net value (identity, used as a whitelist)
FILE_ENDING = ".nii.gz"
GEOMETRY_TOLERANCE = 1e-3  # mm for spacing and origin, and direction cosines

_VOLUME = re.compile(r"volume-(\d+)\.nii(\.gz)?")
_SEGMENTATION = re.compile(r"segmentation-(\d+)\.nii(\.gz)?")
_TEST_VOLUME = re.compile(r"test-volume-(\d+)\.nii(\.gz)?")


@dataclass(frozen=True)
class LitsCase:
    """One LiTS volume: a training case (with ``segmentation``) or a test case."""

    number: int
    volume: Path
    segmentation: Path | None
    is_test: bool

    @property
    def case_id(self) -> str:
        return f"lits_test_{self.number}" if self.is_test else f"lits_{self.number}"

    @property
    def is_training(self) -> bool:
        return not self.is_test


def find_cases(root: Path) -> tuple[list[LitsCase], list[str]]:
    """Find the LiTS files under ``root`` and pair every ``volume-N`` with its ``segmentation-N``.

    Returns:
        The cases, training cases first, each group in increasing ``N``; and one problem line per volume without
        segmentation (naming the file expected next to it), segmentation without volume, number found more than
        once (naming every copy), file outside ``root`` (a symbolic link), or a source without any LiTS file.
    """
    found: dict[str, dict[int, list[Path]]] = {"volume": {}, "segmentation": {}, "test": {}}
    problems: list[str] = []
    for file in source_files(root):
        for kind, pattern in (("test", _TEST_VOLUME), ("volume", _VOLUME), ("segmentation", _SEGMENTATION)):
            match = pattern.fullmatch(file.name)
            if match:
                try:
                    check_inside(file, root)
                except ValueError as error:
                    problems.append(str(error))
                else:
                    found[kind].setdefault(int(match[1]), []).append(file)
                break
    if not any(found.values()):
        problems.append(f"{root}: no LiTS files found (the folder is empty or holds other files); expected "
                        f"volume-N.nii with segmentation-N.nii (e.g. in 'Training Batch 1/') and test-volume-N.nii.")
        return [], problems
    for kind, by_number in found.items():
        for number, files in sorted(by_number.items()):
            if len(files) > 1:
                problems.append(f"{files[1]}: duplicate case id '{'lits_test_' if kind == 'test' else 'lits_'}"
                                f"{number}': {files[1].name} is also at {files[0]}; keep only one copy.")
    for number, segmentations in sorted(found["segmentation"].items()):
        if number not in found["volume"]:
            problems.append(f"{segmentations[0]}: segmentation without a volume; expected "
                            f"{segmentations[0].parent / f'volume-{number}.nii'}.")
    cases = []
    for number, volumes in sorted(found["volume"].items()):
        segmentations = found["segmentation"].get(number)
        if segmentations is None:
            problems.append(f"{volumes[0]}: training volume without segmentation; expected "
                            f"{volumes[0].parent / f'segmentation-{number}.nii'} (test volumes are named "
                            f"test-volume-N.nii).")
        cases.append(LitsCase(number, volumes[0], segmentations[0] if segmentations else None, is_test=False))
    cases += [LitsCase(number, volumes[0], None, is_test=True) for number, volumes in sorted(found["test"].items())]
    if not found["volume"]:
        problems.append(f"{root}: no training volumes (volume-N.nii with segmentation-N.nii) found; nnU-Net needs at "
                        f"least one labelled case.")
    return cases, problems


def validate_case(case: LitsCase) -> list[str]:
    """Read the files of ``case``; one problem line per unreadable file, segmentation off the volume's grid, or
    label value other than 0, 1, 2."""
    problems: list[str] = []
    volume = attempt(problems, read_image, case.volume)
    segmentation = attempt(problems, read_image, case.segmentation) if case.segmentation is not None else None
    if segmentation is None:
        return problems
    if volume is not None:
        differences = geometry_differences(segmentation, volume, tolerance=GEOMETRY_TOLERANCE)
        if differences:
            problems.append(f"{case.segmentation}: segmentation is not on the grid of {case.volume} "
                            f"({', '.join(differences)} differ): segmentation {describe_geometry(segmentation)}; "
                            f"volume {describe_geometry(volume)}.")
    problems += label_value_problems(sitk.GetArrayViewFromImage(segmentation), LABEL_MAPPING, case.segmentation,
                                     hint="LiTS labels are 0 background, 1 liver, 2 tumour.")
    return problems


def convert_case(case: LitsCase, *, staging_dir: Path) -> CaseRecord:
    """Write one case: the volume unchanged as ``.nii.gz``, the segmentation as uint8 on the volume's geometry."""
    volume = read_image(case.volume)
    images_folder = "imagesTs" if case.is_test else "imagesTr"
    write_image(volume, staging_dir / images_folder / f"{case.case_id}_0000{FILE_ENDING}")
    counts = None
    if case.segmentation is not None:
        segmentation = remap_labels(sitk.GetArrayFromImage(read_image(case.segmentation)), LABEL_MAPPING,
                                    case.segmentation)
        # within GEOMETRY_TOLERANCE of the volume (checked); copying the volume's header keeps nnU-Net's exact checks
        write_image(image_from_array(segmentation, volume.GetSpacing(), reference=volume),
                    staging_dir / "labelsTr" / f"{case.case_id}{FILE_ENDING}")
        counts = voxel_counts(segmentation, len(LABEL_MAPPING))
    return CaseRecord(case.case_id, case.is_training, tuple(float(s) for s in volume.GetSpacing()), counts)


def convert_with_summary(source_dir: Path, *, output_root: Path | None = None, dataset_id: int = DATASET_ID,
                         dataset_name: str = DATASET_NAME, overwrite: bool = False,
                         num_processes: int = 1) -> DatasetSummary:
    """:func:`convert`, returning the :class:`~nnunet_mm.conversion.DatasetSummary` that ``main`` prints."""
    source_dir = Path(source_dir)
    final_dir = prepare_output(source_dir, dataset_id=dataset_id, dataset_name=dataset_name,
                               output_root=output_root, overwrite=overwrite)
    with source_folder(source_dir) as root:
        cases, problems = find_cases(root)
        per_case = map_cases(validate_case, cases, num_processes=num_processes,
                             description=f"Dataset{dataset_id:03d} check")
        raise_if_problems(problems + [line for lines in per_case for line in lines], source_dir)

        labels = label_dict(LABEL_NAMES)
        with staged_dataset(final_dir, overwrite=overwrite) as staging:
            for sub_folder in ("imagesTr", "labelsTr", "imagesTs"):
                (staging / sub_folder).mkdir()
            records = map_cases(partial(convert_case, staging_dir=staging), cases, num_processes=num_processes,
                                description=f"Dataset{dataset_id:03d} convert")
            summary = summarize(records, output_dir=final_dir, channel_names={"0": CHANNEL_NAME}, labels=labels)
            write_dataset_json(
                staging, channel_names=[CHANNEL_NAME], labels=labels, num_training=summary.num_training,
                file_ending=FILE_ENDING, dataset_name=final_dir.name,
                nnunet_mm_block={"reference_channel": 0, "phase_names": [PHASE_NAME],
                                 "source": str(source_dir.resolve()), "converter": Path(__file__).stem},
                description="LiTS 2017 liver and liver tumour segmentation in contrast-enhanced abdominal CT "
                            "(mostly portal-venous), volumes copied with their geometry unchanged.",
                reference="Bilic et al., The Liver Tumor Segmentation Benchmark (LiTS), Medical Image Analysis "
                          "2023, arXiv:1901.04056",
                license="LiTS challenge terms: non-commercial (CC BY-NC-ND 4.0 as quoted by public loaders, "
                        "not verified here); check them before sharing this dataset.",
            )
    logger.info("converted %d training and %d test case(s) into %s", summary.num_training, summary.num_test,
                final_dir)
    return summary


def convert(source_dir: Path, *, output_root: Path | None = None, dataset_id: int = DATASET_ID,
            dataset_name: str = DATASET_NAME, overwrite: bool = False, num_processes: int = 1) -> Path:
    """Convert the LiTS download into ``<output_root>/Dataset<id>_<name>`` and return that folder; the other
    arguments and the errors are those of every converter (:mod:`nnunet_mm.dataset_conversion`).

    Args:
        source_dir: folder or ``.zip``/``.tar`` archive with ``volume-N.nii``, ``segmentation-N.nii`` and
            ``test-volume-N.nii`` anywhere below it; only read.
    """
    return convert_with_summary(source_dir, output_root=output_root, dataset_id=dataset_id,
                                dataset_name=dataset_name, overwrite=overwrite,
                                num_processes=num_processes).output_dir


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command-line options: the source plus the options every converter shares."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Convert LiTS (volume-N.nii / segmentation-N.nii, test-volume-N.nii) into an nnU-Net "
                               "raw dataset; the volumes keep their geometry exactly.")
    parser.add_argument("source_dir", type=Path,
                        help="folder (or .zip/.tar archive) holding the LiTS files, e.g. 'Training Batch 1/' and "
                             "'Training Batch 2/'")
    add_common_arguments(parser, dataset_id=DATASET_ID, dataset_name=DATASET_NAME)
    return parser


main = converter_main(convert_with_summary, build_parser)


if __name__ == "__main__":
    sys.exit(main())
