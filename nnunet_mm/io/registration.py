"""Intensity-based registration with SimpleITK: the steps every registration of the project is made of, and
:func:`register`, the rigid / affine registration of contrast phases to a reference phase used by the converters.

The shared steps: :func:`mattes_mi_method` (Mattes mutual information, which tolerates the intensity changes
between contrast phases and modalities; seeded random metric sampling; linear interpolation; a multi-resolution
pyramid with Gaussian smoothing in mm), :func:`linear_stage` (regular step gradient descent with physical-shift
optimizer scales), :func:`centred_rigid` (the moving image's centre onto the fixed image's centre),
:func:`affine_from_linear` (an affine stage that starts where a rigid one stopped) and :func:`registration_error`.
The atlas package (:mod:`nnunet_mm.atlas.registration`) chains the same steps and adds a B-spline stage.

:func:`register` optimises on a 3-level pyramid (shrink 4, 2, 1; smoothing 2, 1, 0 mm). Metric samples are drawn
at random from a fixed seed, so repeated runs on the same inputs give the same transform (up to the round-off of
multi-threaded sums, ~1e-15).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import SimpleITK as sitk

logger = logging.getLogger(__name__)

REGISTRATION_MODES = ("rigid", "affine")
INITIALIZATIONS = ("geometry", "physical")

SHRINK_FACTORS = (4, 2, 1)
SMOOTHING_SIGMAS_MM = (2.0, 1.0, 0.0)
SAMPLING_PERCENTAGE = 0.25
# ... but at most this many samples per level, so that time per iteration stays bounded on full-size CT
MAX_SAMPLES_PER_LEVEL = 50_000
# Joint-histogram bins of Mattes MI: about the cube root of the number of samples at the coarsest level, within
# these limits. Too many bins for few samples makes the metric noisy, and affine stages then drift into scaling.
MIN_HISTOGRAM_BINS, MAX_HISTOGRAM_BINS = 16, 50
# A pyramid level is skipped when the shrunken fixed image would have fewer voxels than this: Mattes MI needs
# enough samples to fill its joint histogram, and tiny levels make the optimiser wander.
MIN_VOXELS_PER_LEVEL = 2000


def _sampling_percentages(fixed: sitk.Image, shrink_factors: list[int]) -> list[float]:
    num_voxels = float(np.prod(fixed.GetSize()))
    return [min(SAMPLING_PERCENTAGE, MAX_SAMPLES_PER_LEVEL * f ** fixed.GetDimension() / num_voxels)
            for f in shrink_factors]


def _histogram_bins(fixed: sitk.Image, coarsest_shrink: int, percentage: float) -> int:
    num_samples = np.prod(fixed.GetSize()) / coarsest_shrink ** fixed.GetDimension() * percentage
    return int(np.clip(round(float(num_samples) ** (1 / 3)), MIN_HISTOGRAM_BINS, MAX_HISTOGRAM_BINS))


def _pyramid(fixed: sitk.Image) -> tuple[list[int], list[float]]:
    num_voxels = float(np.prod(fixed.GetSize()))
    levels = [(f, s) for f, s in zip(SHRINK_FACTORS, SMOOTHING_SIGMAS_MM)
              if f == 1 or num_voxels / f ** fixed.GetDimension() >= MIN_VOXELS_PER_LEVEL]
    return [f for f, _ in levels], [s for _, s in levels]


def mattes_mi_method(fixed: sitk.Image, *, shrink_factors: Sequence[int], smoothing_sigmas_mm: Sequence[float],
                     sampling_percentages: Sequence[float], histogram_bins: int, seed: int,
                     fixed_mask: sitk.Image | None = None, num_threads: int = 0) -> sitk.ImageRegistrationMethod:
    """A registration method with Mattes mutual information, seeded random sampling and a pyramid; the optimizer
    and the initial transform are left to the stage (:func:`linear_stage`, or the atlas's B-spline stage).

    Args:
        fixed: the fixed image (its spacing is the unit of ``smoothing_sigmas_mm``).
        shrink_factors: pyramid levels, coarse to fine.
        smoothing_sigmas_mm: Gaussian smoothing per level, in mm.
        sampling_percentages: share of fixed voxels sampled per level.
        histogram_bins: joint-histogram bins of the metric.
        seed: seed of the metric sampling, > 0.
        fixed_mask: optional binary image on the fixed grid; only voxels inside it are sampled.
        num_threads: SimpleITK threads (0: SimpleITK's default, all cores).

    Raises:
        ValueError: ``seed`` is not positive (SimpleITK seeds from the wall clock at 0: not reproducible).
    """
    if seed <= 0:
        raise ValueError(f"seed must be > 0, got {seed}: at 0 SimpleITK seeds the metric sampling from the wall "
                         f"clock (not reproducible).")
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentagePerLevel(list(sampling_percentages), seed)
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel(list(shrink_factors))
    method.SetSmoothingSigmasPerLevel(list(smoothing_sigmas_mm))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    if num_threads > 0:
        method.SetNumberOfThreads(num_threads)
    return method


def linear_stage(method: sitk.ImageRegistrationMethod, fixed: sitk.Image, moving: sitk.Image,
                 initial: sitk.Transform, *, learning_rate: float, min_step: float, iterations: int,
                 relaxation_factor: float, gradient_tolerance: float) -> sitk.Transform:
    """Optimise a rigid or affine ``initial`` transform with regular step gradient descent (physical-shift scales).

    Returns:
        The optimised transform, of the type of ``initial`` (fixed-space points to moving-space points).

    Raises:
        RuntimeError: SimpleITK's optimiser failed (see :func:`registration_error`).
    """
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=learning_rate, minStep=min_step,
                                                    numberOfIterations=iterations,
                                                    relaxationFactor=relaxation_factor,
                                                    gradientMagnitudeTolerance=gradient_tolerance)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(initial, inPlace=False)
    result = method.Execute(fixed, moving)
    logger.debug("%s stage stopped after %d iterations at metric %.4f: %s", type(initial).__name__,
                 method.GetOptimizerIteration(), method.GetMetricValue(),
                 method.GetOptimizerStopConditionDescription())
    # Execute returns a composite holding the optimised transform; return that transform itself
    if isinstance(result, sitk.CompositeTransform) and result.GetNumberOfTransforms() == 1:
        return result.GetNthTransform(0).Downcast()
    return result.Downcast() if hasattr(result, "Downcast") else result


def centred_rigid(fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform:
    """A rigid transform (2D or 3D) that moves the centre of ``moving`` onto the centre of ``fixed``: the start for
    images that share no scanner coordinates (SimpleITK's centred transform initialiser, geometry mode)."""
    rigid = sitk.Euler3DTransform if fixed.GetDimension() == 3 else sitk.Euler2DTransform
    return rigid(sitk.CenteredTransformInitializer(fixed, moving, rigid(),
                                                   sitk.CenteredTransformInitializerFilter.GEOMETRY))


def affine_from_linear(linear: sitk.Transform) -> sitk.AffineTransform:
    """The affine transform equal to a rigid (or affine) one: where an affine stage starts."""
    affine = sitk.AffineTransform(linear.GetDimension())
    affine.SetCenter(linear.GetCenter())
    affine.SetMatrix(linear.GetMatrix())
    affine.SetTranslation(linear.GetTranslation())
    return affine


def registration_error(error: RuntimeError, what: str) -> RuntimeError:
    """``"{what} failed: <SimpleITK's reason>"``: the last line of ITK's long exception text."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return RuntimeError(f"{what} failed: {lines[-1] if lines else error}")


def _initial_rigid(fixed: sitk.Image, moving: sitk.Image, initialization: str) -> sitk.Transform:
    if initialization == "geometry":
        return centred_rigid(fixed, moving)
    # identity in scanner coordinates, rotating about the centre of the fixed image
    transform = sitk.Euler3DTransform()
    centre_index = [(size - 1) / 2.0 for size in fixed.GetSize()]
    transform.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint(centre_index))
    return transform


def _run(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform, fixed_mask: sitk.Image | None,
         seed: int) -> sitk.Transform:
    shrink_factors, smoothing_sigmas = _pyramid(fixed)
    percentages = _sampling_percentages(fixed, shrink_factors)
    method = mattes_mi_method(fixed, shrink_factors=shrink_factors, smoothing_sigmas_mm=smoothing_sigmas,
                              sampling_percentages=percentages,
                              histogram_bins=_histogram_bins(fixed, shrink_factors[0], percentages[0]), seed=seed,
                              fixed_mask=fixed_mask)
    return linear_stage(method, fixed, moving, initial, learning_rate=2.0, min_step=1e-3, iterations=100,
                        relaxation_factor=0.5, gradient_tolerance=1e-6)


def register(fixed: sitk.Image, moving: sitk.Image, *, mode: Literal["rigid", "affine"],
             fixed_mask: sitk.Image | None = None, seed: int = 1,
             initialization: Literal["geometry", "physical"] = "geometry") -> sitk.Transform:
    """Register ``moving`` to ``fixed``.

    Args:
        fixed: the reference image (e.g. the portal-venous phase); its grid is where the metric is evaluated.
        moving: the image to align (e.g. the arterial phase), on any grid.
        mode: ``"rigid"`` (rotation + translation, 6 parameters) or ``"affine"`` (12 parameters; a rigid stage
            runs first and initialises the affine stage).
        fixed_mask: optional binary image on the fixed grid; only voxels inside it are sampled.
        seed: seed of the random metric sampling (must not be 0: SimpleITK seeds from the wall clock then).
        initialization: starting point of the rigid stage. ``"geometry"`` moves the centre of the moving image
            onto the centre of the fixed image (SimpleITK's centred transform initialiser); use it when the two
            images do not share a coordinate system. ``"physical"`` starts from the identity in scanner
            coordinates, which is right when both images come from one session but cover different extents (e.g.
            contrast phases with different z-ranges), where centring would shift them apart.

    Returns:
        A transform that maps points of the fixed space to the moving space, ready for
        ``resample_to_reference(moving, fixed, transform=...)``: an ``Euler3DTransform`` (rigid) or an
        ``AffineTransform`` (affine).

    Raises:
        ValueError: an unknown ``mode`` or ``initialization``, images that are not 3D, or ``seed`` <= 0.
        RuntimeError: the optimisation failed (e.g. the images do not overlap); SimpleITK's reason is included.
    """
    if mode not in REGISTRATION_MODES:
        raise ValueError(f"unknown registration mode {mode!r}; expected one of {list(REGISTRATION_MODES)}.")
    if initialization not in INITIALIZATIONS:
        raise ValueError(f"unknown initialization {initialization!r}; expected one of {list(INITIALIZATIONS)}.")
    if fixed.GetDimension() != 3 or moving.GetDimension() != 3:
        raise ValueError(f"register needs 3D images, got fixed {fixed.GetDimension()}D and moving "
                         f"{moving.GetDimension()}D.")
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    if fixed_mask is not None:
        fixed_mask = sitk.Cast(fixed_mask > 0, sitk.sitkUInt8)
    try:
        rigid = _run(fixed, moving, _initial_rigid(fixed, moving, initialization), fixed_mask, seed)
        if mode == "rigid":
            return rigid
        return _run(fixed, moving, affine_from_linear(rigid), fixed_mask, seed)
    except RuntimeError as error:
        raise registration_error(error, f"{mode} registration") from None
