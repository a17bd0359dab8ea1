"""Pseudo masks from the label-transfer GAN (methods.md §4.4): attention mask → binary lesion mask → nnU-Net dataset.

``G_AB`` translates each diseased image to normal; its attention mask ``m`` is zeroed outside the image foreground
and binarised, either by Otsu's threshold or by the public code's Otsu-based watershed (a): Otsu → opening 3×3 ×2 →
sure background = dilation 7×7 ×3 → sure foreground = distance transform > 0.7·max → watershed from these markers
on the mask's gradient. Deviation: the dense-CRF option (b) is not implemented (pydensecrf is not a dependency, and
its α was chosen on the test set). Before binarising, the side of ``m`` that is the lesion is decided from the image
labels (:mod:`nnunet_mm.weak.polarity`, an extension of ours: a GAN can come out with ``m`` bright on everything but
the lesion).

:func:`export_pseudo_mask_dataset` writes a new raw dataset: the images (copied, the source is only read), the
pseudo masks as ``labelsTr`` (normal cases all background; slices of 3D cases stacked back into volumes), a
dataset.json with labels ``{background, lesion, ignore}`` (the ignore label lets :class:`WeakLabelTrainer` mark
uncertain voxels) and the image-level labels inline, and ``pseudo_masks.png``. When the source has true masks, their
Dice against the pseudo masks is written to ``pseudo_mask_dice.json`` (evaluation only; nothing is selected on it).
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage
from skimage.filters import sobel, threshold_otsu
from skimage.morphology import dilation, footprint_rectangle, opening
from skimage.segmentation import watershed
from skimage.transform import resize

from nnunet_mm.evaluation.metrics import defined_or_none, dice, mean_of_defined
from nnunet_mm.io.images import write_image
from nnunet_mm.io.raw_dataset import case_channel_files
from nnunet_mm.io.staging import check_output, staged_dataset
from nnunet_mm.settings import BLOCK_KEY, block_of, read_settings
from nnunet_mm.io.figure_style import figure_style
from nnunet_mm.weak.cltn_gan import load_generator
from nnunet_mm.weak.image_labels import DISEASED, IMAGE_LABELS_KEY, NORMAL, read_image_labels
from nnunet_mm.weak.polarity import (POLARITIES, PolarityDecision, decide_attention_polarity,
                                     fit_healthy_appearance, user_polarity)
from nnunet_mm.weak.weak_images import WeakImage, load_weak_images

logger = logging.getLogger(__name__)

BINARIZATION_METHODS = ("otsu", "watershed")
PSEUDO_LABELS = {"background": 0, "lesion": 1, "ignore": 2}


def binarize_attention_mask(attention_mask: np.ndarray, foreground: np.ndarray, method: str = "otsu") -> np.ndarray:
    """Binary lesion mask from an attention mask.

    Args:
        attention_mask: (H, W) float in [0, 1].
        foreground: (H, W) bool; the lesion is searched only there.
        method: ``"otsu"`` or ``"watershed"`` (see the module docstring).

    Returns:
        (H, W) bool, False outside ``foreground``; all False when the mask is flat there.

    Raises:
        ValueError: an unknown method or mismatched shapes.
    """
    if method not in BINARIZATION_METHODS:
        raise ValueError(f"unknown binarisation method {method!r}; choose one of {list(BINARIZATION_METHODS)}.")
    if attention_mask.shape != foreground.shape:
        raise ValueError(f"attention mask {attention_mask.shape} and foreground {foreground.shape} differ in shape.")
    mask = np.where(foreground, attention_mask, 0.0).astype(np.float64)
    values = mask[foreground]
    if values.size == 0 or np.ptp(values) < 1e-6:
        return np.zeros_like(foreground, dtype=bool)
    lesion = (mask > threshold_otsu(values)) & foreground
    if method == "otsu":
        return lesion
    square = lambda n: footprint_rectangle((n, n))  # noqa: E731
    opened = lesion
    for _ in range(2):
        opened = opening(opened, square(3))
    sure_background = opened
    for _ in range(3):
        sure_background = dilation(sure_background, square(7))
    distance = ndimage.distance_transform_edt(opened)
    if distance.max() == 0:
        return np.zeros_like(foreground, dtype=bool)
    sure_foreground = distance > 0.7 * distance.max()
    markers, _ = ndimage.label(sure_foreground)
    markers = markers + 1  # 1 = sure background, 2.. = lesion seeds
    markers[sure_background & ~sure_foreground] = 0  # unknown: decided by the watershed
    regions = watershed(sobel(mask), markers)
    return (regions > 1) & foreground


@torch.no_grad()
def attention_masks(generator: torch.nn.Module, images: list[WeakImage], *, device: torch.device,
                    batch_size: int = 8) -> list[np.ndarray]:
    """``G_AB``'s attention mask (size, size) float32 for each image."""
    masks = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.stack([i.image for i in images[start:start + batch_size]])).to(device)
        masks += list(generator(batch).attention_mask[:, 0].float().cpu().numpy())
    return masks


def attention_polarity(images: list[WeakImage], diseased: list[WeakImage], masks: list[np.ndarray], method: str,
                       rule: str = "auto") -> PolarityDecision:
    """Whether ``masks`` (the diseased images' attention, as the GAN made it) must be inverted; see
    :mod:`nnunet_mm.weak.polarity`. ``rule``: ``"auto"`` decides from the images, the others impose."""
    if rule != "auto":
        return user_polarity(rule)
    regions = [binarize_attention_mask(mask, image.foreground, method) for image, mask in zip(diseased, masks)]
    return decide_attention_polarity(diseased, regions, fit_healthy_appearance(images))


def pseudo_mask_of(image: WeakImage, attention_mask: np.ndarray, method: str) -> np.ndarray:
    """(H, W) uint8 pseudo mask at the image's original size (1 lesion)."""
    mask = resize(attention_mask, image.original_shape, order=1, mode="edge", preserve_range=True)
    foreground = resize(image.foreground.astype(np.uint8), image.original_shape, order=0, mode="edge",
                        preserve_range=True).astype(bool)
    return binarize_attention_mask(mask, foreground, method).astype(np.uint8)


def export_pseudo_mask_dataset(source_folder: Path, model_dir: Path, target_folder: Path, *, method: str = "otsu",
                               polarity: str = "auto", lesion_labels: tuple[int, ...] | None = None,
                               overwrite: bool = False,
                               device: torch.device = torch.device("cpu"), progress: bool = True) -> Path:
    """Write the pseudo-mask dataset (see the module docstring) and return ``target_folder``.

    Args:
        source_folder: the raw dataset the GAN was trained on (only read).
        model_dir: folder with ``generator_ab.safetensors``.
        target_folder: ``$nnUNet_raw/DatasetYYY_Name`` to create.
        method: binarisation, ``"otsu"`` or ``"watershed"``.
        polarity: which side of the attention mask is the lesion: ``"auto"`` (decided from the normal images, see
            :mod:`nnunet_mm.weak.polarity`), ``"attention"`` (as the GAN made it) or ``"inverted"``. The decision is
            written to ``attention_polarity.json`` and the dataset.json's notes.
        lesion_labels: true-mask values that count as lesion for the Dice report (None: every foreground value).
        overwrite: replace an existing ``target_folder``.

    Raises:
        FileExistsError: ``target_folder`` exists and ``overwrite`` is False (checked before any work).
        ValueError: ``target_folder`` is, holds or lies inside ``source_folder`` or ``model_dir``.
        FileNotFoundError: no generator in ``model_dir``; missing source files.
    """
    source_folder, target_folder = Path(source_folder), Path(target_folder)
    check_output(target_folder, overwrite=overwrite, sources=[source_folder, model_dir])
    if method not in BINARIZATION_METHODS:
        raise ValueError(f"unknown binarisation method {method!r}; choose one of {list(BINARIZATION_METHODS)}.")
    if polarity not in POLARITIES:
        raise ValueError(f"unknown attention polarity {polarity!r}; choose one of {list(POLARITIES)}.")
    generator = load_generator(model_dir, device)
    size = _generator_size(model_dir)
    source_json = json.loads((source_folder / "dataset.json").read_text(encoding="utf-8"))
    settings = read_settings(source_json, str(source_folder / "dataset.json"))
    file_ending = source_json["file_ending"]
    images = load_weak_images(source_folder, size=size, lesion_labels=lesion_labels, min_foreground_fraction=0.0,
                              progress=progress)
    diseased = [image for image in images if image.image_label == DISEASED]
    masks = attention_masks(generator, diseased, device=device)
    decision = attention_polarity(images, diseased, masks, method, polarity)
    logger.log(logging.WARNING if decision.inverted else logging.INFO, "%s", decision.describe())
    if decision.inverted:
        masks = [1.0 - mask for mask in masks]
    pseudo = {(image.case_id, image.slice_index): pseudo_mask_of(image, mask, method)
              for image, mask in zip(diseased, masks)}
    cases = case_channel_files(source_folder / "imagesTr", file_ending, None)
    case_labels = _case_labels(images, read_image_labels(settings.method(IMAGE_LABELS_KEY), source_folder,
                                                         settings.source))
    report: dict[str, float | None] = {}
    with staged_dataset(target_folder, overwrite=overwrite) as staging:
        (staging / "imagesTr").mkdir()
        (staging / "labelsTr").mkdir()
        iterator = sorted(cases)
        if progress:
            from tqdm import tqdm
            iterator = tqdm(iterator, desc="writing pseudo masks", unit="case")
        for case in iterator:
            for file in cases[case]:
                shutil.copy2(file, staging / "imagesTr" / file.name)
            reference = sitk.ReadImage(str(cases[case][0]))
            label = _case_pseudo_label(case, reference, pseudo)
            label_image = sitk.GetImageFromArray(label)
            label_image.CopyInformation(_scalar_geometry(reference))
            write_image(label_image, staging / "labelsTr" / f"{case}{file_ending}")
            truth_file = source_folder / "labelsTr" / f"{case}{file_ending}"
            if truth_file.is_file() and case_labels[case] == DISEASED:
                truth = sitk.GetArrayFromImage(sitk.ReadImage(str(truth_file)))
                truth = truth > 0 if lesion_labels is None else np.isin(truth, lesion_labels)
                report[case] = defined_or_none(dice(truth.reshape(label.shape), label))
        dataset_json = _pseudo_dataset_json(source_json, settings.source, target_folder.name, len(cases),
                                            case_labels, method, decision)
        read_settings(dataset_json, str(target_folder / "dataset.json"))
        (staging / "dataset.json").write_text(json.dumps(dataset_json, indent=2) + "\n", encoding="utf-8")
        if report:
            summary = {"method": method, "attention_inverted": decision.inverted, "mean_dice": defined_or_none(mean_of_defined(report.values())),
                       "per_case": report}
            (staging / "pseudo_mask_dice.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        (staging / "attention_polarity.json").write_text(json.dumps(decision.to_json(), indent=1) + "\n",
                                                          encoding="utf-8")
        save_pseudo_mask_overview(diseased, masks, pseudo, staging / "pseudo_masks.png", inverted=decision.inverted)
    logger.info("wrote %s (%d cases, %d diseased images)", target_folder, len(cases), len(diseased))
    return target_folder


def _generator_size(model_dir: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(Path(model_dir) / "generator_ab.safetensors"), framework="pt") as handle:
        return int(json.loads(handle.metadata()["config"])["image_size"])


def _case_labels(images: list[WeakImage], image_labels: dict[str, str] | None) -> dict[str, str]:
    """Per case: its declared label, or diseased when any of its images (slices) is."""
    labels = dict(image_labels or {})
    for image in images:
        if image.image_label == DISEASED:
            labels[image.case_id] = DISEASED
        labels.setdefault(image.case_id, NORMAL)
    return labels


def _scalar_geometry(image: sitk.Image) -> sitk.Image:
    """An image with ``image``'s geometry and one component (RGB PNGs have three)."""
    if image.GetNumberOfComponentsPerPixel() == 1:
        return image
    return sitk.VectorIndexSelectionCast(image, 0)


def _case_pseudo_label(case: str, reference: sitk.Image, pseudo: dict) -> np.ndarray:
    shape = sitk.GetArrayFromImage(_scalar_geometry(reference)).shape
    label = np.zeros(shape, dtype=np.uint8)
    for (case_id, slice_index), mask in pseudo.items():
        if case_id != case:
            continue
        if slice_index is None:
            label[...] = mask.reshape(shape)
        else:
            label[slice_index] = mask
    return label


def _pseudo_dataset_json(source: dict, source_file: str, name: str, num_training: int, case_labels: dict[str, str],
                         method: str, decision: PolarityDecision) -> dict:
    """The source's dataset.json with pseudo-mask labels (ignore declared) and the image labels inline."""
    block = dict(block_of(source, source_file))
    block[IMAGE_LABELS_KEY] = dict(sorted(case_labels.items()))
    block["notes"] = (f"labelsTr are CLTN pseudo masks ({method}); normal cases are all background; label 'ignore' "
                      f"is used by WeakLabelTrainer's refinement. {decision.describe()}.")
    dataset_json = {key: value for key, value in source.items() if key not in ("labels", "numTraining", "name",
                                                                              "regions_class_order")}
    dataset_json.update({"name": name, "labels": dict(PSEUDO_LABELS), "numTraining": num_training, BLOCK_KEY: block})
    return dataset_json


@figure_style()
def save_pseudo_mask_overview(images: list[WeakImage], attention: list[np.ndarray], pseudo: dict, png: Path,
                              max_images: int = 8, inverted: bool = False) -> Path:
    """A PNG with, per diseased image (up to ``max_images``): the image, the attention mask (``1 - m`` when
    ``inverted``), the pseudo mask."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(range(0, len(images), max(1, len(images) // max_images)))[:max_images] or [0]
    figure, axes = plt.subplots(3, len(shown), figsize=(2.2 * len(shown), 6.6), squeeze=False)
    for column, index in enumerate(shown):
        if index >= len(images):
            break
        image = images[index]
        display = (image.image[:3] if image.image.shape[0] >= 3 else image.image[:1]).transpose(1, 2, 0)
        display = (display + 1) / 2
        axes[0, column].imshow(display.squeeze(-1) if display.shape[-1] == 1 else display, cmap="gray")
        title = image.case_id if image.slice_index is None else f"{image.case_id} z{image.slice_index}"
        axes[0, column].set_title(title, fontsize=7)
        axes[1, column].imshow(attention[index], cmap="magma", vmin=0, vmax=1)
        axes[2, column].imshow(pseudo[(image.case_id, image.slice_index)], cmap="gray", vmin=0, vmax=1)
    for row, name in enumerate(("image", "1 - attention m" if inverted else "attention m", "pseudo mask")):
        axes[row, 0].set_ylabel(name)
    for axis in axes.flat:
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"CLTN pseudo masks: {min(len(shown), len(images))} of {len(images)} diseased image(s); "
                    f"{'1 - m (the GAN attended to the rest)' if inverted else 'attention m'} in [0, 1] (bright: "
                    f"lesion), pseudo mask white = lesion", fontsize=9)
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return png
