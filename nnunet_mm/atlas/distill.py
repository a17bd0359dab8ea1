"""Distillation of multi-atlas labels into a plain nnU-Net dataset (paper 004's deployment path, methods.md §5.5).

When the target modality has no labels at all, the fused atlas labels become its training labels: each voxel gets
the class of highest fused probability, and voxels where that probability is below ``confidence_threshold`` (τ ≈ 0.6,
the atlases disagree) get nnU-Net's ``ignore`` label (the highest label value), so nnU-Net's loss skips them. The
result is an ordinary raw dataset (the target's image channels, no prior channels) for ``nnUNetv2_train ... -tr
nnUNetTrainer``, which then gives sliding-window inference and plain deployment.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from nnunet_mm.atlas.prior_channels import prior_channel_indices
from nnunet_mm.settings import block_of, read_settings

logger = logging.getLogger(__name__)


def distilled_label(foreground_probabilities: np.ndarray, confidence_threshold: float, ignore_value: int) -> np.ndarray:
    """Hard label with ignore: (C-1, *spatial) fused foreground probabilities → (*spatial) uint8.

    Background probability is ``1 − Σ foreground``; the label is the argmax, replaced by ``ignore_value`` where
    the winning probability is below ``confidence_threshold``.
    """
    background = np.clip(1.0 - foreground_probabilities.sum(0, keepdims=True), 0.0, 1.0)
    probabilities = np.concatenate([background, foreground_probabilities])
    label = probabilities.argmax(0).astype(np.uint8)
    label[probabilities.max(0) < confidence_threshold] = ignore_value
    return label


def build_distilled_dataset(mas_dataset: int | str | Path, *, output_id: int, output_name: str | None = None,
                            confidence_threshold: float = 0.6, output_root: Path | None = None,
                            overwrite: bool = False) -> Path:
    """Write ``Dataset<output_id>_<name>`` with fused labels (uncertain voxels ignored) for a plain nnU-Net.

    Args:
        mas_dataset: a dataset written by ``nnunet_mm mas`` (id, name or folder).
        output_id / output_name: the new dataset (name default: the MAS dataset's + ``_Distilled``).
        confidence_threshold: τ in (0.5, 1]; voxels whose fused winning probability is below it are ignored.
        output_root: default ``$nnUNet_raw``.
        overwrite: replace an existing output.

    Returns:
        The new dataset folder; ``nnunet_mm_qa/distill_summary.json`` records the ignored share per case and, where
        the MAS dataset carries true labels, the Dice of the distilled labels on the confidently labelled voxels.
    """
    from tqdm import tqdm

    from nnunet_mm.io.dataset_json import write_dataset_json
    from nnunet_mm.io.images import read_image, write_image
    from nnunet_mm.io.raw_dataset import open_raw_dataset
    from nnunet_mm.io.splits import SPLITS_FILE, write_splits
    from nnunet_mm.io.staging import new_dataset_folder, staged_dataset

    if not 0.5 < confidence_threshold <= 1.0:
        raise ValueError(f"confidence_threshold must be in (0.5, 1], got {confidence_threshold}.")
    source = open_raw_dataset(mas_dataset)
    settings = read_settings(source.dataset_json, str(source.folder / "dataset.json"))
    priors = prior_channel_indices(settings, source.dataset_json["channel_names"])
    if not priors:
        raise ValueError(f"{settings.source}: no atlas prior channels; run 'nnunet_mm mas' first.")
    labels = dict(source.dataset_json["labels"])
    if "ignore" in labels:
        raise ValueError(f"{settings.source}: already has an ignore label.")
    ignore_value = max(int(v) for v in labels.values()) + 1
    num_images = priors[0]
    name = output_name or f"{source.folder.name.split('_', 1)[-1]}_Distilled"
    final_dir = new_dataset_folder(output_id, name, output_root=output_root)
    summary: dict[str, Any] = {"confidence_threshold": confidence_threshold, "source": source.folder.name,
                               "cases": {}}
    with staged_dataset(final_dir, overwrite=overwrite, sources=[source.folder]) as staging:
        for split, cases in (("Tr", source.training_cases), ("Ts", source.test_cases)):
            for case in tqdm(cases, desc=f"distill {split}", unit="case", disable=None):
                (staging / f"images{split}").mkdir(exist_ok=True)
                for channel in range(num_images):
                    shutil.copyfile(source.image_file(case, channel, split),
                                    staging / f"images{split}" / source.image_file(case, channel).name)
                if split == "Ts":
                    continue
                reference = read_image(source.image_file(case, priors[0], split))  # complete, finite, or refused
                foreground = np.stack([sitk.GetArrayFromImage(read_image(source.image_file(case, c, split)))
                                       for c in priors]).astype(np.float32)
                label = distilled_label(foreground, confidence_threshold, ignore_value)
                image = sitk.GetImageFromArray(label)
                image.CopyInformation(reference)
                (staging / "labelsTr").mkdir(exist_ok=True)
                write_image(image, staging / "labelsTr" / source.label_file(case).name)
                entry = {"ignored_share": float((label == ignore_value).mean())}
                if source.label_file(case).is_file():
                    truth = sitk.GetArrayFromImage(read_image(source.label_file(case)))
                    known = label != ignore_value
                    entry["confident_voxel_accuracy"] = float((label[known] == truth[known]).mean())
                summary["cases"][case] = entry
        block = {k: v for k, v in block_of(source.dataset_json, settings.source).items()
                 if k not in ("modalities", "phase_names")}
        block["modalities"] = {str(c): m for c, m in settings.description.modalities.items() if c < num_images}
        block["notes"] = [f"labelsTr are fused atlas labels from {source.folder.name}; voxels with winning "
                          f"probability < {confidence_threshold} are 'ignore' ({ignore_value})"]
        write_dataset_json(staging, channel_names={str(c): source.dataset_json["channel_names"][str(c)]
                                                   for c in range(num_images)},
                           labels={**labels, "ignore": ignore_value}, num_training=len(source.training_cases),
                           file_ending=source.file_ending, dataset_name=final_dir.name, nnunet_mm_block=block)
        if (source.folder / SPLITS_FILE).is_file():  # the folds of the MAS dataset ('nnunet_mm mas' writes them)
            shutil.copyfile(source.folder / SPLITS_FILE, staging / SPLITS_FILE)
        elif source.training_cases:
            write_splits(staging, source.training_cases)
        (staging / "nnunet_mm_qa").mkdir()
        (staging / "nnunet_mm_qa" / "distill_summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return final_dir
