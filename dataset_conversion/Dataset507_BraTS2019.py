"""Dataset507_BraTS2019: the BraTS 2019 training data (``MICCAI_BraTS_2019_Data_Training/{HGG,LGG}/BraTS19_*``)
and, with ``--test-source``, the validation data → nnU-Net raw. Layout, labels, options and sources:
:mod:`nnunet_mm.dataset_conversion.brats_layout`.
"""
from __future__ import annotations

import sys

from nnunet_mm.dataset_conversion.brats_layout import BratsRelease

RELEASE = BratsRelease(year=2019, dataset_id=507, case_prefix="BraTS19_")
convert_with_summary, convert, build_parser, main = (RELEASE.convert_with_summary, RELEASE.convert,
                                                     RELEASE.build_parser, RELEASE.main)

if __name__ == "__main__":
    sys.exit(main())
