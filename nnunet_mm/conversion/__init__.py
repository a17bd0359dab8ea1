"""The converter toolkit: what the ``dataset_conversion/DatasetNNN_Name.py`` modules share on top of
:mod:`nnunet_mm.io`. Reading DICOM folders sorted by slice position and PNG/JPEG/serialised-array slices, label
remapping with a whitelist and back, source archives extracted without escaping paths, listing a source's files
without hidden entries, the one error type that lists every problem of a source (and :func:`attempt`, which collects
them), case-id collisions, the converters' argument and output checks, progress-bar mapping over cases, summaries,
the common command-line options and the converters' ``main``.

Format-neutral input/output (NIfTI/NRRD/MHA images, resampling, registration, dataset.json, new dataset folders,
staging + atomic rename) lives in :mod:`nnunet_mm.io` and is imported from there. What belongs to one dataset (or one
family of datasets) lives next to its converter in ``dataset_conversion/`` (``chaos_layout``, ``brats_layout``,
``unpaired_layout``).
"""
from nnunet_mm.conversion.archives import (ARCHIVE_ENDINGS, IGNORED_PREFIXES, check_inside, extract_archive, is_archive,
                                           source_files, source_folder)
from nnunet_mm.conversion.dicom import dicom_files, header_value, read_dicom_volume, sort_by_position
from nnunet_mm.conversion.errors import ConversionError, attempt, raise_if_problems
from nnunet_mm.conversion.labels import (bin_intensities, format_values, label_dict, label_value_problems,
                                         labels_back, remap_labels, voxel_counts)
from nnunet_mm.conversion.runner import (CaseRecord, DatasetSummary, add_common_arguments, case_id_collisions,
                                         comma_list, converter_main, map_cases, prepare_output, sanitize_case_id,
                                         summarize)
from nnunet_mm.conversion.slices import image_from_array, natural_key, numeric_sorted, read_slice, sniff_format

__all__ = [
    "ARCHIVE_ENDINGS", "CaseRecord", "ConversionError", "DatasetSummary", "IGNORED_PREFIXES", "add_common_arguments",
    "attempt", "bin_intensities", "case_id_collisions", "check_inside", "comma_list", "converter_main", "dicom_files",
    "extract_archive", "format_values", "header_value", "image_from_array", "is_archive", "label_dict",
    "label_value_problems", "labels_back", "map_cases", "natural_key", "numeric_sorted", "prepare_output",
    "raise_if_problems", "read_dicom_volume", "read_slice", "remap_labels", "sanitize_case_id",
    "sniff_format", "sort_by_position", "source_files", "source_folder", "summarize", "voxel_counts",
]
