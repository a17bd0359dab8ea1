"""Normal (tumour-free) CTs from tumour cases, per phase (Diff4MMLiTS §3.2 "NCG"): the input of tumour synthesis.

For every labelled case with tumour, the removal mask is built from the reference (label) phase's tumour —
morphological closing 5×5, then one 3×3 dilation, per axial slice (:func:`nnunet_mm.synthesis.masks.removal_mask`)
— and every phase is inpainted slice by slice inside that mask, with the FFC inpainter
(:mod:`nnunet_mm.synthesis.inpainting`) or the median-filter baseline of the paper's ablation. The one mask covers the
tumour in all roughly aligned phases. Voxels outside the mask keep their exact stored values; inside it the
inpainted intensities are mapped back from [0, 1] to the image's units (for CT: HU in [-175, 250], which is where
liver lies). The new label turns the tumour into liver.

The result is a **new raw dataset** (the source is only read): the original cases (unless ``include_originals`` is
False) plus one ``<case>_normal`` case per tumour case, a dataset.json with the updated ``numTraining``, a
``normal_cases.json`` that lists what was done per case, ``normal_cases.png`` (before/after per phase) and a
``splits_final.json`` that keeps every ``<case>_normal`` in its original's fold (a twin validated against its own
original in training would leak, biasing validation and checkpoint selection): the source's ``splits_final.json``
extended with the twins when it has one, else :func:`nnunet_mm.io.splits.grouped_cross_validation_splits` over the
source cases (also when, without the originals, a fold of the source's splits would be left empty). It is
written into a staging folder and renamed into place at the end; an existing target is only replaced with
``overwrite``.
"""
from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk
import torch

from nnunet_mm.io.images import read_image, write_image
from nnunet_mm.io.splits import (NORMAL_SUFFIX, SPLITS_FILE, grouped_cross_validation_splits, read_splits,
                                 save_splits, with_twins)
from nnunet_mm.io.staging import check_output, staged_dataset
from nnunet_mm.settings import DatasetSettings, read_settings
from nnunet_mm.synthesis.masks import removal_mask
from nnunet_mm.synthesis.model_data import (from_unit, intensity_window, raw_training_cases, read_dataset_json,
                                            to_unit)
from nnunet_mm.io.figure_style import figure_style

logger = logging.getLogger(__name__)

Method = Literal["ffc", "median"]


@dataclass
class NormalCasesResult:
    """What :func:`make_normal_dataset` wrote."""

    folder: Path
    normal_cases: dict[str, dict]
    png: Path | None


def dataset_labels(settings: DatasetSettings, labels: Mapping[str, Any]) -> tuple[int, int]:
    """(liver, tumour) label values of a dataset: the ``"synthesis"`` settings, else the label names.

    Args:
        settings: the dataset's settings (:func:`nnunet_mm.settings.read_settings`); messages name its source.
        labels: dataset.json's ``labels``.
    """
    from nnunet_mm.synthesis.settings import SYNTHESIS_KEY

    return settings.method(SYNTHESIS_KEY).resolve_labels(labels, settings.source)


class SliceInpainter:
    """Inpaint axial slices of one volume in [0, 1]: the FFC network (batched) or the median baseline."""

    def __init__(self, method: Method, model_folder: Path | None = None, device: torch.device | None = None,
                 median_window: int = 5):
        if method not in ("ffc", "median"):
            raise ValueError(f"inpainter must be 'ffc' or 'median', got {method!r}.")
        self.method = method
        self.median_window = median_window
        self.network = None
        if method == "ffc":
            if model_folder is None:
                raise ValueError("the 'ffc' inpainter needs a model folder (nnunet_mm train-inpainter).")
            from nnunet_mm.synthesis.inpainting import load_inpainter
            self.network = load_inpainter(Path(model_folder), device or torch.device("cpu"))

    def __call__(self, slices: np.ndarray, holes: np.ndarray) -> np.ndarray:
        """(N, H, W) slices in [0, 1] and bool holes → inpainted copies (unchanged outside the holes)."""
        if self.network is not None:
            from nnunet_mm.synthesis.inpainting import inpaint_slices
            return inpaint_slices(self.network, slices, holes)
        from nnunet_mm.synthesis.inpainting import median_inpaint
        return np.stack([median_inpaint(s, h, self.median_window) for s, h in zip(slices, holes)])


def remove_tumour(volume: np.ndarray, hole: np.ndarray, window: tuple[float, float],
                  inpainter: SliceInpainter) -> np.ndarray:
    """One phase (Z, Y, X) with the (Z, Y, X) bool ``hole`` inpainted slice by slice; other voxels bit-identical.

    Returns:
        An array of ``volume``'s dtype (rounded for integer types).
    """
    out = np.array(volume, copy=True)
    slices = np.nonzero(hole.reshape(hole.shape[0], -1).any(1))[0]
    if not len(slices):
        return out
    unit = to_unit(volume[slices], window)
    filled = from_unit(inpainter(unit, hole[slices]), window)
    if np.issubdtype(out.dtype, np.integer):
        info = np.iinfo(out.dtype)
        filled = np.clip(np.rint(filled), info.min, info.max)
    target = out[slices]
    target[hole[slices]] = filled[hole[slices]].astype(out.dtype)
    out[slices] = target
    return out


def make_normal_dataset(source_folder: Path, target_folder: Path, *, method: Method = "ffc",
                        model_folder: Path | None = None, device: torch.device | None = None,
                        include_originals: bool = True, dataset_name: str | None = None,
                        overwrite: bool = False, progress: bool = True) -> NormalCasesResult:
    """Write a new raw dataset with a tumour-free ``<case>_normal`` for every tumour case (see module docstring).

    Args:
        source_folder: the nnU-Net raw dataset with tumour labels (only read).
        target_folder: the new dataset folder (e.g. ``$nnUNet_raw/Dataset612_LiverNormal``).
        method: ``"ffc"`` (needs ``model_folder`` from ``nnunet_mm train-inpainter``) or ``"median"``.
        include_originals: also copy the original cases unchanged (real + normal, what the segmenter trains on).
        dataset_name: ``"name"`` of the new dataset.json (default: the target folder's name).
        overwrite: replace an existing, non-empty ``target_folder``.

    Raises:
        FileExistsError: the target exists and is not empty (without ``overwrite``).
        ValueError / FileNotFoundError: bad input, naming the file; a target that is, holds or lies inside the source.
    """
    from tqdm import tqdm

    source_folder, target_folder = Path(source_folder).absolute(), Path(target_folder).absolute()
    check_output(target_folder, overwrite=overwrite, sources=[source_folder])  # before the inpainter is loaded
    dataset_json = read_dataset_json(source_folder)
    settings = read_settings(dataset_json, str(source_folder / "dataset.json"))
    liver_label, tumour_label = dataset_labels(settings, dataset_json["labels"])
    channel_names = [str(v) for _, v in sorted(dataset_json["channel_names"].items(), key=lambda kv: int(kv[0]))]
    ending = dataset_json["file_ending"]
    cases = raw_training_cases(source_folder)
    inpainter = SliceInpainter(method, model_folder, device)
    records: dict[str, dict] = {}
    examples = []
    with staged_dataset(target_folder, overwrite=overwrite) as staging:
        (staging / "imagesTr").mkdir()
        (staging / "labelsTr").mkdir()
        for case in tqdm(cases, desc=f"normal cases ({method})", disable=not progress):
            if include_originals:
                for path in case.images:
                    shutil.copyfile(path, staging / "imagesTr" / path.name)
                shutil.copyfile(case.label, staging / "labelsTr" / case.label.name)
            label_image = read_image(case.label)
            label = sitk.GetArrayFromImage(label_image)
            tumour = label == tumour_label
            if not tumour.any():
                continue
            hole = removal_mask(tumour)
            normal_id = f"{case.identifier}{NORMAL_SUFFIX}"
            before, after = [], []
            for channel, path in enumerate(case.images):
                image = read_image(path)
                volume = sitk.GetArrayFromImage(image)
                if volume.shape != label.shape:
                    raise ValueError(f"{path}: image shape {volume.shape} differs from its label's {label.shape} "
                                     f"({case.label}).")
                normal = remove_tumour(volume, hole, intensity_window(volume, channel_names[channel]), inpainter)
                written = sitk.GetImageFromArray(normal)
                written.CopyInformation(image)
                write_image(written, staging / "imagesTr" / f"{normal_id}_{channel:04d}{ending}")
                before.append(volume)
                after.append(normal)
            normal_label = np.where(tumour, liver_label, label).astype(label.dtype)
            written = sitk.GetImageFromArray(normal_label)
            written.CopyInformation(label_image)
            write_image(written, staging / "labelsTr" / f"{normal_id}{ending}")
            records[normal_id] = {"source": case.identifier, "tumour_voxels": int(tumour.sum()),
                                  "removed_voxels": int(hole.sum()),
                                  "slices": int(hole.reshape(hole.shape[0], -1).any(1).sum())}
            if len(examples) < 4:
                z = int(np.argmax(tumour.reshape(tumour.shape[0], -1).sum(1)))
                examples.append((case.identifier, [v[z] for v in before], [v[z] for v in after], hole[z],
                                 [intensity_window(v, n) for v, n in zip(before, channel_names)], z))
        if not records:
            raise ValueError(f"{source_folder / 'labelsTr'}: no case has tumour label {tumour_label}; nothing to "
                             f"turn into a normal case.")
        num_training = len(list((staging / "labelsTr").glob(f"*{ending}")))
        new_json = {**dataset_json, "numTraining": num_training,
                    "name": dataset_name or target_folder.name,
                    "description": f"{dataset_json.get('description', '')} + tumour-free normal cases "
                                   f"(nnunet_mm make-normal, {method} inpainting) from {source_folder.name}".strip()}
        (staging / "dataset.json").write_text(json.dumps(new_json, indent=4), encoding="utf-8")
        (staging / "normal_cases.json").write_text(json.dumps(
            {"source": str(source_folder), "method": method,
             "model_folder": str(model_folder) if model_folder else None,
             "removal_mask": "closing 5x5 then one 3x3 dilation of the tumour label, per axial slice",
             "includes_originals": include_originals, "cases": records}, indent=2), encoding="utf-8")
        _write_grouped_splits(source_folder, staging, [case.identifier for case in cases], records, include_originals)
        png = _save_examples_png(examples, channel_names, staging / "normal_cases.png", method)
    return NormalCasesResult(target_folder, records, target_folder / png.name if png else None)


@figure_style()
def _write_grouped_splits(source_folder: Path, staging: Path, originals: list[str], records: Mapping[str, dict],
                          include_originals: bool) -> None:
    """``splits_final.json`` of the new dataset, every ``<case>_normal`` on its original's side of every fold: the
    source's splits extended with the twins if it has a ``splits_final.json``, else folds over the source cases,
    each grouped with its twin. Without the originals, the folds name only the twins."""
    twins = {record["source"]: normal_id for normal_id, record in records.items()}
    kept = originals if include_originals else []
    source_splits = source_folder / SPLITS_FILE
    splits = with_twins(read_splits(source_splits), twins, kept) if source_splits.is_file() else None
    if splits is not None and (include_originals or all(fold["train"] and fold["val"] for fold in splits)):
        how = f"{source_splits} extended with the normal twins"
    else:
        if splits is not None:
            logger.warning("%s: a fold would be left without training or validation cases once the originals "
                           "are dropped; writing new grouped folds instead", source_splits)
        splits = grouped_cross_validation_splits(
            {case: [c for c in (case if include_originals else None, twins.get(case)) if c] for case in originals})
        how = "folds over the cases, each grouped with its normal twin"
    save_splits(staging, splits)
    logger.info("%s: %d fold(s), %s", SPLITS_FILE, len(splits), how)


def _save_examples_png(examples: list, channel_names: list[str], png: Path, method: str) -> Path | None:
    """Rows: cases (axial slice with most tumour, named in the panel titles); columns: each phase before | after,
    with the removal mask outlined."""
    if not examples:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_channels = len(channel_names)
    fig, axes = plt.subplots(len(examples), 2 * num_channels, figsize=(2.2 * 2 * num_channels, 2.4 * len(examples)),
                             squeeze=False)
    for row, (identifier, before, after, hole, windows, z) in enumerate(examples):
        for channel in range(num_channels):
            low, high = windows[channel]
            for k, (image, what) in enumerate(((before[channel], "tumour"), (after[channel], "normal"))):
                axis = axes[row, 2 * channel + k]
                axis.imshow(image, cmap="gray", vmin=low, vmax=high)
                if hole.any():
                    axis.contour(hole, levels=[0.5], colors="orange", linewidths=0.6)
                axis.set_title(f"{identifier} z{z}\nch{channel} {channel_names[channel]} {what}", fontsize=7)
                axis.axis("off")
    fig.suptitle(f"normal cases ({method} inpainting): each phase with its tumour, then inpainted; orange: removal "
                 f"mask")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png
