"""Reading, finding and writing 3D medical images (NIfTI, NRRD, MetaImage, DICOM series folders) with SimpleITK.

Every error a user can cause names the file or folder, so that a converter can collect the messages and report
them all at once.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

import nnunet_mm

logger = logging.getLogger(__name__)

# Longest first, so that "x.nii.gz" is not taken for an image with the ending ".gz".
IMAGE_ENDINGS: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

_INTEGER_PIXEL_TYPES = {
    sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16,
    sitk.sitkUInt32, sitk.sitkInt32, sitk.sitkUInt64, sitk.sitkInt64,
}


def image_ending(path: Path) -> str | None:
    """The supported ending of ``path`` (lower case, e.g. ``".nii.gz"``), or None if it has none."""
    name = Path(path).name.lower()
    for ending in IMAGE_ENDINGS:
        if name.endswith(ending) and len(name) > len(ending):
            return ending
    return None


def is_integer_pixel_type(image: sitk.Image) -> bool:
    """True for scalar integer images (labels, CT stored as int16, ...)."""
    return image.GetPixelID() in _INTEGER_PIXEL_TYPES


def _read_dicom_series(folder: Path) -> sitk.Image:
    try:
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as error:
        raise ValueError(f"{folder}: cannot read image: {_first_line(error)}") from None
    if not series_ids:
        raise ValueError(f"{folder}: cannot read image: the folder holds no DICOM series. Put one DICOM series "
                         f"(one file per slice) in it, or use a NIfTI/NRRD/MetaImage file "
                         f"({', '.join(IMAGE_ENDINGS)}).")
    if len(series_ids) > 1:
        raise ValueError(f"{folder}: holds {len(series_ids)} DICOM series {list(series_ids)}; expected exactly one. "
                         f"Move each series into a folder of its own.")
    # GDCM sorts the files of the series by their position along the slice normal.
    file_names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_ids[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(file_names)
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise ValueError(f"{folder}: cannot read image: DICOM series {series_ids[0]}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    """ITK error texts span many lines (file, line, class); the last non-empty line says what went wrong."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) >= 2 and "File cannot be read" in lines[-2] and lines[-1].startswith("Reason:"):
        # ITK's MetaImage reader appends a stale errno ("No such file or directory") to a file whose data end early
        return "the file is incomplete or corrupt (its voxel data cannot be read completely)"
    return lines[-1] if lines else type(error).__name__


def _count_non_finite_nifti(path: Path) -> int:
    """Non-finite voxels as stored in a floating-point NIfTI file.

    ITK's NIfTI reader silently turns NaN and inf into 0, so they are invisible in the SimpleITK image; nibabel
    (an nnU-Net dependency) reads the stored values.
    """
    import nibabel

    nifti = nibabel.load(str(path))
    if not np.issubdtype(nifti.get_data_dtype(), np.floating):
        return 0
    return int(np.count_nonzero(~np.isfinite(np.asanyarray(nifti.dataobj))))


def _nifti_missing_bytes(path: Path) -> int:
    """How many bytes of voxel data a NIfTI file lacks against what its header promises (0: complete).

    SimpleITK reads a truncated ``.nii``/``.nii.gz`` without an error and fills the missing voxels with zeros; this
    check decompresses the whole stream (a cut gzip stream raises) and compares its length with the header's
    ``vox_offset + number of voxels × bytes per voxel``.

    Raises:
        ValueError: the gzip stream is cut or corrupt, or the header cannot be read (the message starts with
            ``path``).
    """
    import gzip
    import zlib

    import nibabel

    try:
        nifti = nibabel.load(str(path))
    except Exception as error:  # nibabel raises several types for a broken header
        raise ValueError(f"{path}: incomplete or corrupt file: its NIfTI header cannot be read "
                         f"({error}).") from None
    header = nifti.header  # a loaded image's header has vox_offset reset; the array proxy keeps the file's
    expected = int(nifti.dataobj.offset) + int(np.prod(header.get_data_shape(), dtype=np.int64)) * \
        np.dtype(header.get_data_dtype()).itemsize
    if image_ending(path) == ".nii":
        return max(0, expected - path.stat().st_size)
    size = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 22):
                size += len(chunk)
    except (EOFError, OSError, zlib.error) as error:
        raise ValueError(f"{path}: incomplete or corrupt file: the compressed data end early or are damaged "
                         f"({error}); {size:,} of {expected:,} bytes could be read. Copy the file again.") from None
    return max(0, expected - size)


def _refuse_incomplete_nifti(path: Path) -> None:
    missing = _nifti_missing_bytes(path)
    if missing:
        raise ValueError(f"{path}: incomplete file: {missing:,} bytes of voxel data are missing against what its "
                         f"header promises (a cut copy or download?). Copy the file again.")


def _refuse_unreadable(path: Path) -> None:
    """SimpleITK reports a file it may not read as one that "does not exist"; say what is wrong."""
    if not os.access(path, os.R_OK):
        raise PermissionError(13, "Permission denied (cannot read the image)", str(path))


def verify_image_file(path: Path, *, check_finite: bool = True) -> None:
    """Check, without keeping the voxels, that an image file is complete and (``check_finite``) holds no NaN/inf:
    for NIfTI, the checks :func:`read_image` makes that SimpleITK does not (a cut file, non-finite values it reads
    as 0). Other formats are read with SimpleITK; any dimensionality is accepted.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is cut, corrupt or holds NaN/inf voxels; the message starts with ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    _refuse_unreadable(path)
    if image_ending(path) in (".nii", ".nii.gz"):
        _refuse_incomplete_nifti(path)
        num_bad = _count_non_finite_nifti(path) if check_finite else 0
    else:
        try:
            array = sitk.GetArrayViewFromImage(sitk.ReadImage(str(path)))
        except RuntimeError as error:
            raise ValueError(f"{path}: cannot read image: {_first_line(error)}") from None
        num_bad = int(np.count_nonzero(~np.isfinite(array))) if check_finite and array.dtype.kind == "f" else 0
    if num_bad:
        raise ValueError(f"{path}: contains {num_bad} NaN/inf voxels; replace them (e.g. with the background "
                         f"value) first.")


def non_finite_mask(path: Path, image: sitk.Image) -> np.ndarray:
    """Where ``path`` (already read as ``image``) stores NaN/inf, as a (z, y, x) boolean array.

    For NIfTI the stored values are read with nibabel, since ITK's reader turns them into 0.
    """
    if is_integer_pixel_type(image):
        return np.zeros(sitk.GetArrayViewFromImage(image).shape, dtype=bool)
    if image_ending(path) in (".nii", ".nii.gz"):
        import nibabel

        stored = np.asanyarray(nibabel.load(str(path)).dataobj)
        return np.ascontiguousarray(~np.isfinite(stored).T).reshape(sitk.GetArrayViewFromImage(image).shape)
    return ~np.isfinite(sitk.GetArrayViewFromImage(image))


def replace_non_finite(path: Path) -> tuple[sitk.Image, int, float]:
    """``path`` read with its NaN/inf voxels set to the image's lowest finite value (the background of CT and MR).

    Returns:
        The image, how many voxels were replaced and the value they got.

    Raises:
        ValueError: the file cannot be read or holds no finite voxel.
    """
    path = Path(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise ValueError(f"{path}: cannot read image: {_first_line(error)}") from None
    mask = non_finite_mask(path, image)
    count = int(mask.sum())
    if not count:
        return image, 0, float("nan")
    array = sitk.GetArrayFromImage(image)
    finite = array[~mask]
    if finite.size == 0:
        raise ValueError(f"{path}: every voxel is NaN/inf; nothing to replace them with.")
    value = float(finite.min())
    array[mask] = value
    replaced = sitk.GetImageFromArray(array, isVector=image.GetNumberOfComponentsPerPixel() > 1)
    replaced.CopyInformation(image)
    return replaced, count, value


def read_image(path: Path, *, check_finite: bool = True) -> sitk.Image:
    """Read one scalar 3D image.

    Args:
        path: a NIfTI (``.nii``/``.nii.gz``), NRRD (``.nrrd``/``.nhdr``) or MetaImage (``.mha``/``.mhd``) file, or a
            folder that holds exactly one DICOM series (slices are sorted by position, not by file name).
        check_finite: refuse images with NaN or infinite voxels (only floating-point images can have them).

    Returns:
        The image, with its pixel type, spacing, origin and direction as stored.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unsupported ending, unreadable or corrupt file, a NIfTI file that holds fewer voxels than its
            header promises (SimpleITK would fill them with zeros), several DICOM series in the folder, an image
            that is not 3D or not scalar, or non-finite voxels. The message starts with ``path``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder.")
    if path.is_dir():
        image = _read_dicom_series(path)
    else:
        if image_ending(path) is None:
            raise ValueError(f"{path}: cannot read image: unsupported file ending; supported are "
                             f"{', '.join(IMAGE_ENDINGS)} or a folder holding one DICOM series.")
        _refuse_unreadable(path)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise ValueError(f"{path}: cannot read image: {_first_line(error)}") from None
        if image_ending(path) in (".nii", ".nii.gz"):
            _refuse_incomplete_nifti(path)

    if image.GetDimension() != 3:
        raise ValueError(f"{path}: expected a 3D image, got {image.GetDimension()}D with size {image.GetSize()}.")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{path}: expected a scalar image, got {image.GetNumberOfComponentsPerPixel()} components "
                         f"per voxel ({image.GetPixelIDTypeAsString()}).")
    if check_finite and not is_integer_pixel_type(image):
        num_bad = int(np.count_nonzero(~np.isfinite(sitk.GetArrayViewFromImage(image))))
        if not num_bad and image_ending(path) in (".nii", ".nii.gz"):
            num_bad = _count_non_finite_nifti(path)
        if num_bad:
            raise ValueError(f"{path}: contains {num_bad} NaN/inf voxels; replace them (e.g. with the background "
                             f"value) before converting.")
    return image


def find_image(folder: Path, stem: str) -> Path | None:
    """Find the image called ``stem`` in ``folder``, ignoring case.

    Matches ``<stem><ending>`` for every ending in :data:`IMAGE_ENDINGS` and a sub-folder named ``<stem>`` (taken to
    hold a DICOM series).

    Returns:
        The path, or None if nothing matches.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: several entries match (e.g. ``pv.nii.gz`` and ``PV.nrrd``); the message lists them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder.")
    wanted = stem.lower()
    matches = []
    for entry in sorted(folder.iterdir()):
        name = entry.name.lower()
        if entry.is_dir():
            if name == wanted:
                matches.append(entry)
        elif any(name == wanted + ending for ending in IMAGE_ENDINGS):
            matches.append(entry)
    if len(matches) > 1:
        raise ValueError(f"{folder}: several images match '{stem}': {[m.name for m in matches]}; keep only one.")
    return matches[0] if matches else None


def write_image(image: sitk.Image, path: Path, *, compress: bool = True) -> Path:
    """Write ``image`` with SimpleITK (the format from ``path``'s ending; ``compress``: gzip/zlib where the format
    has it) and check that the written file is complete; creates the parent folder.

    SimpleITK does not report a write that failed half-way (a full disk leaves a truncated file and no error), so
    the file is checked after the write (:func:`verify_written_image`).

    Raises:
        OSError: the write failed or the written file is incomplete; the message names ``path``. A truncated file
            is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        sitk.WriteImage(image, str(path), useCompression=compress)
    except RuntimeError as error:
        path.unlink(missing_ok=True)
        raise OSError(f"{path}: cannot write image: {_first_line(error)}") from None
    try:
        verify_written_image(path, image)
    except OSError:
        path.unlink(missing_ok=True)
        raise
    return path


def verify_written_image(path: Path, image: sitk.Image) -> None:
    """Check that the file SimpleITK just wrote holds all of ``image``: for NIfTI, the uncompressed size its header
    promises (the gzip trailer's length field of a ``.nii.gz``, the file size of a ``.nii``); other formats are read
    back and their size compared.

    Raises:
        OSError: the file is missing, empty or shorter than it must be ("is the disk full?"), naming ``path``.
    """
    path = Path(path)
    size = path.stat().st_size if path.is_file() else 0
    if size == 0:
        raise OSError(f"{path}: the written file is empty; is the disk full?")
    ending = image_ending(path)
    if ending in (".nii", ".nii.gz"):
        import nibabel

        try:
            proxy = nibabel.load(str(path)).dataobj
        except Exception as error:  # nibabel raises several types for a cut header
            raise OSError(f"{path}: the written file is incomplete ({error}); is the disk full?") from None
        expected = int(proxy.offset) + int(np.prod(proxy.shape, dtype=np.int64)) * np.dtype(proxy.dtype).itemsize
        if ending == ".nii":
            written = size
        else:
            with open(path, "rb") as handle:  # a gzip member ends with the uncompressed length modulo 2**32
                handle.seek(-4, os.SEEK_END)
                written = int.from_bytes(handle.read(4), "little")
            expected %= 1 << 32
        if ending == ".nii.gz" and written != expected:
            raise OSError(f"{path}: the written file is incomplete (its compressed data end early); is the disk "
                          f"full?")
        if ending == ".nii" and written < expected:
            raise OSError(f"{path}: the written file is incomplete ({written:,} of {expected:,} bytes); is the disk "
                          f"full?")
        return
    try:
        written_size = sitk.ReadImage(str(path)).GetSize()
    except RuntimeError as error:
        raise OSError(f"{path}: the written file cannot be read back ({_first_line(error)}); is the disk "
                      f"full?") from None
    if tuple(written_size) != tuple(image.GetSize()):
        raise OSError(f"{path}: the written file holds {written_size} voxels, not {image.GetSize()}; is the disk "
                      f"full?")


def write_dicom_series(image: sitk.Image, folder: Path, *, series_instance_uid: str | None = None,
                       modality: str = "CT", series_description: str = nnunet_mm.__name__) -> list[Path]:
    """Write a 3D integer image as a DICOM series, one file per slice (SimpleITK's "Dicom Series From Array").

    Meant for test fixtures and phantom layouts (e.g. CHAOS-like DICOM folders), not for clinical use.

    Args:
        image: 3D image with an integer pixel type (e.g. int16 HU).
        folder: created if missing; files are named ``slice_0000.dcm`` ... in slice order.
        series_instance_uid: the series UID; a new one is made if None (give two series different UIDs to put
            them in one folder).
        modality: the DICOM Modality tag (0008|0060).
        series_description: the SeriesDescription tag (0008|103e).

    Returns:
        The written files, in slice order.
    """
    if image.GetDimension() != 3 or not is_integer_pixel_type(image):
        raise ValueError(f"write_dicom_series needs a 3D integer image, got {image.GetDimension()}D "
                         f"{image.GetPixelIDTypeAsString()}; round and cast it first.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    now_date, now_time = time.strftime("%Y%m%d"), time.strftime("%H%M%S")
    if series_instance_uid is None:
        series_instance_uid = f"1.2.826.0.1.3680043.2.1125.{now_date}.1{now_time}{time.perf_counter_ns() % 10**6}"
    direction = image.GetDirection()
    series_tags = [
        ("0008|0031", now_time), ("0008|0021", now_date),  # series time, date
        ("0008|0008", "DERIVED\\SECONDARY"),  # image type
        ("0008|0060", modality),
        ("0020|000e", series_instance_uid),
        ("0020|0037", "\\".join(f"{v:.10g}" for v in (direction[0], direction[3], direction[6],
                                                       direction[1], direction[4], direction[7]))),
        ("0008|103e", series_description),
        ("0018|0050", f"{image.GetSpacing()[2]:.10g}"),  # slice thickness
    ]
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # otherwise every slice would get a series UID of its own
    files = []
    for k in range(image.GetSize()[2]):
        image_slice = image[:, :, k]
        for tag, value in series_tags:
            image_slice.SetMetaData(tag, value)
        image_slice.SetMetaData("0008|0012", now_date)  # instance creation date
        image_slice.SetMetaData("0008|0013", now_time)
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        image_slice.SetMetaData("0020|0032", "\\".join(f"{v:.10g}" for v in position))
        image_slice.SetMetaData("0020|0013", str(k + 1))  # instance number
        file = folder / f"slice_{k:04d}.dcm"
        writer.SetFileName(str(file))
        writer.Execute(image_slice)
        files.append(file)
    return files
