"""Intensity-based rigid and affine registration (SimpleITK), e.g. of contrast phases to a reference phase.

The metric is Mattes mutual information, which tolerates the intensity changes between contrast phases and
modalities. Optimisation runs on a 3-level pyramid (shrink 4, 2, 1; Gaussian smoothing 2, 1, 0 mm) with regular
step gradient descent and physical-shift optimizer scales. Metric samples are drawn at random from a fixed seed, so
repeated runs on the same inputs give the same transform (up to the round-off of multi-threaded sums, ~1e-15).
"""
from __future__ import annotations

import logging
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


def _initial_rigid(fixed: sitk.Image, moving: sitk.Image, initialization: str) -> sitk.Euler3DTransform:
    if initialization == "geometry":
        # moves the centre of the moving image onto the centre of the fixed image
        return sitk.Euler3DTransform(sitk.CenteredTransformInitializer(
            fixed, moving, sitk.Euler3DTransform(), sitk.CenteredTransformInitializerFilter.GEOMETRY))
    # identity in scanner coordinates, rotating about the centre of the fixed image
    transform = sitk.Euler3DTransform()
    centre_index = [(size - 1) / 2.0 for size in fixed.GetSize()]
    transform.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint(centre_index))
    return transform


def _run(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform, fixed_mask: sitk.Image | None,
         seed: int) -> sitk.Transform:
    shrink_factors, smoothing_sigmas = _pyramid(fixed)
    percentages = _sampling_percentages(fixed, shrink_factors)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(
        numberOfHistogramBins=_histogram_bins(fixed, shrink_factors[0], percentages[0]))
    method.SetMetricSamplingStrategy(method.RANDOM)
    if seed == 0:
        raise ValueError("seed 0 makes SimpleITK seed the metric sampling from the wall clock (not reproducible); "
                         "use a positive seed.")
    method.SetMetricSamplingPercentagePerLevel(percentages, seed)
    if fixed_mask is not None:
        method.SetMetricFixedMask(fixed_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=1e-3, numberOfIterations=100,
                                                    relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(shrink_factors)
    method.SetSmoothingSigmasPerLevel(smoothing_sigmas)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    result = method.Execute(fixed, moving)
    logger.debug("registration stopped after %d iterations at metric %.4f: %s", method.GetOptimizerIteration(),
                 method.GetMetricValue(), method.GetOptimizerStopConditionDescription())
    return _unwrap(result)


def _unwrap(transform: sitk.Transform) -> sitk.Transform:
    """``Execute`` returns a composite holding the optimised transform; return that transform itself."""
    if isinstance(transform, sitk.CompositeTransform) and transform.GetNumberOfTransforms() == 1:
        return transform.GetNthTransform(0).Downcast()
    return transform.Downcast() if hasattr(transform, "Downcast") else transform


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
        ValueError: an unknown ``mode`` or ``initialization``, or images that are not 3D.
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
        affine = sitk.AffineTransform(3)
        affine.SetCenter(rigid.GetCenter())
        affine.SetMatrix(rigid.GetMatrix())
        affine.SetTranslation(rigid.GetTranslation())
        return _run(fixed, moving, affine, fixed_mask, seed)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise RuntimeError(f"{mode} registration failed: {lines[-1] if lines else error}") from None
