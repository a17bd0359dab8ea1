"""Seeded ISIC-like synthetic data for weak supervision: RGB "skin" images, diseased ones with a dark irregular
blob (the lesion), normal ones without, in the layout of converter 508 (PNG, ``NaturalImage2DIO``, image labels in
the ``'nnunet_mm'`` block)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunet_mm.io.images import write_image
from nnunet_mm.io.staging import new_dataset_folder, staged_dataset
from nnunet_mm.settings import BLOCK_KEY
from nnunet_mm.weak.image_labels import DISEASED, IMAGE_LABELS_KEY, NORMAL


def make_skin_image(rng: np.random.Generator, size: int, with_lesion: bool) -> tuple[np.ndarray, np.ndarray]:
    """An (size, size, 3) uint8 skin-like image and its (size, size) uint8 lesion mask (all 0 without a lesion)."""
    tone = np.array([200.0, 150.0, 125.0]) + rng.normal(0, 12, 3)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), size / 24) * 60
    image = tone[None, None, :] + texture[..., None] + rng.normal(0, 4, (size, size, 3))
    mask = np.zeros((size, size), dtype=np.uint8)
    if with_lesion:
        y, x = np.mgrid[:size, :size].astype(float)
        center = rng.uniform(0.3, 0.7, 2) * size
        radii = rng.uniform(0.12, 0.22, 2) * size
        angle = rng.uniform(0, np.pi)
        dy, dx = y - center[0], x - center[1]
        u = (dx * np.cos(angle) + dy * np.sin(angle)) / radii[1]
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / radii[0]
        wobble = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), size / 12) * 2.0
        mask = ((u ** 2 + v ** 2) < 1.0 + wobble).astype(np.uint8)
        mask = ndimage.binary_opening(mask, iterations=1).astype(np.uint8)
        lesion_colour = np.array([95.0, 60.0, 45.0]) + rng.normal(0, 8, 3)
        soft = ndimage.gaussian_filter(mask.astype(float), 1.0)[..., None]
        image = image * (1 - soft) + (lesion_colour[None, None, :] + texture[..., None] * 0.5) * soft
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mask


def write_skin_lesion_dataset(raw_root: Path, *, dataset_id: int, name: str = "SkinBlobs", num_diseased: int,
                              num_normal: int, size: int = 64, seed: int = 0, overwrite: bool = False) -> Path:
    """Write ``raw_root/DatasetXXX_<name>``: imagesTr (RGB PNG), labelsTr (true masks, for evaluation), dataset.json
    with ``"image_labels"`` inline. Returns the dataset folder."""
    folder = new_dataset_folder(dataset_id, name, output_root=Path(raw_root))
    rng = np.random.default_rng(seed)
    image_labels = {}
    with staged_dataset(folder, overwrite=overwrite) as staging:
        (staging / "imagesTr").mkdir()
        (staging / "labelsTr").mkdir()
        for index in range(num_diseased + num_normal):
            diseased = index < num_diseased
            case = f"skin_{index:03d}"
            image, mask = make_skin_image(rng, size, diseased)
            write_image(sitk.GetImageFromArray(image, isVector=True), staging / "imagesTr" / f"{case}_0000.png",
                        compress=False)
            write_image(sitk.GetImageFromArray(mask), staging / "labelsTr" / f"{case}.png", compress=False)
            image_labels[case] = DISEASED if diseased else NORMAL
        dataset_json = {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "lesion": 1},
                        "numTraining": len(image_labels), "file_ending": ".png",
                        "overwrite_image_reader_writer": "NaturalImage2DIO", "name": folder.name,
                        BLOCK_KEY: {"channel_acquisition": "colour_planes", IMAGE_LABELS_KEY: image_labels}}
        (staging / "dataset.json").write_text(json.dumps(dataset_json, indent=1) + "\n", encoding="utf-8")
    return folder
