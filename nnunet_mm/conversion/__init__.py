"""The small library every dataset converter shares: reading DICOM series sorted by position and PNG/JPEG/array
slice stacks, label remapping with a whitelist, archive extraction that refuses escaping paths, listing a source's
files without hidden entries, output-folder checks, progress-bar mapping over cases, summaries and the common
command-line options.

Images (NIfTI/NRRD/MHA), resampling, registration, staging + atomic rename and dataset.json writing live in
:mod:`nnunet_mm.io` and are re-exported here so that a converter imports from one place.
"""
from nnunet_mm.conversion.archives import check_inside, extract_archive, is_archive, source_files, source_folder
from nnunet_mm.conversion.dicom import dicom_files, header_value, read_dicom_volume, sort_by_position
from nnunet_mm.conversion.errors import ConversionError, raise_if_problems
from nnunet_mm.conversion.labels import (bin_intensities, format_values, label_dict, label_value_problems,
                                         remap_labels, voxel_counts)
from nnunet_mm.conversion.runner import (CaseRecord, DatasetSummary, add_common_arguments, map_cases,
                                         prepare_output, resolve_output_root, run_converter_cli, sanitize_case_id,
                                         summarize)
from nnunet_mm.conversion.slices import image_from_array, natural_key, numeric_sorted, read_slice, read_slice_stack
from nnunet_mm.io import (find_image, read_image, register, resample_to_reference, same_geometry, staged_dataset,
                          write_dataset_json, write_image)

__all__ = [
    "CaseRecord", "ConversionError", "DatasetSummary", "add_common_arguments", "bin_intensities", "check_inside",
    "dicom_files", "extract_archive", "find_image", "format_values", "header_value", "image_from_array",
    "is_archive", "label_dict", "label_value_problems", "map_cases", "natural_key", "numeric_sorted",
    "prepare_output", "raise_if_problems", "read_dicom_volume", "read_image", "read_slice", "read_slice_stack",
    "register", "remap_labels", "resample_to_reference", "resolve_output_root", "run_converter_cli",
    "same_geometry", "sanitize_case_id", "sort_by_position", "source_files", "source_folder", "staged_dataset",
    "summarize", "voxel_counts", "write_dataset_json", "write_image",
]
