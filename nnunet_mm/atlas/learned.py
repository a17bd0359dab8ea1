"""Learned cross-modality MAS (paper 004): BiRegNet training, SimNet training, and their use by ``nnunet_mm mas``.

**Data.** Every image is first reoriented to one axis order (LPS, :func:`canonical_orientation`: an exact permutation
and flip of its voxels; an oblique direction is refused), then resampled to one network grid (``grid_shape``) over
its own extent (the paper crops a ROI and resizes it to 96³; here the whole volume is the ROI, so the origin plays no
part: an image's own extent is its frame) and z-scored after clipping to its 0.5–99.5 percentiles. Labels become
one-hot class maps on that grid. Results are mapped back to the target's own voxel order and grid. Training pairs
are (atlas from the atlas dataset, labelled target training case), so, as in the paper, labels are needed in both
modalities.

**No leakage.** The networks train on the atlases and on the *training* cases of one fold of the target's split
(``fold``, default 0: the split ``nnunet_mm mas`` writes and nnU-Net trains with); the model records them
(``training.json``, ``"target_training_cases"``), ``nnunet_mm mas`` records them in the dataset, and
:class:`nnunet_mm.atlas.trainer.MASPriorTrainer` refuses a fold whose validation cases the networks saw. The
validation and test cases get their priors from the frozen networks, as a new patient does.

**BiRegNet loss** (journal version, [E]):
``L = −D_ms(L_t, L_a∘φ_{a→t}) − D_ms(L_a, L_t∘φ_{t→a})
+ λ_c(‖I_t − (I_t∘φ_{t→a})∘φ_{a→t}‖₁ + ‖I_a − (I_a∘φ_{a→t})∘φ_{t→a}‖₁)``, λ_c = 0.1, where
``D_ms`` is the soft Dice of the foreground classes averaged over Gaussian smoothings σ ∈ {0, 1, 2, 4} voxels.
The image term compares each image only with itself (modality-free round trip). Warping is MONAI's ``Warp``
(linear, ``output(x) = input(x + φ(x))``, φ in voxels); an optional bending-energy term (MONAI
``BendingEnergyLoss``, weight ``bending_weight``, 0 by default as in the journal's attention version) regularises
φ_{a→t}. Augmentation: independent random affine perturbations of atlas and target (≤ 0.1 of the normalised
coordinates). Adam, lr 1e-3 × 0.96 every 100 steps.

**SimNet** is trained on pairs made by the frozen BiRegNet: input (target image, warped atlas foreground
probabilities), target ``s*(x)`` = share of the 3^D neighbourhood of x where the warped atlas label equals the target
label, loss ``BCEWithLogits``. The atlas label is jittered by a random integer shift of −4..3 voxels along *every*
axis ([BUG] the public code shifts only the first two axes). Adam, lr 1e-4 × 0.96 every 1000 steps.

Weights are saved as ``state_dict`` files and loaded with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from torch.nn import functional as F

from nnunet_mm.atlas.networks import BiRegNet, SimNet
from nnunet_mm.io.figure_style import figure_style

logger = logging.getLogger(__name__)

MODEL_CONFIG = "mas_model.json"
BIREGNET_WEIGHTS = "biregnet.pt"
SIMNET_WEIGHTS = "simnet.pt"
DICE_SIGMAS = (0.0, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class LearnedMASConfig:
    """Network grid and sizes of a learned MAS model (saved as ``mas_model.json``)."""

    grid_shape: tuple[int, ...] = (32, 64, 64)
    num_classes: int = 3
    base_channels: int = 4
    simnet_base_channels: int = 8
    num_levels: int = 3
    cycle_weight: float = 0.1  # λ_c
    bending_weight: float = 0.0

    def __post_init__(self) -> None:
        factor = 2 ** self.num_levels
        if any(n % factor for n in self.grid_shape):
            raise ValueError(f"grid_shape {list(self.grid_shape)} must be divisible by 2**num_levels = {factor}.")

    @property
    def spatial_dims(self) -> int:
        return len(self.grid_shape)


# ---------------------------------------------------------------------------------------------------------------
# tensors on the network grid
# ---------------------------------------------------------------------------------------------------------------


def normalise_intensity(array: np.ndarray) -> np.ndarray:
    """Clip to the 0.5–99.5 percentiles and z-score (per volume, modality-agnostic)."""
    low, high = np.percentile(array, (0.5, 99.5))
    clipped = np.clip(array.astype(np.float32), low, high)
    return (clipped - clipped.mean()) / max(float(clipped.std()), 1e-6)


def to_grid(array: np.ndarray, grid_shape: tuple[int, ...], *, mode: str = "trilinear") -> torch.Tensor:
    """(C, *spatial) or (*spatial) array → (C, *grid_shape) float tensor (linear resize over the full extent)."""
    tensor = torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32)
    if tensor.ndim == len(grid_shape):
        tensor = tensor[None]
    mode = mode if len(grid_shape) == 3 else "bilinear"
    return F.interpolate(tensor[None], size=tuple(grid_shape), mode=mode, align_corners=False)[0]


def one_hot(label: np.ndarray, num_classes: int) -> np.ndarray:
    """(*spatial) integer label → (C, *spatial) float32."""
    return np.stack([(label == k) for k in range(num_classes)]).astype(np.float32)


CANONICAL_ORIENTATION = "LPS"


def canonical_orientation(image: sitk.Image, what: str = "image") -> sitk.Image:
    """``image`` with its voxels permuted and flipped into the :data:`CANONICAL_ORIENTATION` axis order (exact, no
    interpolation), so that atlas and target arrays share one anatomical axis order whatever their direction.

    Raises:
        ValueError: an oblique direction (not a signed permutation), naming ``what``: the learned networks see voxel
            arrays, and an oblique image would need resampling that the paper's pipeline does not do.
    """
    dimension = image.GetDimension()
    direction = np.asarray(image.GetDirection()).reshape(dimension, dimension)
    rounded = np.round(direction)
    if not (np.allclose(direction, rounded, atol=1e-3) and np.allclose(np.abs(rounded).sum(0), 1)
            and np.allclose(np.abs(rounded).sum(1), 1)):
        raise ValueError(f"{what}: oblique direction {np.round(direction, 3).tolist()}; the learned registration "
                         f"takes axis-aligned images only. Resample it onto an axis-aligned grid first, or use "
                         f"--registration simpleitk.")
    if dimension != 3:
        if not np.allclose(rounded, np.eye(dimension)):
            raise ValueError(f"{what}: a 2D image with direction {rounded.tolist()}; the learned registration takes "
                             f"2D images with the identity direction only.")
        return image
    return sitk.DICOMOrient(image, CANONICAL_ORIENTATION)


def canonical_array(image: sitk.Image, what: str = "image") -> np.ndarray:
    """The voxel array (z, y, x) of ``image`` in the canonical orientation (:func:`canonical_orientation`)."""
    return sitk.GetArrayFromImage(canonical_orientation(image, what))


def from_canonical(array: np.ndarray, reference: sitk.Image) -> np.ndarray:
    """Arrays (…, *spatial) in the canonical orientation of ``reference`` back to ``reference``'s own voxel order."""
    if reference.GetDimension() != 3:
        return array
    canonical = canonical_orientation(reference)
    orientation = sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(reference.GetDirection())
    flat = array.reshape(-1, *array.shape[-3:])
    restored = []
    for volume in flat:
        image = sitk.GetImageFromArray(np.ascontiguousarray(volume))
        image.CopyInformation(canonical)
        restored.append(sitk.GetArrayFromImage(sitk.DICOMOrient(image, orientation)))
    return np.stack(restored).reshape(*array.shape[:-3], *reference.GetSize()[::-1])


def _gaussian_smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian smoothing (truncated at 3σ, zero padding) of every channel; (B, C, *spatial)."""
    if sigma == 0:
        return x
    radius = max(1, int(round(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    spatial_dims = x.ndim - 2
    conv = F.conv3d if spatial_dims == 3 else F.conv2d
    channels = x.shape[1]
    for axis in range(spatial_dims):
        shape = [1] * spatial_dims
        shape[axis] = kernel.numel()
        padding = [0] * spatial_dims
        padding[axis] = radius
        x = conv(x, kernel.view(1, 1, *shape).repeat(channels, 1, *[1] * spatial_dims), padding=padding,
                 groups=channels)
    return x


def multiscale_dice(truth: torch.Tensor, predicted: torch.Tensor, sigmas: tuple[float, ...] = DICE_SIGMAS) -> torch.Tensor:
    """``D_ms``: soft Dice of the foreground classes (channels 1..), mean over Gaussian smoothings; (B, C, ...) in."""
    dims = tuple(range(2, truth.ndim))
    scores = []
    for sigma in sigmas:
        a, b = _gaussian_smooth(truth[:, 1:], sigma), _gaussian_smooth(predicted[:, 1:], sigma)
        scores.append((2 * (a * b).sum(dims) + 1e-5) / ((a + b).sum(dims) + 1e-5))
    return torch.stack(scores).mean()


class _Warper:
    def __init__(self):
        import warnings

        from monai.networks.blocks import Warp

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*native grid_sample.*")
            self.warp = Warp(mode="bilinear", padding_mode="border")

    def __call__(self, image: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
        return self.warp(image, ddf)


def registration_loss(net: BiRegNet, atlas_image: torch.Tensor, target_image: torch.Tensor,
                      atlas_label: torch.Tensor, target_label: torch.Tensor, config: LearnedMASConfig,
                      warp: _Warper | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The BiRegNet loss (module docstring) for a batch; images (B, 1, ...), labels one-hot (B, C, ...)."""
    warp = warp or _Warper()
    a2t, t2a = net.forward_train(torch.cat((atlas_image, target_image), dim=1))
    dice_forward = multiscale_dice(target_label, warp(atlas_label, a2t))
    dice_backward = multiscale_dice(atlas_label, warp(target_label, t2a))
    cycle = (F.l1_loss(warp(warp(target_image, t2a), a2t), target_image)
             + F.l1_loss(warp(warp(atlas_image, a2t), t2a), atlas_image))
    loss = -dice_forward - dice_backward + config.cycle_weight * cycle
    if config.bending_weight > 0:
        from monai.losses import BendingEnergyLoss

        loss = loss + config.bending_weight * BendingEnergyLoss()(a2t)
    return loss, {"dice_a2t": float(dice_forward.detach()), "dice_t2a": float(dice_backward.detach()),
                  "cycle": float(cycle.detach())}


def local_agreement(warped_label: torch.Tensor, target_label: torch.Tensor) -> torch.Tensor:
    """SimNet's target ``s*``: share of the 3^D neighbourhood where the hard labels agree; (B, 1, ...) out."""
    agree = (warped_label.argmax(1, keepdim=True) == target_label.argmax(1, keepdim=True)).float()
    pool = F.avg_pool3d if agree.ndim == 5 else F.avg_pool2d
    return pool(agree, 3, stride=1, padding=1, count_include_pad=False)


def random_affine(batch: torch.Tensor, generator: torch.Generator, magnitude: float = 0.1) -> torch.Tensor:
    """(B, D, D+1) affine matrices for ``F.affine_grid``: identity + U(−magnitude, magnitude) per entry."""
    dims = batch.ndim - 2
    theta = torch.eye(dims, dims + 1, device=batch.device).repeat(batch.shape[0], 1, 1)
    noise = (torch.rand(theta.shape, generator=generator, device=batch.device) * 2 - 1) * magnitude
    return theta + noise


def apply_affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


# ---------------------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------------------


def _load_volumes(dataset, cases: list[str], channel: int, config: LearnedMASConfig) -> tuple[torch.Tensor, torch.Tensor]:
    from nnunet_mm.io.images import read_image

    images, labels = [], []
    for case in cases:
        image_file = dataset.image_file(case, channel)
        image = canonical_array(read_image(image_file), str(image_file)).astype(np.float32)
        label_file = dataset.label_file(case)
        if not label_file.is_file():
            raise FileNotFoundError(f"{label_file}: missing; BiRegNet training needs labels in both modalities.")
        label = canonical_array(read_image(label_file), str(label_file))
        images.append(to_grid(normalise_intensity(image), config.grid_shape))
        labels.append(to_grid(one_hot(label, config.num_classes), config.grid_shape))
    return torch.stack(images), torch.stack(labels)


def train_learned_mas(atlas_dataset: Any, target_dataset: Any, output_dir: Path, *,
                      config: LearnedMASConfig = LearnedMASConfig(), iterations: int = 1500,
                      simnet_iterations: int = 2000, batch_size: int = 2, device: str = "cpu", seed: int = 0,
                      fold: int | str = 0, overwrite: bool = False, show_progress: bool = True) -> dict[str, Any]:
    """Train BiRegNet, then SimNet, and write ``output_dir`` (config, weights, ``training.json``, ``training.png``).

    Args:
        atlas_dataset / target_dataset: raw datasets (id, name or folder); every atlas (channel 0) and the
            target's training cases of ``fold`` (its reference channel) are used.
        output_dir: model folder (refused before training if it exists and is not empty, unless ``overwrite``,
            and if it overlaps either dataset).
        config: grid and network sizes.
        iterations / simnet_iterations: optimiser steps of each stage (0 skips SimNet).
        batch_size: pairs per step.
        device: torch device.
        seed: seed of pair sampling and augmentation.
        fold: the fold of the target's split (:func:`nnunet_mm.atlas.mas.target_splits`, the split ``nnunet_mm
            mas`` writes) whose *training* cases the networks learn from; its validation cases and the test cases
            are never seen. ``"all"``: every training case (then no fold's validation is free of leakage).

    Returns:
        The training summary (losses per stage, seconds, mean warped-label Dice before/after on the training pairs).
    """
    from tqdm import tqdm

    from nnunet_mm.io.raw_dataset import open_raw_dataset
    from nnunet_mm.io.staging import check_output
    from nnunet_mm.settings import read_settings

    atlases, targets = open_raw_dataset(atlas_dataset), open_raw_dataset(target_dataset)
    output_dir = check_output(Path(output_dir), overwrite=overwrite, sources=[atlases.folder, targets.folder])
    training_cases = fold_training_cases(targets, fold)
    target_channel = read_settings(targets.dataset_json,
                                   str(targets.folder / "dataset.json")).multimodal.reference_channel
    torch_device = torch.device(device)
    atlas_images, atlas_labels = (t.to(torch_device) for t in _load_volumes(atlases, atlases.training_cases, 0, config))
    target_images, target_labels = (t.to(torch_device) for t in
                                    _load_volumes(targets, training_cases, target_channel, config))
    generator = torch.Generator(device=torch_device).manual_seed(seed)
    torch.manual_seed(seed)
    warp = _Warper()

    net = BiRegNet(config.spatial_dims, config.base_channels, config.num_levels).to(torch_device)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3)
    schedule = torch.optim.lr_scheduler.StepLR(optimiser, step_size=100, gamma=0.96)
    history: dict[str, list] = {"registration": [], "simnet": []}
    start = time.perf_counter()
    net.train()
    for _ in tqdm(range(iterations), desc="mas-train: BiRegNet", disable=not show_progress):
        a = torch.randint(len(atlas_images), (batch_size,), generator=generator, device=torch_device)
        t = torch.randint(len(target_images), (batch_size,), generator=generator, device=torch_device)
        theta_a, theta_t = random_affine(atlas_images[a], generator), random_affine(target_images[t], generator)
        loss, parts = registration_loss(net, apply_affine(atlas_images[a], theta_a),
                                        apply_affine(target_images[t], theta_t),
                                        apply_affine(atlas_labels[a], theta_a), apply_affine(target_labels[t], theta_t),
                                        config, warp)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        history["registration"].append({"loss": float(loss.detach()), **parts})
    registration_seconds = time.perf_counter() - start
    net.eval()
    summary = {"config": {**asdict(config), "grid_shape": list(config.grid_shape)},
               "atlas_dataset": atlases.folder.name, "target_dataset": targets.folder.name,
               "fold": fold, "target_training_cases": training_cases,
               "registration_seconds": registration_seconds, "iterations": iterations,
               "simnet_iterations": simnet_iterations}
    summary["train_pair_dice_before_after"] = _pair_dice(net, atlas_images, atlas_labels, target_images,
                                                         target_labels, warp)

    simnet = None
    if simnet_iterations > 0:
        simnet = SimNet(config.spatial_dims, config.num_classes - 1, config.simnet_base_channels,
                        config.num_levels).to(torch_device)
        optimiser = torch.optim.Adam(simnet.parameters(), lr=1e-4)
        schedule = torch.optim.lr_scheduler.StepLR(optimiser, step_size=1000, gamma=0.96)
        simnet.train()
        for _ in tqdm(range(simnet_iterations), desc="mas-train: SimNet", disable=not show_progress):
            a = torch.randint(len(atlas_images), (batch_size,), generator=generator, device=torch_device)
            t = torch.randint(len(target_images), (batch_size,), generator=generator, device=torch_device)
            with torch.no_grad():
                ddf = net(torch.cat((atlas_images[a], target_images[t]), dim=1))
                warped = warp(atlas_labels[a], ddf)
                shifts = torch.randint(-4, 4, (config.spatial_dims,), generator=generator, device=torch_device)
                warped = torch.roll(warped, [int(s) for s in shifts], dims=tuple(range(2, warped.ndim)))
                agreement = local_agreement(warped, target_labels[t])
            logits = simnet(torch.cat((target_images[t], warped[:, 1:]), dim=1))
            loss = F.binary_cross_entropy_with_logits(logits, agreement)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            history["simnet"].append({"loss": float(loss.detach())})
        simnet.eval()
    summary["total_seconds"] = time.perf_counter() - start
    _write_model(output_dir, config, net, simnet, summary, history, overwrite=overwrite)
    return summary


def fold_training_cases(targets: Any, fold: int | str) -> list[str]:
    """The target training cases the learned networks may see: the ``train`` keys of ``fold`` of the target's split
    (:func:`nnunet_mm.atlas.mas.target_splits`), or every training case for ``"all"``.

    Raises:
        ValueError: a fold the split does not have, or a fold without training cases.
    """
    from nnunet_mm.atlas.mas import target_splits

    if fold == "all":
        logger.warning("mas-train --fold all: the networks see every training case, so the priors of every fold's "
                       "validation cases are better than a new patient's")
        return sorted(targets.training_cases)
    splits = target_splits(targets)
    if not isinstance(fold, int) or not 0 <= fold < len(splits):
        raise ValueError(f"--fold {fold}: the split of {targets.folder} has folds 0..{len(splits) - 1} (or 'all').")
    cases = sorted(splits[fold]["train"])
    if not cases:
        raise ValueError(f"--fold {fold}: no training case in fold {fold} of the split of {targets.folder}.")
    return cases


def _pair_dice(net: BiRegNet, atlas_images, atlas_labels, target_images, target_labels, warp) -> list[float]:
    """Mean foreground Dice of atlas labels on target labels over all pairs: before (identity) and after warping."""
    before, after = [], []
    with torch.no_grad():
        for i in range(len(atlas_images)):
            for j in range(len(target_images)):
                ddf = net(torch.cat((atlas_images[i:i + 1], target_images[j:j + 1]), dim=1))
                before.append(float(multiscale_dice(target_labels[j:j + 1], atlas_labels[i:i + 1], (0.0,))))
                after.append(float(multiscale_dice(target_labels[j:j + 1], warp(atlas_labels[i:i + 1], ddf), (0.0,))))
    return [float(np.mean(before)), float(np.mean(after))]


@figure_style()
def _write_model(output_dir: Path, config: LearnedMASConfig, net: BiRegNet, simnet: SimNet | None,
                 summary: dict, history: dict, *, overwrite: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nnunet_mm.io.staging import staged_dataset
    from nnunet_mm.training.loss_curves import finish_loss_axis, plot_loss_curve

    with staged_dataset(output_dir, overwrite=overwrite) as staging:
        (staging / MODEL_CONFIG).write_text(json.dumps(summary["config"], indent=2), encoding="utf-8")
        torch.save({k: v.cpu() for k, v in net.state_dict().items()}, staging / BIREGNET_WEIGHTS)
        if simnet is not None:
            torch.save({k: v.cpu() for k, v in simnet.state_dict().items()}, staging / SIMNET_WEIGHTS)
        (staging / "training.json").write_text(json.dumps({**summary, "history": history}, indent=1), encoding="utf-8")
        figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for axis, key, title in zip(axes, ("registration", "simnet"), ("BiRegNet loss", "SimNet BCE")):
            losses = [h["loss"] for h in history[key]]
            plot_loss_curve(axis, losses)
            finish_loss_axis(axis, title=title, num_iterations=len(losses))
        figure.suptitle("learned multi-atlas registration: training losses")
        figure.tight_layout()
        figure.savefig(staging / "training.png", dpi=90)
        plt.close(figure)


# ---------------------------------------------------------------------------------------------------------------
# inference: a registration backend and a fusion-weight model for nnunet_mm mas
# ---------------------------------------------------------------------------------------------------------------


def _resize_back(tensor: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    return F.interpolate(tensor[None], size=shape, mode=mode, align_corners=False)[0].cpu().numpy()


class LearnedRegistration:
    """BiRegNet as a :class:`nnunet_mm.atlas.mas.PairRegistration` backend (one forward pass per pair)."""

    def __init__(self, net: BiRegNet, config: LearnedMASConfig, weights_digest: str, device: str = "cpu", *,
                 model_dir: Path | None = None, training_cases: list[str] | None = None):
        self.net, self.config, self.weights_digest = net.eval(), config, weights_digest
        self.device = torch.device(device)
        self.warper = _Warper()
        self.model_dir = model_dir  # recorded by 'nnunet_mm mas', so that predictions load the same model
        self.training_cases = training_cases  # target cases the model saw (None: not recorded)

    def cache_key(self) -> dict[str, Any]:
        return {"backend": "learned", "weights_sha256": self.weights_digest, "grid_shape": list(self.config.grid_shape)}

    @torch.no_grad()
    def warp(self, target: sitk.Image, atlas_image: sitk.Image, atlas_label: sitk.Image, num_classes: int):
        from nnunet_mm.atlas.mas import WarpedAtlas

        if num_classes != self.config.num_classes:
            raise ValueError(f"the model was trained for {self.config.num_classes} classes, the dataset has "
                             f"{num_classes}.")
        grid = self.config.grid_shape
        target_array = canonical_array(target, "target image").astype(np.float32)
        atlas_array = canonical_array(atlas_image, "atlas image").astype(np.float32)
        label = canonical_array(atlas_label, "atlas label")
        pair = torch.stack([to_grid(normalise_intensity(atlas_array), grid)[0],
                            to_grid(normalise_intensity(target_array), grid)[0]])[None].to(self.device)
        ddf = self.net(pair)
        atlas_on_grid = torch.cat([to_grid(atlas_array, grid), to_grid(one_hot(label, num_classes), grid)])[None]
        warped = self.warper(atlas_on_grid.to(self.device), ddf)[0]
        probabilities = np.clip(_resize_back(warped[1:], target_array.shape), 0, 1)
        probabilities /= np.maximum(probabilities.sum(0, keepdims=True), 1e-6)
        # back from the canonical axis order to the target's own voxels
        return WarpedAtlas(from_canonical(probabilities.astype(np.float32), target),
                           from_canonical(_resize_back(warped[:1], target_array.shape)[0], target))


class SimNetFusion:
    """SimNet similarity maps as fusion weights (``fusion="simnet"``)."""

    def __init__(self, net: SimNet, config: LearnedMASConfig, device: str = "cpu", *, model_dir: Path | None = None,
                 training_cases: list[str] | None = None):
        self.net, self.config, self.device = net.eval(), config, torch.device(device)
        self.model_dir, self.training_cases = model_dir, training_cases

    @torch.no_grad()
    def similarity(self, target: np.ndarray, atlas_probabilities: np.ndarray,
                   reference: sitk.Image | None = None) -> np.ndarray:
        """(K, *spatial) weights ``σ(SimNet(target, warped atlas label))`` on the target grid.

        Args:
            target: (*spatial) target image array; atlas_probabilities: (K, C, *spatial) on the same grid.
            reference: the target image ``target`` comes from: SimNet then sees the arrays in the canonical axis
                order it was trained in (:func:`canonical_orientation`); None: the arrays are taken as they are.
        """
        if reference is not None:
            canonical = canonical_orientation(reference, "target image")
            target = _to_canonical(target, reference, canonical)
            atlas_probabilities = np.stack([_to_canonical(p, reference, canonical) for p in atlas_probabilities])
        grid = self.config.grid_shape
        image = to_grid(normalise_intensity(target), grid)
        weights = []
        for probabilities in atlas_probabilities:
            x = torch.cat((image, to_grid(probabilities[1:], grid)))[None].to(self.device)
            weights.append(_resize_back(torch.sigmoid(self.net(x))[0], target.shape)[0])
        weights = np.stack(weights).astype(np.float32)
        return from_canonical(weights, reference) if reference is not None else weights


def _to_canonical(array: np.ndarray, reference: sitk.Image, canonical: sitk.Image) -> np.ndarray:
    """Arrays (…, *spatial) on ``reference``'s voxels into the canonical order (``canonical`` =
    :func:`canonical_orientation` of ``reference``)."""
    if reference.GetDimension() != 3:
        return array
    flat = array.reshape(-1, *array.shape[-3:])
    out = []
    for volume in flat:
        image = sitk.GetImageFromArray(np.ascontiguousarray(volume))
        image.CopyInformation(reference)
        out.append(sitk.GetArrayFromImage(sitk.DICOMOrient(image, CANONICAL_ORIENTATION)))
    return np.stack(out).reshape(*array.shape[:-3], *canonical.GetSize()[::-1])


def load_learned_mas(model_dir: Path, device: str = "cpu") -> tuple[LearnedRegistration, SimNetFusion | None]:
    """Load a folder written by :func:`train_learned_mas` (weights with ``weights_only=True``).

    Raises:
        FileNotFoundError: a missing config or weight file, naming it.
    """
    model_dir = Path(model_dir)
    config_file, weights_file = model_dir / MODEL_CONFIG, model_dir / BIREGNET_WEIGHTS
    for path in (config_file, weights_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; train a model with 'nnunet_mm mas-train' first.")
    values = json.loads(config_file.read_text(encoding="utf-8"))
    config = LearnedMASConfig(**{**values, "grid_shape": tuple(values["grid_shape"])})
    net = BiRegNet(config.spatial_dims, config.base_channels, config.num_levels)
    net.load_state_dict(torch.load(weights_file, map_location="cpu", weights_only=True))
    from nnunet_mm.atlas.mas import file_sha256

    digest = file_sha256(weights_file)
    training_file = model_dir / "training.json"
    training_cases = (json.loads(training_file.read_text(encoding="utf-8")).get("target_training_cases")
                      if training_file.is_file() else None)
    backend = LearnedRegistration(net.to(device), config, digest, device, model_dir=model_dir,
                                  training_cases=training_cases)
    simnet = None
    if (model_dir / SIMNET_WEIGHTS).is_file():
        sim = SimNet(config.spatial_dims, config.num_classes - 1, config.simnet_base_channels, config.num_levels)
        sim.load_state_dict(torch.load(model_dir / SIMNET_WEIGHTS, map_location="cpu", weights_only=True))
        simnet = SimNetFusion(sim.to(device), config, device, model_dir=model_dir, training_cases=training_cases)
    return backend, simnet
