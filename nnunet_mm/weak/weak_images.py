"""A 2D dataset of diseased and normal images from an nnU-Net raw dataset, for the label-transfer GAN.

Sources:

* **2D datasets** (ISIC PNGs, or volumes with one slice): one image per training case, labelled by the dataset's
  image-level labels (:mod:`nnunet_mm.weak.image_labels`).
* **3D datasets** (BraTS, phantoms): axial slices (array axis 0). A slice of a ``"normal"`` case is normal; a slice of
  a diseased case is diseased when its label slice holds a lesion label and normal when it is tumour-free (this needs
  ``labelsTr``; slice-level labels are then weak labels derived from the masks, as in the paper's BraTS setup).
  Slices whose foreground covers less than ``min_foreground_fraction`` of the slice are skipped.

Every image is scaled to [-1, 1] per channel (8-bit images as ``x / 127.5 - 1``, others between the 0.5 and 99.5
percentiles of the whole case) and resized to ``size × size`` (linear; masks nearest).

The **foreground** (where pseudo masks may lie, :func:`foreground_of`) is the body or the skin:

* scans (CT, MR: anything not 8-bit): the body, found by Otsu's threshold of the case's intensities (channel maximum)
  — air or the zero background against tissue — then, per slice, an opening that removes the specks of noisy air
  above it, the components of at least a tenth of the largest one, and their holes (lungs, bowel gas, ventricles)
  filled. A fixed cut just above the lowest intensity (the earlier rule) counted noisy CT air as foreground:
  99 % of a slice whose body covers 66 %;
* 8-bit natural images (ISIC photographs): everything but a black border (any channel above −0.98, i.e. 8-bit
  value 2.5), as the public code zeroes only the black background; skin is not separated from a dark lesion by a
  threshold, so no Otsu there.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.transform import resize

from nnunet_mm.io.raw_dataset import case_channel_files
from nnunet_mm.settings import BLOCK_KEY, read_settings
from nnunet_mm.weak.image_labels import DISEASED, IMAGE_LABELS_KEY, NORMAL, read_image_labels

logger = logging.getLogger(__name__)

BLACK_BORDER_LEVEL = -0.98  # 8-bit images: normalised intensities at or below this are the black border
MIN_COMPONENT_SHARE = 0.1  # body components smaller than this share of the largest one are dropped (table, specks)


@dataclass
class WeakImage:
    """One 2D image of the GAN dataset.

    Attributes:
        case_id: nnU-Net case identifier.
        slice_index: axial slice of a 3D case, None for a 2D case.
        image: (C, size, size) float32 in [-1, 1].
        foreground: (size, size) bool.
        image_label: ``"diseased"`` or ``"normal"``.
        original_shape: (H, W) of the slice before resizing.
    """

    case_id: str
    slice_index: int | None
    image: np.ndarray
    foreground: np.ndarray
    image_label: str
    original_shape: tuple[int, int]


def read_case_array(files: list[Path]) -> tuple[np.ndarray, bool]:
    """Channels of one case as (C, Z, Y, X) float32 (a 2D image gets Z = 1) and whether the input was 8-bit.

    Raises:
        ValueError: unreadable files or channels of different sizes, naming the files.
    """
    arrays, eight_bit = [], True
    for file in files:
        try:
            image = sitk.ReadImage(str(file))
        except RuntimeError as error:
            raise ValueError(f"{file}: cannot read image ({str(error).strip().splitlines()[-1]}).") from None
        eight_bit &= image.GetPixelID() in (sitk.sitkUInt8, sitk.sitkVectorUInt8)
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        components = image.GetNumberOfComponentsPerPixel()
        if components == 1:
            array = array[None]
        else:
            array = np.moveaxis(array, -1, 0)
        if image.GetDimension() == 2:
            array = array[:, None]
        arrays.extend(array)
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"{files[0].parent}: channels of {files[0].name[:-len('_0000') - 4]}… have different sizes "
                         f"{sorted(shapes)}: {[f.name for f in files]}.")
    return np.stack(arrays), eight_bit


def normalise_case(array: np.ndarray, eight_bit: bool) -> np.ndarray:
    """(C, ...) intensities scaled to [-1, 1] per channel (see the module docstring)."""
    if eight_bit:
        return (array / 127.5 - 1.0).astype(np.float32)
    result = np.empty_like(array, dtype=np.float32)
    for channel, values in enumerate(array):
        low, high = np.percentile(values, (0.5, 99.5))
        scale = max(high - low, 1e-6)
        result[channel] = np.clip((values - low) / scale, 0.0, 1.0) * 2.0 - 1.0
    return result


def foreground_threshold(volume: np.ndarray, eight_bit: bool) -> float:
    """The normalised intensity above which a pixel (its channel maximum) can be foreground, for one whole case.

    Args:
        volume: (C, Z, Y, X) intensities of one case after :func:`normalise_case`.
        eight_bit: the case is an 8-bit natural image (black-border rule) rather than a scan (Otsu).

    Returns:
        ``BLACK_BORDER_LEVEL`` for 8-bit images; Otsu's threshold of the channel maximum for scans (−inf when the
        case is flat, so that every pixel counts).
    """
    if eight_bit:
        return BLACK_BORDER_LEVEL
    brightest = volume.max(axis=0).ravel()
    stride = max(1, brightest.size // 1_000_000)  # Otsu's histogram needs no more than a million samples
    samples = brightest[::stride]
    if np.ptp(samples) < 1e-6:
        return -np.inf
    return float(threshold_otsu(samples))


def foreground_of(image: np.ndarray, threshold: float, *, eight_bit: bool) -> np.ndarray:
    """(H, W) bool foreground of one (C, H, W) normalised image (the rules are in the module docstring).

    Args:
        image: (C, H, W) normalised slice or 2D image.
        threshold: :func:`foreground_threshold` of its case.
        eight_bit: an 8-bit natural image: only the black border is background (no opening, no component filter).
    """
    bright = image.max(axis=0) > threshold
    if eight_bit:
        return ndimage.binary_fill_holes(bright)
    body = ndimage.binary_opening(bright, structure=np.ones((3, 3), bool), iterations=2)
    components, count = ndimage.label(body)
    if count == 0:
        return body
    sizes = ndimage.sum_labels(body, components, index=np.arange(1, count + 1))
    kept = np.flatnonzero(sizes >= MIN_COMPONENT_SHARE * sizes.max()) + 1
    return ndimage.binary_fill_holes(np.isin(components, kept))


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """(C, H, W) → (C, size, size), linear."""
    return resize(image, (image.shape[0], size, size), order=1, mode="edge", anti_aliasing=True,
                  preserve_range=True).astype(np.float32)


def resize_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool → ``shape``, nearest neighbour."""
    return resize(mask.astype(np.uint8), shape, order=0, mode="edge", anti_aliasing=False,
                  preserve_range=True).astype(bool)


def _slice_labels(label_file: Path, lesion_labels: tuple[int, ...] | None) -> np.ndarray:
    """(Z,) bool: slices of a 3D label file that hold a lesion."""
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))
    if label.ndim == 2:
        label = label[None]
    lesion = label > 0 if lesion_labels is None else np.isin(label, lesion_labels)
    return lesion.reshape(lesion.shape[0], -1).any(axis=1)


def load_weak_images(dataset_folder: Path, *, size: int, lesion_labels: tuple[int, ...] | None = None,
                     min_foreground_fraction: float = 0.05, progress: bool = False) -> list[WeakImage]:
    """The diseased and normal 2D images of a raw dataset's ``imagesTr`` (see the module docstring).

    Args:
        dataset_folder: ``$nnUNet_raw/DatasetXXX_Name``.
        size: side of the square images (a multiple of 4).
        lesion_labels: label values that make a 3D slice diseased (None: every foreground label).
        min_foreground_fraction: 3D slices with less foreground are skipped.
        progress: show a tqdm progress bar.

    Raises:
        FileNotFoundError: missing dataset.json, images, or labels needed for the slices of a 3D diseased case.
        ValueError: image-level labels that are malformed or name unknown cases, 2D cases without a label.
    """
    if size % 4 or size < 8:
        raise ValueError(f"size must be a multiple of 4 and >= 8 (the generator downsamples twice), got {size}.")
    dataset_json_file = Path(dataset_folder) / "dataset.json"
    if not dataset_json_file.is_file():
        raise FileNotFoundError(f"{dataset_json_file}: missing; is {dataset_folder} an nnU-Net raw dataset?")
    dataset_json = json.loads(dataset_json_file.read_text(encoding="utf-8"))
    file_ending = dataset_json["file_ending"]
    images_folder = Path(dataset_folder) / "imagesTr"
    cases = case_channel_files(images_folder, file_ending, None)  # None: one RGB file may hold 3 channel_names
    if not cases:
        raise FileNotFoundError(f"{images_folder}: no images CASE_XXXX{file_ending}.")
    settings = read_settings(dataset_json, str(dataset_json_file))
    image_labels = read_image_labels(settings.method(IMAGE_LABELS_KEY), Path(dataset_folder), settings.source) or {}
    unknown = sorted(set(image_labels) - set(cases))
    if unknown:
        raise ValueError(f"{dataset_json_file}: image labels name case(s) without images in imagesTr: {unknown[:5]}.")
    iterator = sorted(cases)
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc="reading images", unit="case")
    images: list[WeakImage] = []
    for case in iterator:
        array, eight_bit = read_case_array(cases[case])
        volume = normalise_case(array, eight_bit)
        threshold = foreground_threshold(volume, eight_bit)
        is_3d = volume.shape[1] > 1
        if is_3d:
            images += _volume_slices(case, volume, image_labels.get(case), Path(dataset_folder), file_ending,
                                     size=size, lesion_labels=lesion_labels, threshold=threshold,
                                     eight_bit=eight_bit, min_foreground_fraction=min_foreground_fraction)
            continue
        if case not in image_labels:
            label_file = Path(dataset_folder) / "labelsTr" / f"{case}{file_ending}"
            if not label_file.is_file():
                raise ValueError(f"{dataset_json_file}: no image label for 2D case {case} and no {label_file} to "
                                 f"derive one from; add it to '{BLOCK_KEY}'.'{IMAGE_LABELS_KEY}'.")
            image_labels[case] = DISEASED if _slice_labels(label_file, lesion_labels).any() else NORMAL
        image = volume[:, 0]
        images.append(WeakImage(case, None, resize_image(image, size),
                                resize_mask(foreground_of(image, threshold, eight_bit=eight_bit), (size, size)),
                                image_labels[case],
                                tuple(image.shape[1:])))
    counts = {value: sum(i.image_label == value for i in images) for value in (DISEASED, NORMAL)}
    logger.info("%s: %d diseased and %d normal 2D images", dataset_folder, counts[DISEASED], counts[NORMAL])
    return images


def _volume_slices(case: str, volume: np.ndarray, case_label: str | None, dataset_folder: Path, file_ending: str, *,
                   size: int, lesion_labels: tuple[int, ...] | None, threshold: float, eight_bit: bool,
                   min_foreground_fraction: float) -> list[WeakImage]:
    if case_label == NORMAL:
        slice_is_diseased = np.zeros(volume.shape[1], dtype=bool)
    else:
        label_file = dataset_folder / "labelsTr" / f"{case}{file_ending}"
        if not label_file.is_file():
            raise FileNotFoundError(f"{label_file}: needed to tell the tumour-free (normal) slices of the 3D case "
                                    f"{case}; or label the whole case 'normal' in '{BLOCK_KEY}'.'{IMAGE_LABELS_KEY}'.")
        slice_is_diseased = _slice_labels(label_file, lesion_labels)
    images = []
    for index in range(volume.shape[1]):
        image = volume[:, index]
        foreground = foreground_of(image, threshold, eight_bit=eight_bit)
        if foreground.mean() < min_foreground_fraction:
            continue
        images.append(WeakImage(case, index, resize_image(image, size), resize_mask(foreground, (size, size)),
                                DISEASED if slice_is_diseased[index] else NORMAL, tuple(image.shape[1:])))
    return images
