"""nnunet_mm.io.resample: resampling onto a reference grid and comparing grids."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mm.io import describe_geometry, geometry_differences, resample_to_reference, same_geometry


def _image(values: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(values)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def _ramp_x(size_zyx=(4, 5, 10), dtype=np.int16, step=10) -> np.ndarray:
    """Values that grow by ``step`` per voxel along x."""
    return np.broadcast_to(np.arange(size_zyx[2]) * step, size_zyx).astype(dtype)


def test_resampling_onto_its_own_grid_is_the_identity() -> None:
    image = _image(_ramp_x(), spacing=(0.7, 0.8, 2.0), origin=(3.0, -2.0, 1.0))
    out = resample_to_reference(image, image)
    assert same_geometry(out, image, tolerance=0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(image))
    assert out.GetPixelID() == image.GetPixelID()


def test_output_takes_the_reference_grid_and_follows_physical_coordinates() -> None:
    moving = _image(_ramp_x(size_zyx=(4, 5, 20)).astype(np.float32), spacing=(1.0, 1.0, 1.0))
    reference = _image(np.zeros((2, 3, 5), np.float32), spacing=(2.0, 1.5, 1.0), origin=(1.0, 0.5, 1.0))
    out = resample_to_reference(moving, reference)
    assert same_geometry(out, reference, tolerance=0)
    # reference voxel i lies at x = 1 + 2 i mm, where the ramp has value 10 * x
    np.testing.assert_allclose(sitk.GetArrayFromImage(out)[0, 0], 10 * (1 + 2 * np.arange(5)), atol=1e-4)


def test_integer_images_are_rounded_not_truncated() -> None:
    moving = _image(_ramp_x())
    shifted = sitk.TranslationTransform(3, (0.26, 0.0, 0.0))  # samples x + 0.26: 2.6, 12.6, ...
    out = sitk.GetArrayFromImage(resample_to_reference(moving, moving, transform=shifted))
    np.testing.assert_array_equal(out[0, 0, :3], [3, 13, 23])


def test_default_value_is_the_image_minimum_and_zero_for_labels() -> None:
    image = _image(_ramp_x().astype(np.int16) - 1000)
    far_away = sitk.TranslationTransform(3, (500.0, 0.0, 0.0))
    assert np.all(sitk.GetArrayFromImage(resample_to_reference(image, image, transform=far_away)) == -1000)
    label = _image(np.full((4, 5, 10), 2, np.uint8))
    assert np.all(sitk.GetArrayFromImage(resample_to_reference(label, label, transform=far_away,
                                                               is_label=True)) == 0)
    assert np.all(sitk.GetArrayFromImage(resample_to_reference(image, image, transform=far_away,
                                                               default_value=7)) == 7)


def test_labels_use_nearest_neighbour_and_keep_their_values() -> None:
    values = np.zeros((4, 6, 6), np.uint8)
    values[:, :3] = 1
    values[:, 3:] = 2
    label = _image(values)
    finer = _image(np.zeros((8, 12, 12), np.uint8), spacing=(0.5, 0.5, 0.5), origin=(-0.25, -0.25, -0.25))
    out = sitk.GetArrayFromImage(resample_to_reference(label, finer, is_label=True))
    assert set(np.unique(out)) == {1, 2}


def test_same_geometry_compares_size_spacing_origin_and_direction() -> None:
    a = _image(np.zeros((4, 5, 6), np.uint8), spacing=(1.0, 1.0, 2.0))
    b = _image(np.zeros((4, 5, 6), np.uint8), spacing=(1.0, 1.0, 2.0 + 5e-4), origin=(5e-4, 0.0, 0.0))
    assert same_geometry(a, b)
    assert not same_geometry(a, b, tolerance=1e-4)
    assert geometry_differences(a, b, tolerance=1e-4) == ["spacing", "origin"]
    c = _image(np.zeros((4, 5, 7), np.uint8), spacing=(1.0, 1.0, 2.0))
    assert geometry_differences(a, c) == ["size"]
    d = _image(np.zeros((4, 5, 6), np.uint8), spacing=(1.0, 1.0, 2.0))
    d.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert geometry_differences(a, d) == ["direction"]
    assert "size (6, 5, 4)" in describe_geometry(a)


def test_resample_refuses_images_of_different_dimension() -> None:
    with pytest.raises(ValueError, match="2D image onto a 3D grid"):
        resample_to_reference(sitk.Image(4, 4, sitk.sitkFloat32), sitk.Image(4, 4, 4, sitk.sitkFloat32))
