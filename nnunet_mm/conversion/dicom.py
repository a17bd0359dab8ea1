"""DICOM slices sorted by their position in space, not by file name or series UID.

Anonymised challenge data (CHAOS) gives every file its own instance UIDs, so GDCM's series grouping can split one
volume into many "series". Here the files of a folder are taken as one volume and ordered by the projection of
ImagePositionPatient onto the slice normal (from ImageOrientationPatient).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

logger = logging.getLogger(__name__)

TAG_POSITION = "0020|0032"
TAG_ORIENTATION = "0020|0037"
TAG_ECHO_TIME = "0018|0081"
TAG_SLICE_LOCATION = "0020|1041"
TAG_SERIES_DESCRIPTION = "0008|103e"


def _numbers(text: str) -> list[float]:
    return [float(v) for v in text.replace(",", "\\").split("\\") if v.strip()]


def read_header(file: Path) -> sitk.ImageFileReader:
    """A reader with the header of ``file`` loaded (no pixels); raises ValueError naming the file if unreadable."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(file))
    reader.SetImageIO("GDCMImageIO")
    reader.LoadPrivateTagsOn()
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise ValueError(f"{file}: cannot read DICOM header: {lines[-1] if lines else error}") from None
    return reader


def header_value(file: Path, tag: str) -> str | None:
    """The text of DICOM ``tag`` (``"gggg|eeee"``) in ``file``, or None when absent."""
    reader = read_header(file)
    return reader.GetMetaData(tag).strip() if reader.HasMetaDataKey(tag) else None


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM files of ``folder`` (not recursive): ``*.dcm`` or, when there are none, every file whose header
    GDCM can read."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".dcm")
    if files:
        return files
    candidates = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    found = []
    for candidate in candidates:
        try:
            read_header(candidate)
        except ValueError:
            continue
        found.append(candidate)
    return found


def sort_by_position(files: Sequence[Path]) -> list[Path]:
    """``files`` ordered along the slice normal (increasing position).

    Raises:
        ValueError: a file without ImagePositionPatient/ImageOrientationPatient, slices with different
            orientations, or two slices at the same position (each message names the files).
    """
    positions, orientation, first = [], None, None
    for file in files:
        reader = read_header(file)
        if not (reader.HasMetaDataKey(TAG_POSITION) and reader.HasMetaDataKey(TAG_ORIENTATION)):
            raise ValueError(f"{file}: DICOM slice has no ImagePositionPatient/ImageOrientationPatient, so it cannot "
                             f"be placed in the volume.")
        this = np.array(_numbers(reader.GetMetaData(TAG_ORIENTATION)))
        if orientation is None:
            orientation, first = this, file
        elif not np.allclose(this, orientation, atol=1e-3):
            raise ValueError(f"{file}: slice orientation {this.tolist()} differs from {first} "
                             f"({orientation.tolist()}); the folder mixes series.")
        positions.append(np.array(_numbers(reader.GetMetaData(TAG_POSITION))))
    normal = np.cross(orientation[:3], orientation[3:6])
    distances = np.array([float(p @ normal) for p in positions])
    order = np.argsort(distances, kind="stable")
    sorted_distances = distances[order]
    gaps = np.diff(sorted_distances)
    duplicates = np.flatnonzero(np.abs(gaps) < 1e-4)
    if duplicates.size:
        i = duplicates[0]
        raise ValueError(f"{files[order[i + 1]]}: lies at the same position as {files[order[i]]} "
                         f"({sorted_distances[i]:.3f} mm along the normal); the folder holds more than one series.")
    if gaps.size > 1 and np.ptp(gaps) > 0.01 * max(float(np.median(gaps)), 1e-6):
        logger.warning("%s: slice gaps vary from %.3f to %.3f mm; missing slices? The volume uses their mean.",
                       Path(files[0]).parent, gaps.min(), gaps.max())
    return [Path(files[i]) for i in order]


def read_dicom_volume(folder_or_files: Path | Sequence[Path]) -> sitk.Image:
    """Read a folder of DICOM slices (or the given files) as one 3D volume, slices ordered by position.

    Raises:
        ValueError: no DICOM files, unreadable or inconsistent slices (the message names the file or folder).
    """
    if isinstance(folder_or_files, (str, Path)):
        folder = Path(folder_or_files)
        if not folder.is_dir():
            raise ValueError(f"{folder}: expected a folder of DICOM slices.")
        files = dicom_files(folder)
        where = folder
    else:
        files = [Path(f) for f in folder_or_files]
        where = files[0].parent if files else Path(".")
    if not files:
        raise ValueError(f"{where}: no DICOM files found.")
    ordered = sort_by_position(files)
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([str(f) for f in ordered])
    try:
        image = reader.Execute()
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise ValueError(f"{where}: cannot read DICOM volume: {lines[-1] if lines else error}") from None
    if image.GetDimension() == 2:  # a single slice
        image = sitk.JoinSeries(image)
    return image
