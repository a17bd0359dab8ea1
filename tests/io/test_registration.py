"""nnunet_mm.io.registration: a known shift of a blob-shaped volume is recovered."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_mm.io import register, resample_to_reference

SPACING_XYZ_MM = (2.0, 2.0, 3.0)
CENTRE_INDEX_XYZ = (12.0, 12.0, 6.0)


def _blobs(size_zyx=(12, 24, 24), seed: int = 0) -> sitk.Image:
    """Soft tissue ellipsoid with a bright and a dark blob inside, in air, plus noise."""
    z, y, x = np.meshgrid(*[np.arange(n) for n in size_zyx], indexing="ij")

    def ellipsoid(centre, radii):
        return ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + \
            ((x - centre[2]) / radii[2]) ** 2 <= 1

    values = np.full(size_zyx, -1000.0, np.float32)
    values[ellipsoid((6, 12, 12), (4.5, 9, 8))] = 60
    values[ellipsoid((6, 10, 9), (2, 3, 3))] = 200
    values[ellipsoid((5, 15, 16), (2, 2, 3))] = -20
    values = ndimage.gaussian_filter(values, 0.8) + np.random.default_rng(seed).normal(0, 5, size_zyx)
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing(SPACING_XYZ_MM)
    return image


def _shifted(image: sitk.Image, shift_mm) -> sitk.Image:
    """The same anatomy moved by ``shift_mm``: ``moving(p) = image(p - shift_mm)``. The transform from fixed to
    moving space that registration should find is therefore ``p -> p + shift_mm``."""
    minus = tuple(-v for v in shift_mm)
    return sitk.Resample(image, image, sitk.TranslationTransform(3, minus), sitk.sitkLinear, -1000.0)


def _recovered_shift(transform: sitk.Transform, image: sitk.Image) -> np.ndarray:
    centre = np.array(image.TransformContinuousIndexToPhysicalPoint(CENTRE_INDEX_XYZ))
    return np.array(transform.TransformPoint(tuple(centre))) - centre


@pytest.mark.parametrize("initialization", ["geometry", "physical"])
def test_rigid_registration_recovers_a_known_translation_within_one_voxel(initialization: str) -> None:
    fixed = _blobs()
    shift_mm = (3.0, -2.5, 4.0)
    moving = _shifted(fixed, shift_mm)
    transform = register(fixed, moving, mode="rigid", initialization=initialization)
    assert isinstance(transform, sitk.Euler3DTransform)
    error_voxels = (_recovered_shift(transform, fixed) - np.array(shift_mm)) / np.array(SPACING_XYZ_MM)
    assert np.all(np.abs(error_voxels) < 1.0), error_voxels


def test_registration_improves_the_alignment_of_the_resampled_image() -> None:
    fixed = _blobs()
    moving = _shifted(fixed, (0.0, 4.0, -5.0))
    transform = register(fixed, moving, mode="rigid")
    fixed_values = sitk.GetArrayFromImage(fixed)
    before = np.abs(sitk.GetArrayFromImage(resample_to_reference(moving, fixed)) - fixed_values).mean()
    after = np.abs(sitk.GetArrayFromImage(resample_to_reference(moving, fixed, transform=transform))
                   - fixed_values).mean()
    assert after < 0.5 * before


def test_affine_registration_starts_from_the_rigid_result_and_recovers_the_translation() -> None:
    fixed = _blobs()
    shift_mm = (-3.0, 2.0, 3.0)
    transform = register(fixed, _shifted(fixed, shift_mm), mode="affine")
    assert isinstance(transform, sitk.AffineTransform)
    error_voxels = (_recovered_shift(transform, fixed) - np.array(shift_mm)) / np.array(SPACING_XYZ_MM)
    assert np.all(np.abs(error_voxels) < 1.0), error_voxels


def test_registration_is_deterministic_and_accepts_a_fixed_mask() -> None:
    fixed = _blobs()
    moving = _shifted(fixed, (2.0, 2.0, 0.0))
    mask = sitk.GetImageFromArray((sitk.GetArrayFromImage(fixed) > -500).astype(np.uint8))
    mask.CopyInformation(fixed)
    first = register(fixed, moving, mode="rigid", fixed_mask=mask, seed=3)
    second = register(fixed, moving, mode="rigid", fixed_mask=mask, seed=3)
    # identical up to the round-off of multi-threaded sums
    np.testing.assert_allclose(first.GetParameters(), second.GetParameters(), rtol=0, atol=1e-9)


def test_register_lists_the_valid_modes() -> None:
    image = _blobs()
    with pytest.raises(ValueError, match=r"unknown registration mode 'bspline'; expected one of \['rigid', 'affine'\]"):
        register(image, image, mode="bspline")
