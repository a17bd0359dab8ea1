"""Label fusion of K warped atlas labels into per-class probabilities on the target grid.

Methods (all return (C, *spatial) float32 probabilities that sum to 1 over the C classes; the hard fused label is
their argmax):

* ``majority``: each atlas votes for its (soft) warped label; probabilities are the vote shares.
* ``staple``: SimpleITK's STAPLE, which weighs each atlas by its estimated sensitivity/specificity (expectation
  maximisation), run per foreground class; the class probabilities are STAPLE's posteriors, normalised with the
  background.
* ``local``: locally weighted voting. Each atlas's vote at voxel x is weighted by how well its warped image matches
  the target around x. Across modalities intensities differ, but locally they are related by an (increasing or
  decreasing) linear map, so the weight is the squared local normalised cross-correlation (Gaussian window) raised
  to ``power``.
* ``weighted``: the same weighted vote with weights from elsewhere (SimNet's similarity maps, paper 004:
  ``L̂(x) = argmax_l Σ_i s_i(x)·[Â_i(x) = l]``).
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

FUSION_METHODS = ("majority", "staple", "local", "simnet")


def _check_probabilities(atlas_probabilities: np.ndarray) -> None:
    if atlas_probabilities.ndim < 3:
        raise ValueError(f"expected (K atlases, C classes, *spatial) probabilities, got shape "
                         f"{atlas_probabilities.shape}.")
    if atlas_probabilities.shape[0] < 1:
        raise ValueError("label fusion needs at least one atlas.")


def weighted_vote(atlas_probabilities: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted vote: ``P(c, x) = Σ_i w_i(x) p_i(c, x) / Σ_i w_i(x)``.

    Args:
        atlas_probabilities: (K, C, *spatial) warped atlas labels as class probabilities (one-hot or soft).
        weights: (K, *spatial) non-negative weights per atlas and voxel (or (K,) global weights).

    Returns:
        (C, *spatial) float32 class probabilities.
    """
    _check_probabilities(atlas_probabilities)
    weights = np.asarray(weights, dtype=np.float32)
    if weights.ndim == 1:
        weights = weights.reshape(-1, *[1] * (atlas_probabilities.ndim - 2))
    if weights.shape[0] != atlas_probabilities.shape[0]:
        raise ValueError(f"{weights.shape[0]} weight maps for {atlas_probabilities.shape[0]} atlases.")
    if (weights < 0).any():
        raise ValueError("fusion weights must be non-negative.")
    weights = weights + 1e-8  # where every weight is 0, fall back to the plain vote
    fused = (weights[:, None] * atlas_probabilities).sum(0) / weights.sum(0)[None]
    return fused.astype(np.float32)


def majority_vote(atlas_probabilities: np.ndarray) -> np.ndarray:
    """Equal-weight vote of every atlas; (K, C, *spatial) → (C, *spatial)."""
    return weighted_vote(atlas_probabilities, np.ones(atlas_probabilities.shape[0], dtype=np.float32))


def staple(atlas_probabilities: np.ndarray, *, threshold: float = 0.5) -> np.ndarray:
    """STAPLE (SimpleITK) per foreground class on the thresholded atlas labels.

    Args:
        atlas_probabilities: (K, C, *spatial).
        threshold: a warped atlas marks class c where its probability is at least this.

    Returns:
        (C, *spatial) probabilities: each foreground class's STAPLE posterior; background takes the rest
        (normalised where foreground posteriors overlap).
    """
    _check_probabilities(atlas_probabilities)
    num_classes = atlas_probabilities.shape[1]
    foreground = []
    for c in range(1, num_classes):
        masks = [sitk.GetImageFromArray((a[c] >= threshold).astype(np.uint8)) for a in atlas_probabilities]
        if not any(sitk.GetArrayViewFromImage(m).any() for m in masks):
            foreground.append(np.zeros(atlas_probabilities.shape[2:], dtype=np.float32))
            continue
        staple_filter = sitk.STAPLEImageFilter()
        staple_filter.SetForegroundValue(1.0)
        posterior = sitk.GetArrayFromImage(staple_filter.Execute(masks)).astype(np.float32)
        foreground.append(np.nan_to_num(posterior, nan=0.0))
    foreground = np.stack(foreground) if foreground else np.zeros((0, *atlas_probabilities.shape[2:]), np.float32)
    total = foreground.sum(0)
    scale = np.where(total > 1, 1.0 / np.maximum(total, 1e-8), 1.0)
    foreground = foreground * scale
    return np.concatenate([(1.0 - foreground.sum(0))[None], foreground]).astype(np.float32)


def local_similarity_weights(target: np.ndarray, warped_atlas_images: np.ndarray, *, sigma_voxels: float = 2.0,
                             power: float = 2.0) -> np.ndarray:
    """Weights of locally weighted voting: ``w_i(x) = LNCC_i(x)^2 ^ (power / 2)``.

    Args:
        target: (*spatial) target image.
        warped_atlas_images: (K, *spatial) atlas images warped to the target.
        sigma_voxels: standard deviation of the Gaussian window.
        power: sharpness (larger: the best-matching atlas dominates).

    Returns:
        (K, *spatial) float32 weights in [0, 1].
    """
    target = target.astype(np.float64)
    mean_t = ndimage.gaussian_filter(target, sigma_voxels)
    var_t = ndimage.gaussian_filter(target ** 2, sigma_voxels) - mean_t ** 2
    weights = []
    for atlas in warped_atlas_images.astype(np.float64):
        mean_a = ndimage.gaussian_filter(atlas, sigma_voxels)
        var_a = ndimage.gaussian_filter(atlas ** 2, sigma_voxels) - mean_a ** 2
        covariance = ndimage.gaussian_filter(atlas * target, sigma_voxels) - mean_a * mean_t
        ncc_squared = covariance ** 2 / np.maximum(var_a * var_t, 1e-12)
        weights.append(np.clip(ncc_squared, 0.0, 1.0) ** (power / 2))
    return np.stack(weights).astype(np.float32)


def locally_weighted_vote(atlas_probabilities: np.ndarray, target: np.ndarray, warped_atlas_images: np.ndarray,
                          *, sigma_voxels: float = 2.0, power: float = 2.0) -> np.ndarray:
    """Weighted vote with :func:`local_similarity_weights`; (K, C, *spatial) → (C, *spatial)."""
    weights = local_similarity_weights(target, warped_atlas_images, sigma_voxels=sigma_voxels, power=power)
    return weighted_vote(atlas_probabilities, weights)


def fused_label(probabilities: np.ndarray) -> np.ndarray:
    """Hard label (argmax over classes) of (C, *spatial) probabilities, uint8."""
    return probabilities.argmax(0).astype(np.uint8)
