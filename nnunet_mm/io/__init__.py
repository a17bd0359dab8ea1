"""Input/output shared by the converters and the method packages: reading and writing images (NIfTI, NRRD,
MetaImage, DICOM series), resampling onto a reference grid, rigid/affine registration, new dataset folders, the one
"already exists; pass --overwrite" check, all-or-nothing output folders (staging + atomic rename), dataset.json and
raw dataset access (the cases of an image folder).

Importing this package loads SimpleITK and numpy but not nnU-Net or torch.
"""
from nnunet_mm.io.dataset_json import write_dataset_json
from nnunet_mm.io.images import (
    IMAGE_ENDINGS,
    find_image,
    image_ending,
    read_image,
    verify_image_file,
    write_dicom_series,
    write_image,
)
from nnunet_mm.io.raw_dataset import RawDataset, available_channel_files, case_channel_files, open_raw_dataset
from nnunet_mm.io.registration import register
from nnunet_mm.io.resample import describe_geometry, geometry_differences, resample_to_reference, same_geometry
from nnunet_mm.io.staging import check_output, new_dataset_folder, staged_dataset

__all__ = [
    "IMAGE_ENDINGS",
    "RawDataset",
    "available_channel_files",
    "case_channel_files",
    "check_output",
    "describe_geometry",
    "find_image",
    "geometry_differences",
    "image_ending",
    "new_dataset_folder",
    "open_raw_dataset",
    "read_image",
    "register",
    "resample_to_reference",
    "same_geometry",
    "verify_image_file",
    "staged_dataset",
    "write_dataset_json",
    "write_dicom_series",
    "write_image",
]
