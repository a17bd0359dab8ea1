"""PNG of a trained CMG model on one case: every phase, its cross-modal guidance maps and its prediction.

The case is preprocessed exactly as nnU-Net's predictor does, predicted with the sliding window, and one patch
around the most confident foreground of the highest label (the lesion, for liver data) is run through
``CMGUNet.forward_train`` in eval mode, i.e. with prototypes from the network's own predictions, as at inference.
Rows are phases; columns: the phase's image, the guidance map ``S`` of each guidance level (cosine similarity of the
phase's features with the other phases' prototype of the shown class; upsampled to the patch), and the phase's
prediction outline.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nnunet_mm.io.figure_style import figure_style
from nnunet_mm.settings import model_folder_dataset_json_source, read_settings


def _patch_slices(shape: Sequence[int], patch: Sequence[int], centre: Sequence[int]) -> list[slice]:
    slices = []
    for size, length, middle in zip(shape, patch, centre):
        start = int(min(max(middle - length // 2, 0), max(size - length, 0)))
        slices.append(slice(start, start + min(length, size)))
    return slices


@figure_style()
def save_guidance_figure(model_folder: Path, image_files: Sequence[Path], png: Path, *, fold: str | int = 0,
                         checkpoint: str = "checkpoint_final.pth", device: str | torch.device = "cpu",
                         class_index: int | None = None) -> Path:
    """Write the figure described in the module docstring for the case made of ``image_files`` (one per channel).

    Args:
        model_folder: ``nnUNet_results/DatasetXXX/CMGTrainer__<plans>__<configuration>``.
        image_files: the case's channel files, in channel order.
        png: output file.
        fold: which fold's checkpoint.
        class_index: the class whose guidance is shown; default the highest label.

    Raises:
        ValueError: the model is not a CMG model, or its checkpoint is cut or holds objects other than data.
        FileNotFoundError: the fold's checkpoint is missing.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnunet_mm.cmg.network import CMGUNet
    from nnunet_mm.io.safe_load import verify_model_folder

    verify_model_folder(Path(model_folder), [fold], checkpoint)  # before nnU-Net loads it with weights_only=False
    predictor = nnUNetPredictor(device=torch.device(device), allow_tqdm=False, use_mirroring=False)
    predictor.initialize_from_trained_model_folder(str(model_folder), use_folds=(fold,), checkpoint_name=checkpoint)
    network = predictor.network
    if not isinstance(network, CMGUNet):
        raise ValueError(f"{model_folder}: the model is a {type(network).__name__}, not a CMGUNet; guidance maps "
                         f"exist only for CMGTrainer models.")
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
    data, _, _ = preprocessor.run_case([str(f) for f in image_files], None, predictor.plans_manager,
                                       predictor.configuration_manager, predictor.dataset_json)
    data = torch.from_numpy(data).float()
    logits = predictor.predict_logits_from_preprocessed_data(data).float()
    probabilities = torch.softmax(logits, 0)
    num_classes = probabilities.shape[0]
    shown = num_classes - 1 if class_index is None else class_index
    centre = np.unravel_index(int(probabilities[shown].argmax()), probabilities.shape[1:])
    patch = predictor.configuration_manager.patch_size
    if len(patch) == 2:  # 2D model: one axial slice
        region = [slice(int(centre[0]), int(centre[0]) + 1), *_patch_slices(data.shape[2:], patch, centre[1:])]
    else:
        region = _patch_slices(data.shape[1:], patch, centre)
    crop = data[(slice(None), *region)]
    network.eval()
    with torch.no_grad():
        batch = crop.permute(1, 0, 2, 3) if len(patch) == 2 else crop[None]
        result = network.to(predictor.device).forward_train(batch.to(predictor.device))
    k = int(centre[0]) - region[0].start if len(patch) == 3 else 0

    def plane(volume: torch.Tensor) -> np.ndarray:  # (C, *spatial) of the batch item → the shown 2D slice
        return (volume[:, k] if volume.ndim == 4 else volume).float().cpu().numpy()

    num_phases, levels = network.num_phases, network.guidance_levels
    settings = read_settings(predictor.dataset_json, model_folder_dataset_json_source(model_folder)).multimodal
    phase_names = settings.display_names(predictor.dataset_json["channel_names"])
    class_names = {value: name for name, value in predictor.dataset_json["labels"].items()
                   if isinstance(value, int)}
    shown_name = class_names.get(shown, f"class {shown}")
    item = 0
    fig, axes = plt.subplots(num_phases, levels + 2, figsize=(3.2 * (levels + 2), 3.2 * num_phases), squeeze=False)
    for p in range(num_phases):
        image = plane(batch[item, p:p + 1])[0]
        prediction = result["outputs"][p][0][item].argmax(0)
        window = np.percentile(image, [1, 99])  # normalised intensities: a robust window, not min-max
        axes[p, 0].imshow(image, cmap="gray", vmin=window[0], vmax=window[1])
        axes[p, 0].set_title(f"{phase_names[p]}" + (" (reference)" if p == network.reference_channel else ""),
                             fontsize=9)
        for level in range(levels):
            guidance = result["guidance"][p][level][item:item + 1, shown - 1:shown]
            size = batch.shape[2:]
            guidance = F.interpolate(guidance, size=tuple(size), mode="trilinear" if guidance.ndim == 5 else
                                     "bilinear", align_corners=False)[0]
            shown_map = axes[p, level + 1].imshow(plane(guidance)[0], cmap="coolwarm", vmin=-1, vmax=1)
            axes[p, level + 1].set_title(f"guidance S, level {level} ({shown_name})", fontsize=9)
        axes[p, -1].imshow(image, cmap="gray", vmin=window[0], vmax=window[1])
        mask = plane(prediction[None])[0]
        for value in range(1, num_classes):
            if (mask == value).any():
                axes[p, -1].contour(mask == value, levels=[0.5], colors=[plt.cm.tab10(value)], linewidths=1.0)
        axes[p, -1].set_title(f"{phase_names[p]} prediction", fontsize=9)
    for axis in axes.ravel():
        axis.axis("off")
    fig.colorbar(shown_map, ax=axes[:, 1:levels + 1].ravel().tolist(), shrink=0.6, label="cosine similarity")
    from matplotlib.lines import Line2D

    fig.legend(handles=[Line2D([], [], color=plt.cm.tab10(value), label=class_names.get(value, f"class {value}"))
                        for value in range(1, num_classes)], loc="lower center", ncol=max(1, num_classes - 1),
               fontsize=8, frameon=False, title="predicted")
    where = f"axial slice {int(centre[0])}" + ("" if len(patch) == 2 else f" of the {tuple(patch)} patch around it")
    fig.suptitle(f"{Path(image_files[0]).name}, {where}: cross-modal guidance for {shown_name} (prototypes from the "
                 f"other phases)", fontsize=10)
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
