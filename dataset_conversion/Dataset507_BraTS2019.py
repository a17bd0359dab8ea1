"""Dataset507_BraTS2019: the BraTS 2019 training (and validation) data → nnU-Net raw.

Input::

  MICCAI_BraTS_2019_Data_Training/{HGG,LGG}/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz  <case> = BraTS19_<inst>_<id>_1
  MICCAI_BraTS_2019_Data_Validation/<case>/<case>_{t1,t1ce,t2,flair}.nii.gz        (--test-source)

``.nii`` files are found too (nnU-Net v2's own Dataset043 script hard-codes that ending). A folder or a .zip/.tar
of it.

Output ``Dataset507_BraTS2019/``: ``imagesTr/<case>_0000..0003.nii.gz`` = T1, T1ce, T2, Flair;
``labelsTr/<case>.nii.gz`` with nnU-Net's remap (2→1 edema, 1→2 NCR/NET, 4→3 enhancing); validation cases in
``imagesTs``; dataset.json with region training (whole tumor, tumor core, enhancing tumor). Label 3 (BRATS 2015) is
refused unless ``--legacy-2015``. Everything else, including where the facts come from, is in
:mod:`nnunet_mm.conversion.brats`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nnunet_mm.conversion.brats import BratsRelease, build_parser as build_brats_parser, convert_brats
from nnunet_mm.conversion.runner import DatasetSummary, run_converter_cli

RELEASE = BratsRelease(year=2019, dataset_id=507, dataset_name="BraTS2019", case_prefix="BraTS19_",
                       training_folder="MICCAI_BraTS_2019_Data_Training",
                       validation_folder="MICCAI_BraTS_2019_Data_Validation", example_case="BraTS19_2013_2_1")
DATASET_ID = RELEASE.dataset_id
DATASET_NAME = RELEASE.dataset_name


def convert_with_summary(source_dir: Path, *, test_source: Path | None = None, legacy_2015: bool = False,
                         dataset_id: int = DATASET_ID, dataset_name: str = DATASET_NAME,
                         output_root: Path | None = None, overwrite: bool = False,
                         num_processes: int = 1) -> DatasetSummary:
    """:func:`convert`, returning the summary that ``main`` prints."""
    return convert_brats(RELEASE, source_dir, test_source=test_source, legacy_2015=legacy_2015,
                         dataset_id=dataset_id, dataset_name=dataset_name, output_root=output_root,
                         overwrite=overwrite, num_processes=num_processes)


def convert(source_dir: Path, *, test_source: Path | None = None, legacy_2015: bool = False,
            dataset_id: int = DATASET_ID, dataset_name: str = DATASET_NAME, output_root: Path | None = None,
            overwrite: bool = False, num_processes: int = 1) -> Path:
    """Convert BraTS 2019 into ``<output_root>/Dataset507_BraTS2019`` and return that folder; the arguments and
    errors are those of :func:`nnunet_mm.conversion.brats.convert_brats`."""
    return convert_with_summary(source_dir, test_source=test_source, legacy_2015=legacy_2015,
                                dataset_id=dataset_id, dataset_name=dataset_name, output_root=output_root,
                                overwrite=overwrite, num_processes=num_processes).output_dir


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The command-line options (see :func:`nnunet_mm.conversion.brats.build_parser`)."""
    return build_brats_parser(RELEASE, prog)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 success, 1 a problem with the input or arguments)."""
    args = build_parser().parse_args(argv)
    return run_converter_cli(convert_with_summary, args, source_dir=args.source_dir, test_source=args.test_source,
                             legacy_2015=args.legacy_2015)


if __name__ == "__main__":
    sys.exit(main())
