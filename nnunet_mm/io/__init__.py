"""Shared input/output helpers for dataset converters: reading and writing images (NIfTI, NRRD, MetaImage, DICOM
series), resampling onto a reference grid, rigid/affine registration, all-or-nothing output folders and
dataset.json.

Importing this package loads SimpleITK and numpy but not nnU-Net or torch.
"""
from nnunet_mm.io.dataset_json import write_dataset_json
from nnunet_mm.io.images import (
    IMAGE_ENDINGS,
    find_image,
    image_ending,
    read_image,
    write_dicom_series,
    write_image,
)
from nnunet_mm.io.registration import register
from nnunet_mm.io.resample import describe_geometry, geometry_differences, resample_to_reference, same_geometry
from nnunet_mm.io.staging import staged_dataset

__all__ = [
    "IMAGE_ENDINGS",
    "describe_geometry",
    "find_image",
    "geometry_differences",
    "image_ending",
    "read_image",
    "register",
    "resample_to_reference",
    "same_geometry",
    "staged_dataset",
    "write_dataset_json",
    "write_dicom_series",
    "write_image",
]
