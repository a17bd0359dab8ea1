"""Resampling an image onto another image's voxel grid, and comparing grids."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from nnunet_mm.io.images import is_integer_pixel_type


def resample_to_reference(moving: sitk.Image, reference: sitk.Image, *, transform: sitk.Transform | None = None,
                          is_label: bool = False, default_value: float | None = None) -> sitk.Image:
    """Resample ``moving`` onto the grid (size, spacing, origin, direction) of ``reference``.

    Args:
        moving: the image to resample (any scalar pixel type).
        reference: supplies the output grid; its voxel values are not used.
        transform: maps points of the reference (fixed) space to the moving space, as returned by
            :func:`nnunet_mm.io.registration.register`; None = identity, i.e. both images are already aligned in
            physical (scanner) coordinates.
        is_label: nearest-neighbour interpolation (labels) instead of linear (images).
        default_value: value for output voxels that fall outside ``moving``; None = 0 for labels and the minimum
            of ``moving`` for images (air for CT).

    Returns:
        An image on the reference grid with the pixel type of ``moving``. Integer images are interpolated in
        float and rounded to the nearest integer (not truncated).
    """
    if moving.GetDimension() != reference.GetDimension():
        raise ValueError(f"cannot resample a {moving.GetDimension()}D image onto a {reference.GetDimension()}D grid.")
    if transform is None:
        transform = sitk.Transform(reference.GetDimension(), sitk.sitkIdentity)
    if default_value is None:
        if is_label:
            default_value = 0.0
        else:
            stats = sitk.MinimumMaximumImageFilter()
            stats.Execute(moving)
            default_value = stats.GetMinimum()
    if is_label:
        return sitk.Resample(moving, reference, transform, sitk.sitkNearestNeighbor, float(default_value),
                             moving.GetPixelID())
    if not is_integer_pixel_type(moving):
        return sitk.Resample(moving, reference, transform, sitk.sitkLinear, float(default_value),
                             moving.GetPixelID())
    # ITK's resampler truncates when it casts back to an integer type; interpolate in float and round instead.
    resampled = sitk.Resample(moving, reference, transform, sitk.sitkLinear, float(default_value), sitk.sitkFloat32)
    values = sitk.GetArrayViewFromImage(resampled)
    dtype = sitk.GetArrayViewFromImage(moving).dtype
    limits = np.iinfo(dtype)
    rounded = np.clip(np.rint(values), limits.min, limits.max).astype(dtype)
    result = sitk.GetImageFromArray(rounded)
    result.CopyInformation(reference)
    return result


def same_geometry(a: sitk.Image, b: sitk.Image, *, tolerance: float = 1e-3) -> bool:
    """True if both images have the same size and, within ``tolerance`` (absolute; mm for spacing and origin),
    the same spacing, origin and direction."""
    return not geometry_differences(a, b, tolerance=tolerance)


def geometry_differences(a: sitk.Image, b: sitk.Image, *, tolerance: float = 1e-3) -> list[str]:
    """Names of the grid properties that differ: a subset of ``["dimension", "size", "spacing", "origin",
    "direction"]`` (empty if the grids agree)."""
    if a.GetDimension() != b.GetDimension():
        return ["dimension"]
    differences = []
    if a.GetSize() != b.GetSize():
        differences.append("size")
    for name in ("spacing", "origin", "direction"):
        getter = "Get" + name.capitalize()
        if not np.allclose(getattr(a, getter)(), getattr(b, getter)(), rtol=0.0, atol=tolerance):
            differences.append(name)
    return differences


def describe_geometry(image: sitk.Image) -> str:
    """One line with size, spacing, origin and direction (SimpleITK's x, y, z order), for error messages."""
    def fmt(values: tuple[float, ...]) -> str:
        return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"

    return (f"size {tuple(image.GetSize())}, spacing {fmt(image.GetSpacing())}, origin {fmt(image.GetOrigin())}, "
            f"direction {fmt(image.GetDirection())}")
