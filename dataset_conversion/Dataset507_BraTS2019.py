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
:mod:`nnunet_mm.dataset_conversion.brats_layout`.
"""
from __future__ import annotations

import sys

from nnunet_mm.dataset_conversion.brats_layout import BratsRelease

RELEASE = BratsRelease(year=2019, dataset_id=507, dataset_name="BraTS2019", case_prefix="BraTS19_",
                       training_folder="MICCAI_BraTS_2019_Data_Training",
                       validation_folder="MICCAI_BraTS_2019_Data_Validation", example_case="BraTS19_2013_2_1")
DATASET_ID = RELEASE.dataset_id
DATASET_NAME = RELEASE.dataset_name

# the entry points every converter module has; arguments, errors and options in nnunet_mm.dataset_conversion.brats_layout
convert_with_summary = RELEASE.convert_with_summary
convert = RELEASE.convert
build_parser = RELEASE.build_parser
main = RELEASE.main

if __name__ == "__main__":
    sys.exit(main())
