"""Dataset506_BraTS2018: the BraTS 2018 training data (``MICCAI_BraTS_2018_Data_Training/{HGG,LGG}/Brats18_*``)
and, with ``--test-source``, the validation data → nnU-Net raw. Layout, labels, options and sources:
:mod:`nnunet_mm.dataset_conversion.brats_layout`.
"""
from __future__ import annotations

import sys

from nnunet_mm.dataset_conversion.brats_layout import BratsRelease

RELEASE = BratsRelease(year=2018, dataset_id=506, case_prefix="Brats18_")
convert_with_summary, convert, build_parser, main = (RELEASE.convert_with_summary, RELEASE.convert,
                                                     RELEASE.build_parser, RELEASE.main)

if __name__ == "__main__":
    sys.exit(main())
