"""Cross-modality atlas-to-target registration with SimpleITK: rigid → affine → B-spline, Mattes mutual information.

Mutual information only asks that the target's intensities be *predictable* from the atlas's, not equal to them,
so a labelled CT atlas can be registered to an MR target (paper 004's setting). Every stage runs on a
multi-resolution pyramid with SimpleITK's multi-threaded metric. The stages chain: the affine stage starts from the
rigid result, the B-spline stage optimises a free-form deformation on top of the affine transform. The result is one
transform from target (fixed) space to atlas (moving) space, ready to pull atlas labels onto the target grid with
:func:`warp_label_probabilities`. The metric, the linear stages and the rigid → affine hand-over are the shared
steps of :mod:`nnunet_mm.io.registration`; this module adds the atlas settings and the B-spline stage.

Works for 2D and 3D images (SimpleITK images; arrays are (z, y, x)).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from nnunet_mm.io.registration import (affine_from_linear, centred_rigid, linear_stage, mattes_mi_method,
                                       registration_error)
from nnunet_mm.io.resample import resample_to_reference

logger = logging.getLogger(__name__)

STAGES = ("rigid", "affine", "bspline")


@dataclass(frozen=True)
class RegistrationSettings:
    """Parameters of :func:`register_atlas`.

    Attributes:
        stages: the stages to run, a prefix-ordered subset of ``("rigid", "affine", "bspline")``.
        iterations: optimiser iterations per pyramid level of the rigid/affine stages.
        bspline_iterations: L-BFGS-B iterations per pyramid level of the B-spline stage.
        bspline_grid_spacing_mm: control-point spacing of the B-spline mesh (smaller: more local freedom).
        shrink_factors: pyramid levels (coarse to fine) of the rigid/affine stages.
        bspline_shrink_factors: pyramid levels of the B-spline stage.
        histogram_bins: joint-histogram bins of Mattes mutual information.
        sampling_percentage: share of fixed voxels sampled for the metric (random, seeded).
        num_threads: SimpleITK threads (0: SimpleITK's default, all cores).
        seed: seed of the metric sampling (> 0; SimpleITK seeds from the clock at 0).
    """

    stages: tuple[str, ...] = STAGES
    iterations: int = 100
    bspline_iterations: int = 50
    bspline_grid_spacing_mm: float = 30.0
    shrink_factors: tuple[int, ...] = (4, 2, 1)
    bspline_shrink_factors: tuple[int, ...] = (2, 1)
    histogram_bins: int = 32
    sampling_percentage: float = 0.3
    num_threads: int = 0
    seed: int = 1

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown or not self.stages:
            raise ValueError(f"unknown registration stage(s) {unknown or '(none given)'}; choose from {list(STAGES)}.")
        if list(self.stages) != [s for s in STAGES if s in self.stages]:
            raise ValueError(f"stages must run in the order {list(STAGES)}, got {list(self.stages)}.")
        if self.seed <= 0:
            raise ValueError(f"seed must be > 0 (SimpleITK seeds from the wall clock at 0), got {self.seed}.")
        if not 0 < self.sampling_percentage <= 1:
            raise ValueError(f"sampling_percentage must be in (0, 1], got {self.sampling_percentage}.")

    def to_dict(self) -> dict:
        """JSON-friendly form (stored in the written dataset.json and in cache keys)."""
        values = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _usable_levels(fixed: sitk.Image, shrink_factors: tuple[int, ...]) -> list[int]:
    """Drop pyramid levels at which any axis would have fewer than 8 voxels."""
    levels = [f for f in shrink_factors if min(fixed.GetSize()) // f >= 8]
    return levels or [1]


def _method(fixed: sitk.Image, settings: RegistrationSettings,
            shrink_factors: tuple[int, ...]) -> sitk.ImageRegistrationMethod:
    levels = _usable_levels(fixed, shrink_factors)
    return mattes_mi_method(fixed, shrink_factors=levels,
                            smoothing_sigmas_mm=[max(f - 1, 0) * 0.5 * min(fixed.GetSpacing()) for f in levels],
                            sampling_percentages=[settings.sampling_percentage] * len(levels),
                            histogram_bins=settings.histogram_bins, seed=settings.seed,
                            num_threads=settings.num_threads)


def _linear_stage(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform,
                  settings: RegistrationSettings) -> sitk.Transform:
    return linear_stage(_method(fixed, settings, settings.shrink_factors), fixed, moving, initial, learning_rate=1.0,
                        min_step=1e-4, iterations=settings.iterations, relaxation_factor=0.6,
                        gradient_tolerance=1e-8)


def _bspline_stage(fixed: sitk.Image, moving: sitk.Image, linear: sitk.Transform,
                   settings: RegistrationSettings) -> sitk.BSplineTransform:
    extent_mm = [n * s for n, s in zip(fixed.GetSize(), fixed.GetSpacing())]
    mesh_size = [max(1, int(round(e / settings.bspline_grid_spacing_mm))) for e in extent_mm]
    bspline = sitk.BSplineTransformInitializer(fixed, mesh_size, order=3)
    method = _method(fixed, settings, settings.bspline_shrink_factors)
    method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=settings.bspline_iterations,
                                maximumNumberOfCorrections=5,
                                maximumNumberOfFunctionEvaluations=2 * settings.bspline_iterations,
                                costFunctionConvergenceFactor=1e7)
    method.SetMovingInitialTransform(linear)
    method.SetInitialTransform(bspline, inPlace=True)
    method.Execute(fixed, moving)
    logger.debug("bspline stage: metric %.4f, %s", method.GetMetricValue(),
                 method.GetOptimizerStopConditionDescription())
    return bspline


def register_atlas(fixed: sitk.Image, moving: sitk.Image,
                   settings: RegistrationSettings = RegistrationSettings()) -> sitk.Transform:
    """Register an atlas image (``moving``) to a target image (``fixed``) of possibly another modality.

    Args:
        fixed: the target image (its grid is where the metric is evaluated and where labels will be warped to).
        moving: the atlas image, on any grid, of the same dimension.
        settings: stages, pyramid, iterations, threads, seed.

    Returns:
        A transform mapping fixed-space points to moving-space points (a ``CompositeTransform`` of the linear
        transform and the B-spline deformation when the B-spline stage runs; B-spline applied first).

    Raises:
        ValueError: images of different or unsupported dimension.
        RuntimeError: SimpleITK's optimiser failed (e.g. the images do not overlap), with its reason.
    """
    dimension = fixed.GetDimension()
    if dimension not in (2, 3) or moving.GetDimension() != dimension:
        raise ValueError(f"register_atlas needs two 2D or two 3D images, got {dimension}D and "
                         f"{moving.GetDimension()}D.")
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    # centre of the atlas onto the centre of the target: atlases and targets share no scanner coordinates
    transform = centred_rigid(fixed, moving)
    try:
        if "rigid" in settings.stages:
            transform = _linear_stage(fixed, moving, transform, settings)
        if "affine" in settings.stages:
            transform = _linear_stage(fixed, moving, affine_from_linear(transform), settings)
        if "bspline" in settings.stages:
            bspline = _bspline_stage(fixed, moving, transform, settings)
            transform = sitk.CompositeTransform([transform, bspline])  # applied last-first: bspline, then linear
    except RuntimeError as error:
        raise registration_error(error, "atlas registration") from None
    return transform


def warp_label_probabilities(label: sitk.Image, reference: sitk.Image, transform: sitk.Transform,
                             num_classes: int) -> np.ndarray:
    """Pull an atlas label map onto the target grid as per-class probabilities.

    Each class's indicator is resampled with linear interpolation, so voxels on a warped boundary get partial
    membership (the "soft" warped label of paper 004); outside the atlas everything is background.

    Args:
        label: integer atlas label map (values ``0..num_classes-1``).
        reference: supplies the output grid (the target image).
        transform: target→atlas transform from :func:`register_atlas` (identity: ``sitk.Transform()``).
        num_classes: K, including background.

    Returns:
        (K, *spatial) float32 array (z, y, x order) whose classes sum to 1 at every voxel.
    """
    array = sitk.GetArrayFromImage(label)
    found = np.unique(array)
    if found.min() < 0 or found.max() >= num_classes:
        raise ValueError(f"label values {found.tolist()} are outside 0..{num_classes - 1}.")
    probabilities = []
    for k in range(num_classes):
        indicator = sitk.GetImageFromArray((array == k).astype(np.float32))
        indicator.CopyInformation(label)
        warped = resample_to_reference(indicator, reference, transform=transform,
                                       default_value=1.0 if k == 0 else 0.0)
        probabilities.append(sitk.GetArrayFromImage(warped))
    stacked = np.clip(np.stack(probabilities), 0.0, 1.0)
    return (stacked / np.maximum(stacked.sum(0, keepdims=True), 1e-6)).astype(np.float32)


def warp_image(image: sitk.Image, reference: sitk.Image, transform: sitk.Transform) -> np.ndarray:
    """The atlas image on the target grid (linear; outside filled with the atlas minimum), as a float32 array."""
    return sitk.GetArrayFromImage(resample_to_reference(sitk.Cast(image, sitk.sitkFloat32), reference,
                                                        transform=transform))
