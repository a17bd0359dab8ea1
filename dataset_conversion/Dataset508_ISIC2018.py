"""Dataset508_ISIC2018: ISIC 2018 Task 1 (lesion boundary segmentation in dermoscopy) → nnU-Net raw, 2D RGB PNG.

Input: ``source_dir`` holds the downloaded folders, each unpacked or still as ``<folder>.zip``; or ``source_dir`` is
a ``.zip``/``.tar`` of such a folder::

    ISIC2018_Task1-2_Training_Input/ISIC_XXXXXXX.jpg                    RGB JPEG, 540×722 up to 6748×4499
    ISIC2018_Task1_Training_GroundTruth/ISIC_XXXXXXX_segmentation.png   8-bit grey mask, 0 / 255
    ISIC2018_Task1-2_Validation_Input/ISIC_XXXXXXX.jpg                  optional → imagesTs
    ISIC2018_Task1-2_Test_Input/ISIC_XXXXXXX.jpg                        optional → imagesTs

Other files (``ATTRIBUTION.txt``, ``LICENSE.txt``) and folders (e.g. ground truth of the validation or test images,
released after the challenge) are ignored.

Output, in ``<output_root>/Dataset508_ISIC2018/``:

* ``imagesTr/ISIC_XXXXXXX_0000.png``: one lossless RGB PNG per image, read by nnU-Net's ``NaturalImage2DIO``
  (channel_names ``{0: R, 1: G, 2: B}``, as in nnU-Net's Dataset120_RoadSegmentation); grey JPEGs are repeated into
  R, G and B. ``imagesTs/``: the validation and test images.
* ``labelsTr/ISIC_XXXXXXX.png``: uint8, 255 → 1 (lesion). Any value other than 0 and 255 is refused, naming the mask,
  unless ``binarize_threshold`` is given (values above it become lesion), for masks that were resaved lossily.
* ``max_size``: images whose longer side exceeds it are downscaled, keeping the aspect ratio (box + Gaussian
  anti-aliasing and linear interpolation for the image, nearest neighbour for the mask).
* ``normal_crops`` K > 0: up to K lesion-free crops per training image, written as extra training cases
  ``<case>_normal<k>`` (k = 1, 2, ...) with an all-zero label: square windows of ``crop_size`` pixels (at most half
  the shorter side of the written image) on a regular grid with the crop size as stride, whose window grown by
  ``crop_margin`` pixels on every side holds no lesion pixel. Which of them are taken is drawn with a generator
  seeded from the case id, so a conversion is reproducible. Dermoscopy corners are often dark vignetting; such
  crops are kept (they are lesion-free).
* ``image_labels.json``: ``{case: "diseased" | "normal"}`` for every training case (every ISIC image shows a lesion;
  the crops are normal), for weak supervision, referenced as ``"image_labels"`` in the ``'nnunet_mm'`` block.
* ``dataset.json``: labels ``{background: 0, lesion: 1}``, file_ending ``.png``, ``overwrite_image_reader_writer``
  ``NaturalImage2DIO``; the ``'nnunet_mm'`` block declares ``"channel_acquisition": "colour_planes"`` (R, G, B are
  planes of one photograph), so the trainer never shifts or drops them.

Checking reads the image headers (size, colour channels, 8 bit) and the whole masks; the images themselves are
decoded once, while writing. A JPEG that is broken beyond its header is therefore reported then (naming the file;
nothing is left behind), not together with the other problems.

Where the facts come from: layout, counts, sizes and the 0/255 masks from datasets.md §2.5. Confirmed on the real
ISIC 2017 samples (same file naming as 2018): ``ISIC_XXXXXXX.jpg`` RGB JPEGs of 3024×2016 and
``ISIC_XXXXXXX_segmentation.png`` 8-bit grey masks holding exactly 0 and 255. The 2018 folder names and the zips
holding one folder each are from memory, not confirmed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_mm.conversion.archives import ARCHIVE_ENDINGS, check_inside, source_folder
from nnunet_mm.conversion.errors import raise_if_problems
from nnunet_mm.conversion.labels import format_values, voxel_counts
from nnunet_mm.conversion.runner import (CaseRecord, DatasetSummary, add_common_arguments, case_id_collisions,
                                         converter_main, map_cases, prepare_output, sanitize_case_id, summarize)
from nnunet_mm.conversion.slices import read_slice
from nnunet_mm.io import staged_dataset, write_dataset_json, write_image

logger = logging.getLogger(__name__)

DATASET_ID = 508
DATASET_NAME = "ISIC2018"
TRAINING_INPUT = "ISIC2018_Task1-2_Training_Input"
TRAINING_GROUND_TRUTH = "ISIC2018_Task1_Training_GroundTruth"
TEST_INPUTS = ("ISIC2018_Task1-2_Validation_Input", "ISIC2018_Task1-2_Test_Input")
IMAGE_SUFFIXES = (".jpg", ".jpeg")
MASK_SUFFIX = "_segmentation.png"
MASK_VALUES = (0, 255)
CHANNEL_NAMES = {"0": "R", "1": "G", "2": "B"}
LABELS = {"background": 0, "lesion": 1}
FILE_ENDING = ".png"
READER_WRITER = "NaturalImage2DIO"
IMAGE_LABELS_FILE = "image_labels.json"
DISEASED, NORMAL = "diseased", "normal"
DEFAULT_CROP_SIZE = 256
DEFAULT_CROP_MARGIN = 16
SPACING_2D = (1.0, 1.0)


@dataclass(frozen=True)
class IsicCase:
    """One image; ``mask_file`` is None for validation and test images."""

    case_id: str
    image_file: Path
    mask_file: Path | None

    @property
    def is_training(self) -> bool:
        return self.mask_file is not None


@dataclass(frozen=True)
class CropSettings:
    """Lesion-free "normal" crops per training image (see the module docstring)."""

    max_crops: int = 0
    crop_size: int = DEFAULT_CROP_SIZE
    margin: int = DEFAULT_CROP_MARGIN


# ----------------------------------------------------------------------------------------------------------------
# finding and checking the input

def _open_part(root: Path, name: str, stack: contextlib.ExitStack) -> Path | None:
    """``root/name/``, or the folder extracted from ``root/name.zip`` (or another archive ending); None if absent.

    Raises:
        ValueError: ``root/name`` resolves outside ``root`` (a symbolic link leading out of the input).
    """
    if (root / name).is_dir():
        check_inside(root / name, root)
        return root / name
    for ending in ARCHIVE_ENDINGS:
        if (root / f"{name}{ending}").is_file():
            return stack.enter_context(source_folder(root / f"{name}{ending}"))
    return None


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _missing_part_message(root: Path, name: str) -> str:
    present = sorted(p.name for p in root.iterdir())
    return f"{root}: missing {root / name}/ (or {name}.zip); the folder holds {present}."


def _checked(files: Sequence[Path], folder: Path, problems: list[str]) -> list[Path]:
    """``files`` without those that resolve outside ``folder`` (reported in ``problems``)."""
    kept = []
    for file in files:
        try:
            check_inside(file, folder)
        except ValueError as error:
            problems.append(str(error))
        else:
            kept.append(file)
    return kept


def find_cases(root: Path, stack: contextlib.ExitStack) -> tuple[list[IsicCase], list[str]]:
    """Pair the training images with their masks and list the validation and test images.

    Returns:
        The cases, and one problem line per missing folder, image without mask, mask without image, empty
        training folder, file leading out of the input, or duplicate case id.
    """
    problems: list[str] = []
    training, ground_truth = (_open_part(root, name, stack) for name in (TRAINING_INPUT, TRAINING_GROUND_TRUTH))
    for folder, name in ((training, TRAINING_INPUT), (ground_truth, TRAINING_GROUND_TRUTH)):
        if folder is None:
            problems.append(_missing_part_message(root, name))
    if training is None or ground_truth is None:
        return [], problems
    mask_files = [p for p in ground_truth.iterdir()
                  if p.is_file() and p.name.lower().endswith(MASK_SUFFIX) and not p.name.startswith(".")]
    masks = {p.name[:-len(MASK_SUFFIX)].lower(): p for p in _checked(mask_files, ground_truth, problems)}
    images = _checked(_images(training), training, problems)
    if not images:
        problems.append(f"{training}: no training images (*.jpg) found.")
    cases = []
    for image in images:
        mask = masks.pop(image.stem.lower(), None)
        if mask is None:
            problems.append(f"{image}: no mask: expected {ground_truth / (image.stem + MASK_SUFFIX)}.")
        else:
            cases.append(IsicCase(sanitize_case_id(image.stem), image, mask))
    problems += [f"{mask}: mask without an image: expected {training / (mask.name[:-len(MASK_SUFFIX)] + '.jpg')}."
                 for mask in masks.values()]
    for name in TEST_INPUTS:
        folder = _open_part(root, name, stack)
        if folder is not None:
            cases += [IsicCase(sanitize_case_id(p.stem), p, None)
                      for p in _checked(_images(folder), folder, problems)]
    problems += [f"{case.image_file}: duplicate case id '{case.case_id}': also {first.image_file}; remove one."
                 for case, first in case_id_collisions(cases, lambda case: case.case_id)]
    return cases, problems


def image_header(file: Path) -> tuple[tuple[int, int], int]:
    """``((width, height), colour channels)`` of a 2D 8-bit image, from its header.

    Raises:
        ValueError: unreadable, not 2D, or not 8-bit (the message names ``file``).
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(file))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise ValueError(f"{file}: cannot read image: {lines[-1] if lines else error}") from None
    if reader.GetDimension() != 2 or reader.GetPixelID() not in (sitk.sitkUInt8, sitk.sitkVectorUInt8):
        raise ValueError(f"{file}: expected a 2D 8-bit image, got {reader.GetDimension()}D "
                         f"{sitk.GetPixelIDValueAsString(reader.GetPixelID())} of size {reader.GetSize()}.")
    width, height = reader.GetSize()
    return (width, height), reader.GetNumberOfComponents()


def mask_value_problems(mask: np.ndarray, file: Path, binarize_threshold: int | None) -> list[str]:
    """A problem line when ``mask`` holds values other than 0 and 255 and no ``binarize_threshold`` is given."""
    if binarize_threshold is not None:
        return []
    values = np.unique(mask)
    stray = values[~np.isin(values, MASK_VALUES)]
    if not stray.size:
        return []
    return [f"{file}: mask values {format_values(stray[:10])}{' ...' if stray.size > 10 else ''} are neither 0 nor "
            f"255; ISIC masks are 0/255. If the mask was resaved lossily (JPEG-like values), pass "
            f"--binarize-threshold T (values above T become lesion)."]


def validate_case(case: IsicCase, *, binarize_threshold: int | None) -> list[str]:
    """One problem line per unreadable image or mask, image that is neither grey nor RGB, size mismatch, or mask
    value."""
    try:
        (width, height), channels = image_header(case.image_file)
    except ValueError as error:
        return [str(error)]
    problems = []
    if channels not in (1, 3):
        problems.append(f"{case.image_file}: expected an RGB (or grey) image, got {channels} channels.")
    if not case.is_training:
        return problems
    try:
        mask = read_slice(case.mask_file)
    except ValueError as error:
        return problems + [str(error)]
    if mask.shape != (height, width):
        problems.append(f"{case.image_file} ({width}×{height}) and {case.mask_file} ({mask.shape[1]}×"
                        f"{mask.shape[0]}): image and mask sizes (width × height) differ.")
    return problems + mask_value_problems(mask, case.mask_file, binarize_threshold)


# ----------------------------------------------------------------------------------------------------------------
# converting one image

def read_rgb(file: Path) -> np.ndarray:
    """The image as (H, W, 3) uint8; a grey image is repeated into R, G and B."""
    array = read_slice(file, grayscale=False)
    if array.ndim == 2:
        logger.info("%s: grey image, repeated into R, G and B", file)
        array = np.repeat(array[..., None], 3, axis=-1)
    return array


def binarize(mask: np.ndarray, binarize_threshold: int | None) -> np.ndarray:
    """uint8 0/1: 255 → 1, or, with a threshold, values above it → 1."""
    lesion = mask == 255 if binarize_threshold is None else mask > binarize_threshold
    return lesion.astype(np.uint8)


def resize(array: np.ndarray, size_wh: tuple[int, int], *, is_label: bool) -> np.ndarray:
    """``array`` ((H, W) or (H, W, 3) uint8) resampled to ``size_wh`` so that the outer pixel edges stay aligned.

    Images are averaged over whole pixel blocks (``BinShrink``), Gaussian smoothed with sigma = (factor - 1) / 2
    input pixels (scikit-image's anti-aliasing default, at least half a block), then interpolated linearly; labels
    take the nearest pixel.
    """
    image = sitk.GetImageFromArray(array, isVector=array.ndim == 3)  # spacing 1, origin 0: units are input pixels
    spacing = [n / m for n, m in zip(image.GetSize(), size_wh)]
    if is_label:
        interpolator = sitk.sitkNearestNeighbor
    else:
        interpolator = sitk.sitkLinear
        image = sitk.Cast(image, sitk.sitkVectorFloat32 if array.ndim == 3 else sitk.sitkFloat32)
        # blocks of at most half the factor, so the dropped remainder stays inside the outermost output pixels
        shrink = [max(1, int(s // 2)) for s in spacing]
        if max(shrink) > 1:
            image = sitk.BinShrink(image, shrink)
        image = sitk.SmoothingRecursiveGaussian(image, [max((s - 1) / 2, 0.5 * f) for s, f in zip(spacing, shrink)])
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(n) for n in size_wh])
    resampler.SetOutputSpacing(spacing)
    resampler.SetOutputOrigin([(s - 1) / 2 for s in spacing])
    resampler.SetInterpolator(interpolator)
    resampled = sitk.GetArrayFromImage(resampler.Execute(image))
    return resampled if is_label else np.clip(np.round(resampled), 0, 255).astype(np.uint8)


def downscaled_size(size_wh: tuple[int, int], max_size: int) -> tuple[int, int]:
    """``size_wh`` scaled so that the longer side is ``max_size`` (aspect ratio kept, each side >= 1)."""
    scale = max_size / max(size_wh)
    return tuple(max(1, round(n * scale)) for n in size_wh)  # type: ignore[return-value]


def normal_crop_positions(lesion: np.ndarray, *, crop_size: int, margin: int, max_crops: int,
                          seed: int) -> list[tuple[int, int]]:
    """Top-left ``(y, x)`` of up to ``max_crops`` lesion-free windows of ``crop_size``² pixels.

    Candidates lie on a grid with stride ``crop_size`` (so crops never overlap); a candidate is free when the
    window grown by ``margin`` on every side (clipped to the image) holds no lesion pixel. The choice among free
    candidates is drawn with ``numpy.random.default_rng(seed)``; the result is in raster order.
    """
    height, width = lesion.shape
    if max_crops < 1 or crop_size < 1:
        return []
    grown = crop_size + margin  # slices past the far edge stop at the image border
    grid = [(y, x) for y in range(0, height - crop_size + 1, crop_size)
            for x in range(0, width - crop_size + 1, crop_size)]
    free = [(y, x) for y, x in grid if not lesion[max(0, y - margin):y + grown, max(0, x - margin):x + grown].any()]
    if not free:
        return []
    chosen = np.random.default_rng(seed).choice(len(free), size=min(max_crops, len(free)), replace=False)
    return [free[i] for i in sorted(chosen)]


def _write_png(array: np.ndarray, path: Path) -> None:
    write_image(sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=array.ndim == 3), path,
                compress=False)


def convert_case(case: IsicCase, *, staging_dir: Path, max_size: int | None, binarize_threshold: int | None,
                 crops: CropSettings) -> tuple[CaseRecord, ...]:
    """Write the image (and, for training images, the mask and the normal crops); one record per written case."""
    rgb = read_rgb(case.image_file)
    lesion = binarize(read_slice(case.mask_file), binarize_threshold) if case.is_training else None
    size_wh = (rgb.shape[1], rgb.shape[0])
    if max_size is not None and max(size_wh) > max_size:
        size_wh = downscaled_size(size_wh, max_size)
        rgb = resize(rgb, size_wh, is_label=False)
        lesion = None if lesion is None else resize(lesion, size_wh, is_label=True)
    if not case.is_training:
        _write_png(rgb, staging_dir / "imagesTs" / f"{case.case_id}_0000{FILE_ENDING}")
        return (CaseRecord(case.case_id, False, SPACING_2D, extra={"size_wh": size_wh}),)
    if not lesion.any():
        logger.warning("%s: the mask is empty, but the image is still labelled '%s'", case.mask_file, DISEASED)
    _write_png(rgb, staging_dir / "imagesTr" / f"{case.case_id}_0000{FILE_ENDING}")
    _write_png(lesion, staging_dir / "labelsTr" / f"{case.case_id}{FILE_ENDING}")
    records = [CaseRecord(case.case_id, True, SPACING_2D, voxel_counts(lesion, len(LABELS)),
                          {"size_wh": size_wh, "image_label": DISEASED})]
    crop_size = min(crops.crop_size, min(size_wh) // 2)
    positions = normal_crop_positions(lesion, crop_size=crop_size, margin=crops.margin, max_crops=crops.max_crops,
                                      seed=zlib.crc32(case.case_id.encode()))
    for k, (y, x) in enumerate(positions, start=1):
        crop_id = f"{case.case_id}_normal{k}"
        _write_png(rgb[y:y + crop_size, x:x + crop_size], staging_dir / "imagesTr" / f"{crop_id}_0000{FILE_ENDING}")
        _write_png(np.zeros((crop_size, crop_size), np.uint8), staging_dir / "labelsTr" / f"{crop_id}{FILE_ENDING}")
        records.append(CaseRecord(crop_id, True, SPACING_2D, (crop_size * crop_size, 0),
                                  {"size_wh": (crop_size, crop_size), "image_label": NORMAL,
                                   "crop_of": case.case_id, "crop_yx": (y, x)}))
    return tuple(records)


# ----------------------------------------------------------------------------------------------------------------
# the whole dataset

def _check_arguments(*, max_size: int | None, binarize_threshold: int | None, crops: CropSettings) -> None:
    if max_size is not None and max_size < 8:
        raise ValueError(f"max_size must be >= 8 pixels, got {max_size}.")
    if binarize_threshold is not None and not 0 <= binarize_threshold <= 254:
        raise ValueError(f"binarize_threshold must be in 0..254 (values above it become lesion), got "
                         f"{binarize_threshold}.")
    if crops.max_crops < 0 or crops.crop_size < 1 or crops.margin < 0:
        raise ValueError(f"normal_crops must be >= 0, crop_size >= 1 and crop_margin >= 0, got {crops.max_crops}, "
                         f"{crops.crop_size} and {crops.margin}.")


def _notes(records: Sequence[CaseRecord], *, max_size: int | None, crops: CropSettings) -> list[str]:
    sizes = [record.extra["size_wh"] for record in records if "crop_of" not in record.extra]
    areas = [w * h for w, h in sizes]
    smallest, largest = sizes[int(np.argmin(areas))], sizes[int(np.argmax(areas))]
    notes = [f"image size (width × height): smallest {smallest[0]}×{smallest[1]}, largest {largest[0]}×{largest[1]}"
             + (f" (downscaled to at most {max_size} px)" if max_size is not None else "")]
    image_labels = Counter(record.extra["image_label"] for record in records if record.is_training)
    if crops.max_crops:
        notes.append(f"normal crops: {image_labels[NORMAL]} (up to {crops.max_crops} per image, {crops.crop_size} px "
                     f"or half the shorter side, margin {crops.margin} px)")
    notes.append(f"{IMAGE_LABELS_FILE}: {image_labels[DISEASED]} {DISEASED}, {image_labels[NORMAL]} {NORMAL}")
    return notes


def convert_with_summary(source_dir: Path, *, max_size: int | None = None, binarize_threshold: int | None = None,
                         normal_crops: int = 0, crop_size: int = DEFAULT_CROP_SIZE,
                         crop_margin: int = DEFAULT_CROP_MARGIN, dataset_id: int = DATASET_ID,
                         dataset_name: str = DATASET_NAME, output_root: Path | None = None, overwrite: bool = False,
                         num_processes: int = 1) -> DatasetSummary:
    """:func:`convert`, returning the summary that ``main`` prints."""
    crops = CropSettings(normal_crops, crop_size, crop_margin)
    _check_arguments(max_size=max_size, binarize_threshold=binarize_threshold, crops=crops)
    final_dir = prepare_output(source_dir, dataset_id=dataset_id, dataset_name=dataset_name,
                               output_root=output_root, overwrite=overwrite)
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(source_folder(Path(source_dir)))
        cases, problems = find_cases(root, stack)
        checks = map_cases(partial(validate_case, binarize_threshold=binarize_threshold), cases,
                           num_processes=num_processes, description=f"Dataset{dataset_id:03d} check")
        raise_if_problems(problems + [problem for per_case in checks for problem in per_case], Path(source_dir))

        with staged_dataset(final_dir, overwrite=overwrite) as staging:
            for sub_folder in ("imagesTr", "labelsTr", "imagesTs"):
                (staging / sub_folder).mkdir()
            written = map_cases(partial(convert_case, staging_dir=staging, max_size=max_size,
                                        binarize_threshold=binarize_threshold, crops=crops),
                                cases, num_processes=num_processes, description=f"Dataset{dataset_id:03d} convert")
            records = [record for per_case in written for record in per_case]
            image_labels = {r.case_id: r.extra["image_label"] for r in sorted(records, key=lambda r: r.case_id)
                            if r.is_training}
            (staging / IMAGE_LABELS_FILE).write_text(json.dumps(image_labels, indent=1) + "\n", encoding="utf-8")
            write_dataset_json(
                staging, channel_names=CHANNEL_NAMES, labels=LABELS, num_training=len(image_labels),
                file_ending=FILE_ENDING, dataset_name=final_dir.name, overwrite_image_reader_writer=READER_WRITER,
                nnunet_mm_block={"source": str(Path(source_dir).resolve()), "converter": Path(__file__).stem,
                                 "channel_acquisition": "colour_planes",  # R, G, B of one photograph
                                 "image_labels": IMAGE_LABELS_FILE},
                description="ISIC 2018 Task 1 lesion boundary segmentation: dermoscopy RGB images (JPEG converted "
                            "to lossless PNG), masks 255 → 1. image_labels.json holds image-level labels "
                            "(diseased / normal crops) for weak supervision.",
                reference="Codella et al., arXiv:1902.03368 (ISIC 2018); Tschandl et al., Sci. Data 2018 "
                          "(HAM10000)",
                license="ISIC archive terms of use (see the LICENSE.txt of the download)",
            )
    summary = summarize(records, output_dir=final_dir, channel_names=CHANNEL_NAMES, labels=LABELS,
                        notes=_notes(records, max_size=max_size, crops=crops))
    logger.info("converted %d training and %d test case(s) into %s", summary.num_training, summary.num_test,
                final_dir)
    return summary


def convert(source_dir: Path, *, max_size: int | None = None, binarize_threshold: int | None = None,
            normal_crops: int = 0, crop_size: int = DEFAULT_CROP_SIZE, crop_margin: int = DEFAULT_CROP_MARGIN,
            dataset_id: int = DATASET_ID, dataset_name: str = DATASET_NAME, output_root: Path | None = None,
            overwrite: bool = False, num_processes: int = 1) -> Path:
    """Convert ISIC 2018 Task 1 into ``<output_root>/Dataset508_ISIC2018`` and return that folder; the other
    arguments and the errors are those of every converter (:mod:`nnunet_mm.dataset_conversion`).

    Args:
        source_dir: the folder holding the ISIC 2018 folders (or their zips), or an archive of it; only read.
        max_size: downscale images whose longer side exceeds this many pixels (None: keep the size).
        binarize_threshold: accept masks with values other than 0/255; values above it become lesion.
        normal_crops: lesion-free crops per training image, as extra cases with an all-zero label (0: none).
        crop_size: side of the crops in pixels (at most half the shorter image side is used).
        crop_margin: lesion-free margin around each crop in pixels.
    """
    return convert_with_summary(source_dir, max_size=max_size, binarize_threshold=binarize_threshold,
                                normal_crops=normal_crops, crop_size=crop_size, crop_margin=crop_margin,
                                dataset_id=dataset_id, dataset_name=dataset_name, output_root=output_root,
                                overwrite=overwrite, num_processes=num_processes).output_dir


# ----------------------------------------------------------------------------------------------------------------
# command line

def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The converter's options."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Convert ISIC 2018 Task 1 (dermoscopy lesion segmentation) into the 2D RGB PNG nnU-Net "
                               "raw dataset Dataset508_ISIC2018.")
    parser.add_argument("source_dir", type=Path,
                        help=f"folder holding {TRAINING_INPUT}/, {TRAINING_GROUND_TRUTH}/ and optionally "
                             f"{' and '.join(TEST_INPUTS)} (folders or their .zip), or an archive of it")
    parser.add_argument("--max-size", type=int, default=None, metavar="N",
                        help="downscale images whose longer side exceeds N pixels, keeping the aspect ratio")
    parser.add_argument("--binarize-threshold", type=int, default=None, metavar="T",
                        help="accept masks with values other than 0/255: values above T become lesion")
    parser.add_argument("--normal-crops", type=int, default=0, metavar="K",
                        help="up to K lesion-free crops per training image as extra 'normal' cases (default: 0)")
    parser.add_argument("--crop-size", type=int, default=DEFAULT_CROP_SIZE,
                        help="crop side in pixels, at most half the shorter image side (default: %(default)s)")
    parser.add_argument("--crop-margin", type=int, default=DEFAULT_CROP_MARGIN,
                        help="lesion-free margin around each crop in pixels (default: %(default)s)")
    add_common_arguments(parser, dataset_id=DATASET_ID, dataset_name=DATASET_NAME)
    return parser


main = converter_main(convert_with_summary, build_parser)


if __name__ == "__main__":
    sys.exit(main())
