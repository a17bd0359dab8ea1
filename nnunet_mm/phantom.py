"""Seeded synthetic multi-phase liver CT phantoms and writers for every dataset layout our converters read.

The recipe follows ``docs/datasets.md`` §4. One call to :func:`make_case` builds an abdomen in the reference
(portal-venous) grid from nested ellipsoids: a body of fat and muscle, a vertebra, the aorta, the IVC, a
noise-perturbed liver with the portal vein inside it, the spleen, two kidneys, and one to three liver lesions
(HCC-like hypervascular, hypovascular metastasis, cyst). Every other phase sees the same anatomy through its own
misregistration: a rigid breath-hold offset, a smooth deformation from a coarse control grid, and an extra shift of
each lesion, so that the organs stay roughly aligned while the tumours do not (the mmLiTs regime). The tissue map is
warped with nearest-neighbour interpolation, then rendered with the per-phase HU table, blurred (partial volume),
made noisy, clipped to [-1024, 3071] and cast to int16.

Axis order is (z, y, x) everywhere in this module, with direction cosines = identity, i.e. SimpleITK's LPS: +x is
the patient's left, +y posterior, +z cranial. The writers produce the nnU-Net raw layout, the per-case multi-phase
folders of the Dataset511 converter, LiTS (``volume-N.nii``) and MPTH (per-slice PNGs).

Example::

    case = make_case(0)
    art = case.to_sitk("art")            # int16 HU image on the arterial phase's own grid
    label = case.label_to_sitk("pv")     # 0 background, 1 liver, 2 tumour
"""
from __future__ import annotations

import argparse
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.interpolate import CubicSpline
from scipy.spatial.transform import Rotation
from scipy.stats import special_ortho_group

from nnunet_mm.io.images import write_image
from nnunet_mm.settings import BLOCK_KEY

logger = logging.getLogger(__name__)

__all__ = [
    "HU_BY_TISSUE",
    "LABELS",
    "LESION_KINDS",
    "PHASE_NAMES",
    "GridGeometry",
    "Lesion",
    "PhantomCase",
    "case_id",
    "case_seed",
    "main",
    "make_case",
    "write_lits",
    "write_mpth",
    "write_multiphase_folders",
    "write_nnunet_raw",
]

#: Phase names this module knows, in the column order of :data:`HU_BY_TISSUE`.
PHASE_NAMES: tuple[str, ...] = ("nc", "art", "pv", "del")
#: Lesion kinds that :func:`make_case` samples from.
LESION_KINDS: tuple[str, ...] = ("hcc", "metastasis", "cyst")
#: Label values of every written label map (LiTS-compatible; the tumour overrides the liver).
LABELS: dict[str, int] = {"background": 0, "liver": 1, "tumor": 2}

#: Mean HU per tissue and phase, columns (nc, art, pv, del); sources in docs/datasets.md §4 step 2.
HU_BY_TISSUE: dict[str, tuple[float, float, float, float]] = {
    "air": (-1000.0, -1000.0, -1000.0, -1000.0),
    "fat": (-100.0, -100.0, -100.0, -100.0),
    "muscle": (50.0, 60.0, 65.0, 60.0),
    "bone": (700.0, 700.0, 700.0, 700.0),
    "aorta": (40.0, 320.0, 165.0, 120.0),
    "ivc": (40.0, 145.0, 180.0, 130.0),  # assumed: venous, rendered like the portal vein row
    "portal_vein": (40.0, 145.0, 180.0, 130.0),
    "liver": (55.0, 80.0, 115.0, 95.0),
    "spleen": (45.0, 145.0, 125.0, 105.0),
    "kidney": (35.0, 180.0, 160.0, 140.0),
    "hcc": (50.0, 140.0, 95.0, 80.0),
    "metastasis": (40.0, 55.0, 70.0, 75.0),
    "cyst": (8.0, 8.0, 10.0, 10.0),
}
_TISSUES: tuple[str, ...] = tuple(HU_BY_TISSUE)
_TISSUE_ID: dict[str, int] = {name: index for index, name in enumerate(_TISSUES)}
# Label of each tissue id: intrahepatic vessels count as liver (as in LiTS), the IVC does not.
_LABEL_OF_TISSUE = np.zeros(len(_TISSUES), dtype=np.uint8)
_LABEL_OF_TISSUE[[_TISSUE_ID["liver"], _TISSUE_ID["portal_vein"]]] = LABELS["liver"]
_LABEL_OF_TISSUE[[_TISSUE_ID[kind] for kind in LESION_KINDS]] = LABELS["tumor"]

_HU_MIN, _HU_MAX = -1024.0, 3071.0
_PARTIAL_VOLUME_SIGMA_VOXELS = 0.7
_LESION_RADIUS_MM = (4.0, 15.0)
_MIN_LESION_INSIDE_LIVER = 0.95
_CASE_PREFIX = "phantom"
_SUPPORTED_FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha")
_PHASE_LABELS_FOLDER = "labelsTr_phases"


# ----------------------------------------------------------------------------------------------------------------
# Geometry and results
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GridGeometry:
    """A voxel grid in physical space with identity direction cosines.

    Attributes:
        shape_zyx: number of voxels per axis.
        spacing_zyx_mm: voxel size per axis in mm.
        origin_zyx_mm: physical position of the centre of voxel (0, 0, 0) in mm.
    """

    shape_zyx: tuple[int, int, int]
    spacing_zyx_mm: tuple[float, float, float]
    origin_zyx_mm: tuple[float, float, float]

    @property
    def spacing_xyz_mm(self) -> tuple[float, float, float]:
        """Spacing in SimpleITK's (x, y, z) order."""
        return tuple(float(s) for s in self.spacing_zyx_mm[::-1])  # type: ignore[return-value]

    @property
    def origin_xyz_mm(self) -> tuple[float, float, float]:
        """Origin in SimpleITK's (x, y, z) order."""
        return tuple(float(o) for o in self.origin_zyx_mm[::-1])  # type: ignore[return-value]

    @property
    def direction(self) -> tuple[float, ...]:
        """Identity direction cosines as SimpleITK's flat 9-tuple."""
        return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def axis_coordinates_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Physical coordinate of every voxel centre along each axis.

        Returns:
            Three float64 arrays of lengths Z, Y and X.
        """
        return tuple(  # type: ignore[return-value]
            origin + spacing * np.arange(size)
            for origin, spacing, size in zip(self.origin_zyx_mm, self.spacing_zyx_mm, self.shape_zyx)
        )

    def to_sitk(self, array_zyx: np.ndarray) -> sitk.Image:
        """Wrap an array on this grid as a SimpleITK image with this grid's spacing, origin and direction.

        Args:
            array_zyx: (Z, Y, X) array whose shape equals :attr:`shape_zyx`.

        Returns:
            The SimpleITK image (pixel type from the array's dtype).

        Raises:
            ValueError: if the array's shape is not this grid's shape.
        """
        if tuple(array_zyx.shape) != tuple(self.shape_zyx):
            raise ValueError(f"array has shape {tuple(array_zyx.shape)}, but the grid has shape {self.shape_zyx}.")
        image = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
        image.SetSpacing(self.spacing_xyz_mm)
        image.SetOrigin(self.origin_xyz_mm)
        image.SetDirection(self.direction)
        return image


@dataclass(frozen=True)
class Lesion:
    """One liver lesion of a phantom, as placed in the reference phase.

    Attributes:
        kind: one of :data:`LESION_KINDS`.
        center_zyx_mm: physical centre in mm.
        semi_axes_mm: semi-axes of the (rotated, elastically perturbed) ellipsoid in mm.
        num_voxels: voxels of the lesion in the reference grid.
        fraction_inside_liver: share of those voxels that lie inside the liver (>= 0.95).
    """

    kind: str
    center_zyx_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    num_voxels: int
    fraction_inside_liver: float


@dataclass(eq=False)
class PhantomCase:
    """One synthetic multi-phase liver CT case.

    The displacement field of a phase is a pull-back field: the phase shows at physical point ``p`` what the
    reference anatomy holds at ``p + displacement(p)``. This is the convention of SimpleITK's
    ``DisplacementFieldTransform`` when the reference is resampled into the phase's frame; the inverse is what a
    registration of the phase onto the reference has to recover.

    Attributes:
        seed: the seed that :func:`make_case` was called with.
        phase_names: phase names, the reference phase first.
        images: per phase, the (Z', Y', X') int16 HU volume on that phase's own grid.
        labels: per phase, the (Z', Y', X') uint8 label map (0 background, 1 liver, 2 tumour) on that phase's grid,
            i.e. the reference anatomy warped with that phase.
        geometries: per phase, the grid of its image and label.
        displacements_zyx_mm: per phase, the (3, Z, Y, X) float32 displacement in mm (components z, y, x) on the
            reference grid; all zeros for the reference phase.
        lesion_shifts_zyx_mm: per phase, the (num_lesions, 3) extra lesion-local shift in mm; zeros for the
            reference phase.
        lesions: the lesions in the reference phase, in painting order.
        tissue_map: (Z, Y, X) uint8 tissue ids of the reference phase (index into ``HU_BY_TISSUE``'s keys).
    """

    seed: int
    phase_names: tuple[str, ...]
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    geometries: dict[str, GridGeometry]
    displacements_zyx_mm: dict[str, np.ndarray]
    lesion_shifts_zyx_mm: dict[str, np.ndarray]
    lesions: tuple[Lesion, ...]
    tissue_map: np.ndarray = field(repr=False)

    @property
    def reference_phase(self) -> str:
        """Name of the reference phase (the first phase)."""
        return self.phase_names[0]

    @property
    def reference_geometry(self) -> GridGeometry:
        """Grid of the reference phase."""
        return self.geometries[self.reference_phase]

    @property
    def label(self) -> np.ndarray:
        """(Z, Y, X) uint8 label map of the reference phase."""
        return self.labels[self.reference_phase]

    @property
    def lesion_kinds(self) -> tuple[str, ...]:
        """Kind of every lesion, in painting order."""
        return tuple(lesion.kind for lesion in self.lesions)

    @property
    def tissue_names(self) -> tuple[str, ...]:
        """Tissue name of every id in :attr:`tissue_map`."""
        return _TISSUES

    def _check_phase(self, phase: str) -> None:
        if phase not in self.images:
            raise ValueError(f"unknown phase {phase!r}; this case has phases {list(self.phase_names)}.")

    def to_sitk(self, phase: str) -> sitk.Image:
        """The HU volume of a phase as an int16 SimpleITK image on that phase's own grid."""
        self._check_phase(phase)
        return self.geometries[phase].to_sitk(self.images[phase])

    def label_to_sitk(self, phase: str | None = None) -> sitk.Image:
        """The label map of a phase (default: the reference phase) as a uint8 SimpleITK image on its grid."""
        phase = self.reference_phase if phase is None else phase
        self._check_phase(phase)
        return self.geometries[phase].to_sitk(self.labels[phase])

    def image_on_reference_grid(self, phase: str) -> np.ndarray:
        """The HU volume of a phase on the reference grid (linear resampling where the grids differ).

        Returns:
            (Z, Y, X) int16 array on the reference grid.
        """
        self._check_phase(phase)
        if self.geometries[phase] == self.reference_geometry:
            return self.images[phase]
        resampled = _resample_onto(self.to_sitk(phase), self.reference_geometry, sitk.sitkLinear, _HU_MIN)
        return np.rint(sitk.GetArrayFromImage(resampled)).astype(np.int16)

    def label_on_reference_grid(self, phase: str) -> np.ndarray:
        """The label map of a phase on the reference grid (nearest-neighbour resampling where the grids differ).

        Returns:
            (Z, Y, X) uint8 array on the reference grid.
        """
        self._check_phase(phase)
        if self.geometries[phase] == self.reference_geometry:
            return self.labels[phase]
        resampled = _resample_onto(self.label_to_sitk(phase), self.reference_geometry, sitk.sitkNearestNeighbor, 0)
        return sitk.GetArrayFromImage(resampled).astype(np.uint8)


def _resample_onto(image: sitk.Image, geometry: GridGeometry, interpolator: int, default_value: float) -> sitk.Image:
    reference = sitk.Image([int(s) for s in geometry.shape_zyx[::-1]], image.GetPixelID())
    reference.SetSpacing(geometry.spacing_xyz_mm)
    reference.SetOrigin(geometry.origin_xyz_mm)
    reference.SetDirection(geometry.direction)
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default_value, sitk.sitkFloat32)


# ----------------------------------------------------------------------------------------------------------------
# Random fields
# ----------------------------------------------------------------------------------------------------------------


def _cubic_weights(knots: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(N, K) weights that interpolate K values at ``knots`` to N ``positions`` with a natural cubic spline."""
    if len(knots) == 1:
        return np.ones((len(positions), 1))
    spline = CubicSpline(knots, np.eye(len(knots)), axis=0, bc_type="natural")
    return spline(np.clip(positions, knots[0], knots[-1]))


def _separable_upsample(coarse: np.ndarray, weights_zyx: Sequence[np.ndarray]) -> np.ndarray:
    """Tensor-product interpolation of a (..., Kz, Ky, Kx) coarse grid with per-axis (N, K) weights.

    Returns:
        (..., Nz, Ny, Nx) float32 array.
    """
    weights_z, weights_y, weights_x = weights_zyx
    out = np.einsum("zi,...ijk->...zjk", weights_z, coarse)
    out = np.einsum("yj,...zjk->...zyk", weights_y, out)
    out = np.einsum("xk,...zyk->...zyx", weights_x, out)
    return out.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape_zyx: Sequence[int], control_points: int = 4) -> np.ndarray:
    """(Z, Y, X) float32 low-pass noise with unit standard deviation at the control points."""
    coarse = rng.standard_normal((control_points,) * 3)
    knots = np.linspace(0.0, 1.0, control_points)
    weights = [_cubic_weights(knots, np.linspace(0.0, 1.0, n)) for n in shape_zyx]
    return _separable_upsample(coarse, weights)


def _small_rotation(rng: np.random.Generator, max_angle_deg: float) -> np.ndarray:
    """3×3 rotation (acting on zyx vectors) about a random axis by an angle uniform in [-max, max] degrees."""
    axis = rng.standard_normal(3)
    angle = np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg))
    return Rotation.from_rotvec(angle * axis / np.linalg.norm(axis)).as_matrix()


# ----------------------------------------------------------------------------------------------------------------
# Anatomy
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Anatomy:
    tissue_map: np.ndarray  # (Z, Y, X) uint8 tissue ids in the reference grid
    lesions: tuple[Lesion, ...]
    lesion_zone: np.ndarray  # (Z, Y, X) uint8: 0, or 1 + index of the lesion whose dilated mask covers the voxel
    lesion_zone_margin_mm: float


def _ellipse_yx(y: np.ndarray, x: np.ndarray, center_yx: Sequence[float], semi_axes_yx: Sequence[float]) -> np.ndarray:
    """(1, Y, X) mask of an axis-aligned ellipse (a cylinder along z once broadcast)."""
    return ((y - center_yx[0]) / semi_axes_yx[0]) ** 2 + ((x - center_yx[1]) / semi_axes_yx[1]) ** 2 <= 1.0


def _ellipsoid_radius(
    z: np.ndarray, y: np.ndarray, x: np.ndarray, center_zyx: Sequence[float], semi_axes_zyx: Sequence[float]
) -> np.ndarray:
    """Normalised ellipsoid radius (1 on the surface), broadcast over (Z, Y, X)."""
    return np.sqrt(
        ((z - center_zyx[0]) / semi_axes_zyx[0]) ** 2
        + ((y - center_zyx[1]) / semi_axes_zyx[1]) ** 2
        + ((x - center_zyx[2]) / semi_axes_zyx[2]) ** 2
    )


def _build_organs(rng: np.random.Generator, geometry: GridGeometry) -> np.ndarray:
    """Paint the organs (no lesions) in the reference grid.

    Positions are fractions of the field of view, so the abdomen fills any grid; in-plane sizes use the smaller
    in-plane half-extent so that round structures stay round.

    Returns:
        (Z, Y, X) uint8 tissue map.
    """
    axis_z, axis_y, axis_x = geometry.axis_coordinates_mm()
    center = [(axis[0] + axis[-1]) / 2 for axis in (axis_z, axis_y, axis_x)]
    half_z = geometry.shape_zyx[0] * geometry.spacing_zyx_mm[0] / 2
    s = min(geometry.shape_zyx[1] * geometry.spacing_zyx_mm[1], geometry.shape_zyx[2] * geometry.spacing_zyx_mm[2]) / 2
    z = (axis_z - center[0])[:, None, None]
    y = (axis_y - center[1])[None, :, None]
    x = (axis_x - center[2])[None, None, :]

    def jitter(value: float, scale: float = 0.03) -> float:
        return value + rng.normal(0.0, scale)

    def size(value: float) -> float:
        return value * rng.uniform(0.9, 1.1)

    tissue = np.full(geometry.shape_zyx, _TISSUE_ID["air"], dtype=np.uint8)
    body_semi_axes = (size(0.8) * s, rng.uniform(0.93, 0.98) * s)
    tissue[np.broadcast_to(_ellipse_yx(y, x, (0.0, 0.0), body_semi_axes), tissue.shape)] = _TISSUE_ID["fat"]
    fat_thickness = rng.uniform(0.09, 0.15) * s
    muscle = _ellipse_yx(y, x, (0.0, 0.0), [a - fat_thickness for a in body_semi_axes])
    tissue[np.broadcast_to(muscle, tissue.shape)] = _TISSUE_ID["muscle"]

    # Liver: a right-upper ellipsoid whose surface is perturbed by thresholding low-pass noise.
    liver_center = (jitter(0.1) * half_z, jitter(-0.08) * s, jitter(-0.36) * s)
    liver_semi_axes = (size(0.72) * half_z, size(0.46) * s, size(0.48) * s)
    liver_radius = _ellipsoid_radius(z, y, x, liver_center, liver_semi_axes)
    liver = (liver_radius + 0.12 * _smooth_noise(rng, geometry.shape_zyx, control_points=5) <= 1.0) & muscle
    tissue[liver] = _TISSUE_ID["liver"]
    portal_vein = _ellipse_yx(
        y, x, (liver_center[1] + 0.15 * liver_semi_axes[1], liver_center[2] + 0.35 * liver_semi_axes[2]),
        (size(0.06) * s, size(0.06) * s),
    ) & liver & (np.abs(z - liver_center[0]) <= 0.6 * liver_semi_axes[0])
    tissue[portal_vein] = _TISSUE_ID["portal_vein"]
    # Kidneys and spleen after the liver: they border it rather than sit inside it.
    for side in (-1.0, 1.0):  # right (-x) and left (+x) kidney
        kidney = _ellipsoid_radius(
            z, y, x,
            (jitter(-0.25) * half_z, jitter(0.33) * s, side * jitter(0.34) * s),
            (size(0.32) * half_z, size(0.12) * s, size(0.09) * s),
        ) <= 1.0
        tissue[kidney & muscle] = _TISSUE_ID["kidney"]
    spleen = _ellipsoid_radius(
        z, y, x, (jitter(0.2) * half_z, jitter(0.22) * s, jitter(0.55) * s),
        (size(0.35) * half_z, size(0.2) * s, size(0.15) * s),
    ) <= 1.0
    tissue[spleen & muscle] = _TISSUE_ID["spleen"]

    cylinders = (
        ("ivc", (jitter(0.18, 0.02) * s, jitter(-0.14, 0.02) * s), size(0.055) * s),
        ("aorta", (jitter(0.22, 0.02) * s, jitter(0.11, 0.02) * s), size(0.065) * s),
        ("bone", (jitter(0.45, 0.02) * s, jitter(0.0, 0.02) * s), size(0.12) * s),
    )
    for tissue_name, center_yx, radius in cylinders:
        mask = np.broadcast_to(_ellipse_yx(y, x, center_yx, (radius, radius)), tissue.shape)
        tissue[mask] = _TISSUE_ID[tissue_name]
    return tissue


def _lesion_radius_range_mm(geometry: GridGeometry, liver: np.ndarray) -> tuple[float, float]:
    """Lesion radius range: 4–15 mm, shrunk to fit the liver of small grids, but at least a few voxels wide."""
    extents_mm = [
        (np.ptp(np.flatnonzero(liver.any(axis=other))) + 1) * spacing
        for other, spacing in zip(((1, 2), (0, 2), (0, 1)), geometry.spacing_zyx_mm)
    ]
    largest = min(_LESION_RADIUS_MM[1], 0.25 * min(extents_mm))
    smallest_that_shows = max(1.5 * max(geometry.spacing_zyx_mm[1:]), 0.7 * geometry.spacing_zyx_mm[0])
    smallest = max(min(_LESION_RADIUS_MM[0], 0.5 * largest), smallest_that_shows)
    return smallest, max(largest, 1.2 * smallest)


def _place_lesions(
    rng: np.random.Generator,
    geometry: GridGeometry,
    tissue: np.ndarray,
    num_lesions: int,
    zone_margin_mm: float,
    lesion_kinds: Sequence[str] = LESION_KINDS,
) -> tuple[tuple[Lesion, ...], np.ndarray]:
    """Rejection-sample lesions inside the liver with bounding-box operations and paint them into ``tissue``.

    Returns:
        The lesions, and the (Z, Y, X) uint8 lesion zone (1 + lesion index inside each lesion dilated by
        ``zone_margin_mm``, else 0).
    """
    spacing = np.asarray(geometry.spacing_zyx_mm)
    origin = np.asarray(geometry.origin_zyx_mm)
    shape = np.asarray(geometry.shape_zyx)
    liver = _LABEL_OF_TISSUE[tissue] == LABELS["liver"]
    liver_voxels = np.flatnonzero(liver)
    if liver_voxels.size == 0:
        raise ValueError(f"the grid {geometry.shape_zyx} is too small to hold a liver; use a larger shape_zyx.")
    radius_min, radius_max = _lesion_radius_range_mm(geometry, liver)
    lesion_zone = np.zeros(geometry.shape_zyx, dtype=np.uint8)
    taken = np.zeros(geometry.shape_zyx, dtype=bool)
    lesions: list[Lesion] = []
    for _ in range(num_lesions):
        kind = lesion_kinds[rng.integers(len(lesion_kinds))]
        radius = rng.uniform(radius_min, radius_max)
        for attempt in range(120):
            if attempt and attempt % 30 == 0:
                radius = max(radius_min, 0.8 * radius)
            placed = _try_lesion(rng, radius, liver_voxels, liver, taken, spacing, origin, shape)
            if placed is not None:
                break
        else:
            logger.debug("gave up placing a %s lesion after 120 attempts", kind)
            continue
        box, mask, center_mm, semi_axes_mm, inside = placed
        index = len(lesions)
        tissue[box][mask] = _TISSUE_ID[kind]
        taken[box] |= mask
        _paint_zone(lesion_zone, box, mask, spacing, zone_margin_mm, index + 1)
        lesions.append(Lesion(kind, tuple(center_mm.tolist()), tuple(semi_axes_mm.tolist()), int(mask.sum()), inside))
    if not lesions:
        raise ValueError(
            f"could not place any lesion inside the liver of a {geometry.shape_zyx} grid at spacing "
            f"{geometry.spacing_zyx_mm} mm; use a larger shape_zyx or a finer spacing."
        )
    return tuple(lesions), lesion_zone


def _try_lesion(
    rng: np.random.Generator,
    radius_mm: float,
    liver_voxels: np.ndarray,
    liver: np.ndarray,
    taken: np.ndarray,
    spacing: np.ndarray,
    origin: np.ndarray,
    shape: np.ndarray,
) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray, np.ndarray, float] | None:
    """One placement attempt; the lesion's bounding box, mask in it, centre, semi-axes and inside-liver share."""
    center_index = np.array(np.unravel_index(rng.choice(liver_voxels), liver.shape), dtype=float)
    center_index += rng.uniform(-0.5, 0.5, 3)
    semi_axes_mm = radius_mm * rng.uniform(0.75, 1.25, 3)
    rotation = special_ortho_group.rvs(3, random_state=rng)  # uniform (Haar) on SO(3)
    deformation_amplitude = 0.15
    half_box = np.ceil(semi_axes_mm.max() * (1 + deformation_amplitude) / spacing).astype(int) + 1
    low = np.round(center_index).astype(int) - half_box
    high = np.round(center_index).astype(int) + half_box + 1
    if (low < 0).any() or (high > shape).any():
        return None
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high))
    offsets = [((np.arange(lo, hi) - c) * s) for lo, hi, c, s in zip(low, high, center_index, spacing)]
    z, y, x = np.meshgrid(*offsets, indexing="ij")
    local = np.einsum("ij,j...->i...", rotation.T, np.stack([z, y, x])) / semi_axes_mm[:, None, None, None]
    radius_field = np.sqrt((local**2).sum(axis=0))
    # Elastic perturbation of the ellipsoid surface (Diff4MMLiTS deforms its sampled tumour masks similarly).
    radius_field += deformation_amplitude * _smooth_noise(rng, radius_field.shape)
    mask = radius_field <= 1.0
    num_voxels = int(mask.sum())
    if num_voxels < 4 or taken[box][mask].any():
        return None
    inside = float(liver[box][mask].mean())
    if inside < _MIN_LESION_INSIDE_LIVER:
        return None
    center_mm = origin + center_index * spacing
    return box, mask, center_mm, semi_axes_mm, inside


def _paint_zone(
    lesion_zone: np.ndarray, box: tuple[slice, ...], mask: np.ndarray, spacing: np.ndarray, margin_mm: float, value: int
) -> None:
    """Mark the lesion dilated by ``margin_mm`` (physical distance) with ``value`` in ``lesion_zone``."""
    pad = np.ceil(margin_mm / spacing).astype(int) + 1
    starts = [max(0, b.start - p) for b, p in zip(box, pad)]
    stops = [min(n, b.stop + p) for b, n, p in zip(box, lesion_zone.shape, pad)]
    grown_box = tuple(slice(a, b) for a, b in zip(starts, stops))
    padded = np.zeros([b - a for a, b in zip(starts, stops)], dtype=bool)
    inner = tuple(slice(b.start - a, b.stop - a) for b, a in zip(box, starts))
    padded[inner] = mask
    distance_mm = ndimage.distance_transform_edt(~padded, sampling=spacing)
    lesion_zone[grown_box][distance_mm <= margin_mm] = value


def _build_anatomy(
    rng: np.random.Generator, geometry: GridGeometry, num_lesions: int, zone_margin_mm: float,
    lesion_kinds: Sequence[str] = LESION_KINDS,
) -> _Anatomy:
    organs_rng, lesions_rng = rng.spawn(2)
    tissue = _build_organs(organs_rng, geometry)
    lesions, lesion_zone = _place_lesions(lesions_rng, geometry, tissue, num_lesions, zone_margin_mm, lesion_kinds)
    return _Anatomy(tissue, lesions, lesion_zone, zone_margin_mm)


# ----------------------------------------------------------------------------------------------------------------
# Misregistration
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Motion:
    """Random misregistration of one phase relative to the reference anatomy."""

    rotation_zyx: np.ndarray  # (3, 3)
    translation_zyx_mm: np.ndarray  # (3,)
    rotation_center_zyx_mm: np.ndarray  # (3,)
    control_displacements_mm: np.ndarray  # (3, K, K, K)
    control_knots_zyx_mm: tuple[np.ndarray, np.ndarray, np.ndarray]
    lesion_shifts_zyx_mm: np.ndarray  # (num_lesions, 3)

    def displacement(self, geometry: GridGeometry, anatomy: _Anatomy, reference: GridGeometry) -> np.ndarray:
        """The pull-back displacement on ``geometry``'s voxel centres.

        Returns:
            (3, Z, Y, X) float32 displacement in mm, components (z, y, x).
        """
        axes = geometry.axis_coordinates_mm()
        weights = [_cubic_weights(knots, axis) for knots, axis in zip(self.control_knots_zyx_mm, axes)]
        field_mm = _separable_upsample(self.control_displacements_mm, weights)
        # Rigid part: p -> R (p - c) + c + t, so the displacement is (R - I)(p - c) + t; separable per axis.
        rigid = self.rotation_zyx - np.eye(3)
        centred = [axis - c for axis, c in zip(axes, self.rotation_center_zyx_mm)]
        for component in range(3):
            field_mm[component] += (
                (rigid[component, 0] * centred[0])[:, None, None]
                + (rigid[component, 1] * centred[1])[None, :, None]
                + (rigid[component, 2] * centred[2])[None, None, :]
                + self.translation_zyx_mm[component]
            ).astype(np.float32)
        if len(self.lesion_shifts_zyx_mm) and np.any(self.lesion_shifts_zyx_mm):
            zone = _pull(anatomy.lesion_zone, field_mm, geometry, reference)
            shift_by_zone = np.concatenate([np.zeros((1, 3)), self.lesion_shifts_zyx_mm]).astype(np.float32)
            field_mm += np.moveaxis(shift_by_zone[zone], -1, 0)
        return field_mm


def _draw_motion(
    rng: np.random.Generator,
    reference: GridGeometry,
    num_lesions: int,
    *,
    max_translation_zyx_mm: Sequence[float],
    max_rotation_deg: float,
    elastic_std_mm: float,
    elastic_control_points: int,
    lesion_shift_mm: tuple[float, float] | None,
) -> _Motion:
    translation = np.array([rng.uniform(-m, m) for m in max_translation_zyx_mm])
    rotation = _small_rotation(rng, max_rotation_deg)
    control = rng.normal(0.0, elastic_std_mm, (3,) + (elastic_control_points,) * 3)
    axes = reference.axis_coordinates_mm()
    knots = tuple(np.linspace(axis[0], axis[-1], elastic_control_points) for axis in axes)
    center = np.array([(axis[0] + axis[-1]) / 2 for axis in axes])
    shifts = np.zeros((num_lesions, 3))
    if lesion_shift_mm is not None and num_lesions:
        directions = rng.standard_normal((num_lesions, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        shifts = directions * rng.uniform(lesion_shift_mm[0], lesion_shift_mm[1], (num_lesions, 1))
    return _Motion(rotation, translation, center, control, knots, shifts)  # type: ignore[arg-type]


def _pull(
    reference_map: np.ndarray, displacement_mm: np.ndarray, geometry: GridGeometry, reference: GridGeometry
) -> np.ndarray:
    """Nearest-neighbour pull of a reference-grid map to ``geometry``: out(p) = map(p + displacement(p)).

    Args:
        reference_map: (Z, Y, X) integer map on the reference grid.
        displacement_mm: (3, Z', Y', X') displacement on ``geometry``.
        geometry: grid of the output.
        reference: grid of ``reference_map``.

    Returns:
        (Z', Y', X') map of ``reference_map``'s dtype; points outside the reference grid take the nearest edge value.
    """
    axes = geometry.axis_coordinates_mm()
    indices = np.empty(displacement_mm.shape, dtype=np.float32)
    for component, (axis, ref_origin, ref_spacing) in enumerate(
        zip(axes, reference.origin_zyx_mm, reference.spacing_zyx_mm)
    ):
        shape = [1, 1, 1]
        shape[component] = -1
        base = ((axis - ref_origin) / ref_spacing).reshape(shape)
        np.add(displacement_mm[component] / ref_spacing, base, out=indices[component])
    return ndimage.map_coordinates(reference_map, indices, order=0, mode="nearest")


def _phase_geometry(
    rng: np.random.Generator, reference: GridGeometry, slice_spacing_mm: float
) -> GridGeometry:
    """A grid with a different slice spacing covering about the reference extent, with a slightly shifted origin."""
    extent_z = reference.shape_zyx[0] * reference.spacing_zyx_mm[0]
    num_slices = max(2, int(round(extent_z / slice_spacing_mm)))
    center_z = reference.origin_zyx_mm[0] + (reference.shape_zyx[0] - 1) * reference.spacing_zyx_mm[0] / 2
    origin_z = center_z - (num_slices - 1) * slice_spacing_mm / 2 + rng.uniform(-0.5, 0.5) * slice_spacing_mm
    origin_y, origin_x = (
        origin + rng.uniform(-0.5, 0.5) * spacing
        for origin, spacing in zip(reference.origin_zyx_mm[1:], reference.spacing_zyx_mm[1:])
    )
    return GridGeometry(
        (num_slices, reference.shape_zyx[1], reference.shape_zyx[2]),
        (float(slice_spacing_mm), reference.spacing_zyx_mm[1], reference.spacing_zyx_mm[2]),
        (float(origin_z), float(origin_y), float(origin_x)),
    )


def _warp_phase(
    anatomy: _Anatomy, reference: GridGeometry, geometry: GridGeometry, motion: _Motion | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Warp the reference anatomy into one phase.

    Args:
        anatomy: the reference anatomy.
        reference: the reference grid.
        geometry: the phase's grid.
        motion: the phase's misregistration; None for the reference phase or without misregistration.

    Returns:
        The (Z', Y', X') uint8 tissue map on ``geometry``, the (3, Z, Y, X) float32 displacement in mm on the
        reference grid, and the (num_lesions, 3) lesion-local shifts in mm.
    """
    if motion is None:
        no_shifts = np.zeros((len(anatomy.lesions), 3))
        field_on_reference = np.zeros((3,) + reference.shape_zyx, dtype=np.float32)
        if geometry == reference:
            return anatomy.tissue_map, field_on_reference, no_shifts
        no_motion = np.zeros((3,) + geometry.shape_zyx, dtype=np.float32)
        return _pull(anatomy.tissue_map, no_motion, geometry, reference), field_on_reference, no_shifts
    field_on_phase_grid = motion.displacement(geometry, anatomy, reference)
    field_on_reference = field_on_phase_grid
    if geometry != reference:
        field_on_reference = motion.displacement(reference, anatomy, reference)
    tissue = _pull(anatomy.tissue_map, field_on_phase_grid, geometry, reference)
    return tissue, field_on_reference, motion.lesion_shifts_zyx_mm


# ----------------------------------------------------------------------------------------------------------------
# Rendering and the public generator
# ----------------------------------------------------------------------------------------------------------------


def _render(
    rng: np.random.Generator, tissue: np.ndarray, phase: str, noise_std_hu: tuple[float, float]
) -> np.ndarray:
    """HU rendering of a tissue map: lookup, partial-volume blur, Gaussian noise, clip, int16."""
    column = PHASE_NAMES.index(phase)
    hu_lookup = np.array([HU_BY_TISSUE[name][column] for name in _TISSUES], dtype=np.float32)
    hu = ndimage.gaussian_filter(hu_lookup[tissue], sigma=_PARTIAL_VOLUME_SIGMA_VOXELS)
    noise = rng.standard_normal(tissue.shape, dtype=np.float32)
    hu += noise * np.float32(rng.uniform(*noise_std_hu))
    np.clip(hu, _HU_MIN, _HU_MAX, out=hu)
    return np.rint(hu).astype(np.int16)


def _as_range(value: Sequence[float] | float | None, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    if np.isscalar(value):
        value = (float(value), float(value))  # type: ignore[arg-type]
    low, high = (float(v) for v in value)  # type: ignore[union-attr]
    if not 0 <= low <= high:
        raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {(low, high)}.")
    return low, high


def _validate_make_case_args(
    shape_zyx: Sequence[int],
    spacing_zyx_mm: Sequence[float],
    phases: Sequence[str],
    num_lesions: tuple[int, int],
    slice_spacing_mm: float,
    elastic_control_points: int,
    max_translation_zyx_mm: Sequence[float],
) -> None:
    if len(shape_zyx) != 3 or any(int(n) != n or n < 8 for n in shape_zyx):
        raise ValueError(f"shape_zyx must be three integers >= 8, got {tuple(shape_zyx)}.")
    if len(spacing_zyx_mm) != 3 or any(s <= 0 for s in spacing_zyx_mm):
        raise ValueError(f"spacing_zyx_mm must be three positive numbers, got {tuple(spacing_zyx_mm)}.")
    if not phases:
        raise ValueError(f"phases must name at least one phase out of {list(PHASE_NAMES)}.")
    unknown = [p for p in phases if p not in PHASE_NAMES]
    if unknown:
        raise ValueError(f"unknown phase name(s) {unknown}; valid phase names are {list(PHASE_NAMES)}.")
    if len(set(phases)) != len(phases):
        raise ValueError(f"phases must be distinct, got {list(phases)}.")
    if not 1 <= num_lesions[0] <= num_lesions[1]:
        raise ValueError(f"num_lesions must be (low, high) with 1 <= low <= high, got {num_lesions}.")
    if slice_spacing_mm <= 0:
        raise ValueError(f"slice_spacing_mm must be positive, got {slice_spacing_mm}.")
    if elastic_control_points < 2:
        raise ValueError(f"elastic_control_points must be >= 2, got {elastic_control_points}.")
    if len(max_translation_zyx_mm) != 3 or any(t < 0 for t in max_translation_zyx_mm):
        raise ValueError(f"max_translation_zyx_mm must be three numbers >= 0, got {tuple(max_translation_zyx_mm)}.")


def make_case(
    seed: int,
    *,
    shape_zyx: Sequence[int] = (32, 64, 64),
    spacing_zyx_mm: Sequence[float] = (3.0, 1.5, 1.5),
    phases: Sequence[str] = ("pv", "art", "del", "nc"),
    misregistration: bool = True,
    lesion_shift_mm: Sequence[float] | float | None = (2.0, 5.0),
    different_grids: bool = False,
    slice_spacing_mm: float = 5.0,
    num_lesions: tuple[int, int] = (1, 3),
    noise_std_hu: Sequence[float] = (10.0, 15.0),
    max_translation_zyx_mm: Sequence[float] = (8.0, 3.0, 3.0),
    max_rotation_deg: float = 2.0,
    elastic_std_mm: float = 3.0,
    elastic_control_points: int = 4,
    lesion_kinds: Sequence[str] = LESION_KINDS,
) -> PhantomCase:
    """Build one seeded multi-phase liver CT phantom.

    The first phase is the reference: its anatomy is unwarped and its grid is ``shape_zyx`` at ``spacing_zyx_mm``,
    centred on the physical origin. Each other phase pulls the reference tissue map through its own displacement
    (rigid offset + smooth deformation + lesion-local shift), on its own grid when ``different_grids``. The anatomy
    does not depend on ``phases``, so the reference phase of a one-phase case equals that of a four-phase case.

    Args:
        seed: seed of ``numpy.random.default_rng``; the same seed and arguments give identical arrays.
        shape_zyx: reference grid size (Z, Y, X), each >= 8.
        spacing_zyx_mm: reference voxel size in mm.
        phases: phase names out of ``("nc", "art", "pv", "del")``, the reference first.
        misregistration: if False, every phase uses the reference anatomy unmoved (only grids and noise differ).
        lesion_shift_mm: (low, high) magnitude of the extra shift of each lesion per phase, in a random direction,
            applied inside the lesion dilated by ``high``; None or 0 for none.
        different_grids: give each non-reference phase ``slice_spacing_mm`` slices covering about the reference
            extent and an origin offset by up to half a voxel per axis.
        slice_spacing_mm: slice spacing of the non-reference phases when ``different_grids``.
        num_lesions: (low, high) inclusive range of the number of lesions.
        noise_std_hu: (low, high) range of the per-phase Gaussian noise standard deviation in HU.
        max_translation_zyx_mm: largest rigid offset per axis; offsets are uniform in [-max, max].
        max_rotation_deg: largest rigid rotation angle about a random axis.
        elastic_std_mm: standard deviation of the control-point displacements of the smooth deformation.
        elastic_control_points: control points per axis of the smooth deformation (>= 2).
        lesion_kinds: the kinds lesions are drawn from (uniformly), a non-empty subset of :data:`LESION_KINDS`;
            e.g. ``("hcc",)`` gives lesions that are faint in the portal-venous phase and bright in the arterial.

    Returns:
        The :class:`PhantomCase`.

    Raises:
        ValueError: for an unknown phase name, a grid too small for a liver and a lesion, or invalid ranges.
    """
    phases = tuple(phases)
    num_lesions = (int(num_lesions[0]), int(num_lesions[1]))
    _validate_make_case_args(
        shape_zyx, spacing_zyx_mm, phases, num_lesions, slice_spacing_mm, elastic_control_points,
        max_translation_zyx_mm,
    )
    lesion_kinds = tuple(lesion_kinds)
    if not lesion_kinds or any(kind not in LESION_KINDS for kind in lesion_kinds):
        raise ValueError(f"lesion_kinds must be a non-empty subset of {list(LESION_KINDS)}, got {list(lesion_kinds)}.")
    shift_range = _as_range(lesion_shift_mm, "lesion_shift_mm")
    noise_range = _as_range(noise_std_hu, "noise_std_hu")
    assert noise_range is not None
    shape = tuple(int(n) for n in shape_zyx)
    spacing = tuple(float(s) for s in spacing_zyx_mm)
    centred_origin = tuple(-(n - 1) * s / 2 for n, s in zip(shape, spacing))
    reference = GridGeometry(shape, spacing, centred_origin)  # type: ignore[arg-type]

    rng = np.random.default_rng(seed)
    anatomy_rng, phases_rng = rng.spawn(2)
    zone_margin_mm = (shift_range[1] if shift_range else 0.0) + max(spacing)
    count = int(anatomy_rng.integers(num_lesions[0], num_lesions[1] + 1))
    anatomy = _build_anatomy(anatomy_rng, reference, count, zone_margin_mm, lesion_kinds)

    motion_settings: dict[str, Any] = dict(
        max_translation_zyx_mm=max_translation_zyx_mm, max_rotation_deg=max_rotation_deg,
        elastic_std_mm=elastic_std_mm, elastic_control_points=elastic_control_points, lesion_shift_mm=shift_range,
    )
    images, labels, geometries, displacements, shifts = {}, {}, {}, {}, {}
    for index, (phase, phase_rng) in enumerate(zip(phases, phases_rng.spawn(len(phases)))):
        motion_rng, grid_rng, noise_rng = phase_rng.spawn(3)
        is_reference = index == 0
        geometry = reference
        if different_grids and not is_reference:
            geometry = _phase_geometry(grid_rng, reference, slice_spacing_mm)
        motion = None
        if misregistration and not is_reference:
            motion = _draw_motion(motion_rng, reference, len(anatomy.lesions), **motion_settings)
        tissue, displacements[phase], shifts[phase] = _warp_phase(anatomy, reference, geometry, motion)
        images[phase] = _render(noise_rng, tissue, phase, noise_range)
        labels[phase] = _LABEL_OF_TISSUE[tissue]
        geometries[phase] = geometry
    return PhantomCase(
        seed=seed,
        phase_names=phases,
        images=images,
        labels=labels,
        geometries=geometries,
        displacements_zyx_mm=displacements,
        lesion_shifts_zyx_mm=shifts,
        lesions=anatomy.lesions,
        tissue_map=anatomy.tissue_map,
    )


# ----------------------------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------------------------


def case_id(index: int) -> str:
    """Case identifier written by every writer, e.g. ``phantom_007``."""
    return f"{_CASE_PREFIX}_{index:03d}"


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` of a dataset written with ``seed`` (independent streams, no collisions)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _progress(iterable: Iterator[int] | range, description: str) -> Iterator[int]:
    from tqdm import tqdm

    return tqdm(iterable, desc=description, unit="case", disable=None, leave=False)


def _prepare_target(
    target: Path, overwrite: bool, owned: Callable[[Path], bool], hint: str = "overwrite=True (CLI: --overwrite)"
) -> None:
    """Refuse a non-empty target unless ``overwrite``; then remove the entries a previous run of this writer made.

    Only direct children of ``target`` for which ``owned`` is true are removed, so files of other origin stay.
    """
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder; choose another output folder.")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"{target} already exists and is not empty; pass {hint} to replace the phantom files in it, "
                "or choose another folder."
            )
        for entry in target.iterdir():
            if owned(entry):
                logger.debug("removing %s from a previous run", entry)
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
    target.mkdir(parents=True, exist_ok=True)


def _write_nnunet_case(case: PhantomCase, images_folder: Path, labels_folder: Path, identifier: str,
                       phase_labels_folder: Path | None = None) -> None:
    """Write every phase as a channel on the reference grid, in phase order, and the reference label; with
    ``phase_labels_folder``, also each non-reference phase's label as ``CASE_XXXX.nii.gz`` there."""
    for channel, phase in enumerate(case.phase_names):
        image = case.reference_geometry.to_sitk(case.image_on_reference_grid(phase))
        write_image(image, images_folder / f"{identifier}_{channel:04d}.nii.gz")
        if phase_labels_folder is not None and channel > 0:
            label = case.reference_geometry.to_sitk(case.label_on_reference_grid(phase))
            write_image(label, phase_labels_folder / f"{identifier}_{channel:04d}.nii.gz")
    write_image(case.label_to_sitk(), labels_folder / f"{identifier}.nii.gz")


def write_nnunet_raw(
    root: Path,
    *,
    dataset_id: int = 500,
    name: str = "MultiPhasePhantom",
    num_training: int,
    num_test: int = 0,
    seed: int = 0,
    test_seed: int | None = None,
    phase_labels: bool = False,
    overwrite: bool = False,
    **case_kwargs: Any,
) -> Path:
    """Write an nnU-Net raw dataset of phantoms: one channel per phase, all on the reference grid.

    Layout: ``root/DatasetXXX_Name/{imagesTr,labelsTr,imagesTs,labelsTs}`` with ``CASE_0000.nii.gz`` the reference
    phase and ``_0001``… the other phases in ``phases`` order, labels ``CASE.nii.gz`` of the reference phase, and a
    dataset.json whose channel names are all ``"CT"`` (so every phase gets CT normalisation) plus
    the block ``'nnunet_mm': {"reference_channel": 0, "phase_names": [...]}``. The phases are misregistered but share the
    reference grid (with ``different_grids=True`` they are resampled onto it, linear for images).

    Args:
        root: folder that receives the dataset folder (nnU-Net's ``nnUNet_raw``).
        dataset_id: nnU-Net dataset id (1–999).
        name: dataset name after the id; letters, digits, ``_`` and ``-`` only.
        num_training: number of training cases (>= 1), ids ``phantom_000``….
        num_test: number of test cases in ``imagesTs``/``labelsTs``, numbered after the training cases.
        seed: dataset seed; case ``i`` uses :func:`case_seed` ``(seed, i)``.
        test_seed: seed of the test cases (held out from another generator stream); None uses ``seed``.
        phase_labels: also write every non-reference phase's own label (its anatomy, on the reference grid) to
            ``labelsTr_phases/CASE_XXXX.nii.gz`` and name that folder in the block (``phase_labels_dir``), as
            converter 501 does for MPTH; ``nnunet_mm phase-labels`` turns them into CMG's per-phase targets.
        overwrite: replace the dataset folder's phantom files if it is not empty.
        **case_kwargs: passed to :func:`make_case`.

    The block declares ``"channel_acquisition": "separate"`` (the phases are misregistered, so the multimodal
    augmentation is on), or ``"co_registered"`` when ``misregistration=False``.

    Returns:
        The dataset folder.

    Raises:
        ValueError: for an invalid id, name or count.
        FileExistsError: if the dataset folder is not empty and ``overwrite`` is False.
    """
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset_id must be in 1..999, got {dataset_id}.")
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(f"name must contain only letters, digits, '_' and '-', got {name!r}.")
    if num_training < 1 or num_test < 0:
        raise ValueError(f"need num_training >= 1 and num_test >= 0, got {num_training} and {num_test}.")
    root = Path(root)
    dataset_folder = root / f"Dataset{dataset_id:03d}_{name}"
    clashes = [p.name for p in root.glob(f"Dataset{dataset_id:03d}_*") if p != dataset_folder]
    if clashes:
        logger.warning("%s also holds %s with dataset id %d; nnU-Net will refuse the ambiguous id", root, clashes,
                       dataset_id)
    owned_names = {"imagesTr", "labelsTr", "imagesTs", "labelsTs", "dataset.json", _PHASE_LABELS_FOLDER}
    _prepare_target(dataset_folder, overwrite, lambda entry: entry.name in owned_names)
    phases = tuple(case_kwargs.get("phases", ("pv", "art", "del", "nc")))
    split_seeds = {"Tr": seed, "Ts": seed if test_seed is None else test_seed}
    for split, count, first in (("Tr", num_training, 0), ("Ts", num_test, num_training)):
        if count == 0:
            continue
        images_folder, labels_folder = dataset_folder / f"images{split}", dataset_folder / f"labels{split}"
        images_folder.mkdir()
        labels_folder.mkdir()
        phase_labels_folder = dataset_folder / _PHASE_LABELS_FOLDER if phase_labels and split == "Tr" else None
        if phase_labels_folder is not None:
            phase_labels_folder.mkdir()
        for index in _progress(range(first, first + count), f"nnU-Net {split}"):
            case = make_case(case_seed(split_seeds[split], index), **case_kwargs)
            _write_nnunet_case(case, images_folder, labels_folder, case_id(index), phase_labels_folder)
    block: dict[str, Any] = {"reference_channel": 0, "phase_names": list(phases),
                             "channel_acquisition": "separate" if case_kwargs.get("misregistration", True)
                             else "co_registered"}
    if phase_labels:
        block["phase_labels_dir"] = _PHASE_LABELS_FOLDER
    generate_dataset_json(
        str(dataset_folder),
        channel_names={channel: "CT" for channel in range(len(phases))},
        labels=dict(LABELS),
        num_training_cases=num_training,
        file_ending=".nii.gz",
        dataset_name=dataset_folder.name,
        description=(
            f"Synthetic multi-phase liver CT phantoms (nnunet_mm.phantom, seed {seed}); channels are the phases "
            f"{list(phases)}, misregistered against channel 0; labels from channel 0."
        ),
        license="synthetic data without patient information; free to use",
        converted_by="nnunet_mm.phantom",
        **{BLOCK_KEY: block},
    )
    logger.debug("wrote %d training and %d test phantom cases to %s", num_training, num_test, dataset_folder)
    return dataset_folder


def write_multiphase_folders(
    root: Path,
    *,
    num_cases: int,
    num_unlabeled: int = 0,
    seed: int = 0,
    different_grids: bool = True,
    file_ending: str = ".nii.gz",
    overwrite: bool = False,
    **case_kwargs: Any,
) -> Path:
    """Write per-case phase folders, the layout the Dataset511 converter reads (mmLiTs-like).

    Layout: ``root/<case_id>/<phase><file_ending>`` for every phase, each on its own grid when ``different_grids``,
    and ``root/<case_id>/label<file_ending>`` (reference-phase label on the reference grid) for the first
    ``num_cases`` cases; the ``num_unlabeled`` cases after them have no label file.

    Args:
        root: output folder.
        num_cases: number of labelled cases (>= 0).
        num_unlabeled: number of cases without a label file.
        seed: dataset seed; case ``i`` uses :func:`case_seed` ``(seed, i)``.
        different_grids: passed to :func:`make_case`.
        file_ending: one of ``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``.
        overwrite: replace ``phantom_*`` case folders if ``root`` is not empty.
        **case_kwargs: passed to :func:`make_case`.

    Returns:
        ``root``.

    Raises:
        ValueError: for an unsupported file ending or no cases at all.
        FileExistsError: if ``root`` is not empty and ``overwrite`` is False.
    """
    if file_ending not in _SUPPORTED_FILE_ENDINGS:
        raise ValueError(f"unsupported file_ending {file_ending!r}; choose one of {list(_SUPPORTED_FILE_ENDINGS)}.")
    if num_cases < 0 or num_unlabeled < 0 or num_cases + num_unlabeled == 0:
        raise ValueError(f"need num_cases, num_unlabeled >= 0 and at least one case, got {num_cases}, {num_unlabeled}.")
    root = Path(root)
    _prepare_target(root, overwrite, _is_case_folder)
    for index in _progress(range(num_cases + num_unlabeled), "multi-phase cases"):
        case = make_case(case_seed(seed, index), different_grids=different_grids, **case_kwargs)
        case_folder = root / case_id(index)
        case_folder.mkdir()
        for phase in case.phase_names:
            write_image(case.to_sitk(phase), case_folder / f"{phase}{file_ending}")
        if index < num_cases:
            write_image(case.label_to_sitk(), case_folder / f"label{file_ending}")
    logger.debug("wrote %d labelled and %d unlabelled multi-phase cases to %s", num_cases, num_unlabeled, root)
    return root


def _is_case_folder(entry: Path) -> bool:
    return entry.is_dir() and re.fullmatch(rf"{_CASE_PREFIX}_\d+", entry.name) is not None


def write_lits(root: Path, *, num_cases: int, seed: int = 0, overwrite: bool = False, **case_kwargs: Any) -> Path:
    """Write LiTS-like files: ``root/volume-N.nii`` (int16 HU) and ``root/segmentation-N.nii`` (uint8 0/1/2).

    Only the reference (portal-venous) phase is written; files are uncompressed NIfTI as in the challenge.

    Args:
        root: output folder.
        num_cases: number of cases (>= 1), N = 0 … num_cases - 1.
        seed: dataset seed; case ``N`` uses :func:`case_seed` ``(seed, N)``.
        overwrite: replace ``volume-*.nii`` / ``segmentation-*.nii`` files if ``root`` is not empty.
        **case_kwargs: passed to :func:`make_case` (``phases`` defaults to ``("pv",)``).

    Returns:
        ``root``.

    Raises:
        ValueError: if ``num_cases`` < 1.
        FileExistsError: if ``root`` is not empty and ``overwrite`` is False.
    """
    if num_cases < 1:
        raise ValueError(f"num_cases must be >= 1, got {num_cases}.")
    root = Path(root)
    _prepare_target(root, overwrite, lambda e: re.fullmatch(r"(volume|segmentation)-\d+\.nii", e.name) is not None)
    case_kwargs.setdefault("phases", ("pv",))
    for index in _progress(range(num_cases), "LiTS cases"):
        case = make_case(case_seed(seed, index), **case_kwargs)
        write_image(case.to_sitk(case.reference_phase), root / f"volume-{index}.nii")
        write_image(case.label_to_sitk(), root / f"segmentation-{index}.nii")
    logger.debug("wrote %d LiTS-like cases to %s", num_cases, root)
    return root


def _write_mpth_phase(case: PhantomCase, phase: str, root: Path, identifier: str, as_serialized_arrays: bool) -> None:
    """Write one phase of one case as numbered slices: image, liver mask (0/1) and tumour mask (0/255)."""
    from PIL import Image

    image = case.image_on_reference_grid(phase)
    label = case.label_on_reference_grid(phase)
    folders = {kind: root / kind / phase / identifier for kind in ("train_img", "liver_mask", "tumor_mask")}
    for folder in folders.values():
        folder.mkdir(parents=True)
    for k in range(image.shape[0]):
        name = f"{k}.png"  # numeric names without padding, as in MPTH: readers must sort them numerically
        if as_serialized_arrays:
            import torch

            torch.save(image[k].astype(np.float32), folders["train_img"] / name)
        else:
            Image.fromarray((image[k].astype(np.int32) + 1024).astype(np.uint16)).save(folders["train_img"] / name)
        Image.fromarray((label[k] >= LABELS["liver"]).astype(np.uint8)).save(folders["liver_mask"] / name)
        tumour = np.where(label[k] == LABELS["tumor"], 255, 0).astype(np.uint8)
        Image.fromarray(tumour).save(folders["tumor_mask"] / name)


def write_mpth(
    root: Path,
    *,
    num_cases: int,
    seed: int = 0,
    as_serialized_arrays: bool = False,
    overwrite: bool = False,
    **case_kwargs: Any,
) -> Path:
    """Write the MPTH layout: per-slice files of the PV and ART phases with per-phase warped masks.

    Layout, for phase in (pv, art) and slice k = 0 … Z-1 of the reference grid::

        root/train_img/<phase>/<case_id>/<k>.png    image
        root/liver_mask/<phase>/<case_id>/<k>.png   uint8 0/1 (liver including tumour)
        root/tumor_mask/<phase>/<case_id>/<k>.png   uint8 0/255

    The image is HU + 1024 as a 16-bit PNG, or with ``as_serialized_arrays`` a ``torch.save``-d (Y, X) float32
    numpy array of HU under the ``.png`` name, as the original loader reads it with ``torch.load``
    (:func:`nnunet_mm.conversion.read_slice` loads it with ``weights_only=True`` and numpy arrays allow-listed). Both phases are on the reference grid (slice-level pairing).

    Args:
        root: output folder.
        num_cases: number of cases (>= 1).
        seed: dataset seed; case ``i`` uses :func:`case_seed` ``(seed, i)``.
        as_serialized_arrays: write images as serialised arrays instead of PNGs.
        overwrite: replace ``train_img``, ``liver_mask`` and ``tumor_mask`` if ``root`` is not empty.
        **case_kwargs: passed to :func:`make_case` (``phases`` defaults to ``("pv", "art")`` and must hold both).

    Returns:
        ``root``.

    Raises:
        ValueError: if ``num_cases`` < 1 or ``phases`` lacks pv or art.
        FileExistsError: if ``root`` is not empty and ``overwrite`` is False.
    """
    if num_cases < 1:
        raise ValueError(f"num_cases must be >= 1, got {num_cases}.")
    case_kwargs.setdefault("phases", ("pv", "art"))
    missing = [p for p in ("pv", "art") if p not in case_kwargs["phases"]]
    if missing:
        raise ValueError(
            f"the MPTH layout needs the phases pv and art; phases {list(case_kwargs['phases'])} lack {missing}."
        )
    root = Path(root)
    _prepare_target(root, overwrite, lambda e: e.name in {"train_img", "liver_mask", "tumor_mask"})
    for index in _progress(range(num_cases), "MPTH cases"):
        case = make_case(case_seed(seed, index), **case_kwargs)
        for phase in ("pv", "art"):
            _write_mpth_phase(case, phase, root, case_id(index), as_serialized_arrays)
    logger.debug("wrote %d MPTH-like cases to %s", num_cases, root)
    return root


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnunet_mm phantom",
        description="Write seeded synthetic multi-phase liver CT phantoms in one of several dataset layouts.",
    )
    parser.add_argument("--layout", choices=("nnunet", "multiphase", "lits", "mpth"), default="nnunet",
                        help="nnunet: nnU-Net raw dataset (DatasetXXX_Name inside OUTPUT); multiphase: "
                             "OUTPUT/<case>/<phase>.nii.gz + label.nii.gz; lits: volume-N.nii/segmentation-N.nii; "
                             "mpth: per-slice PNGs of pv and art. Default: nnunet.")
    parser.add_argument("-o", "--output", type=Path, required=True,
                        help="output folder (for nnunet: the nnUNet_raw folder that receives DatasetXXX_Name)")
    parser.add_argument("-n", "--num-cases", type=int, default=4, help="number of (labelled) cases; default 4")
    parser.add_argument("--num-test", type=int, default=0,
                        help="nnunet: test cases in imagesTs/labelsTs; multiphase: cases without label; default 0")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed; default 0")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), default=(32, 64, 64),
                        help="reference grid size; default 32 64 64")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), default=(3.0, 1.5, 1.5),
                        help="reference voxel size in mm; default 3 1.5 1.5")
    parser.add_argument("--phases", nargs="+", choices=PHASE_NAMES, default=None,
                        help="phases, the reference first; default pv art del nc (lits: pv; mpth: pv art)")
    parser.add_argument("--different-grids", action=argparse.BooleanOptionalAction, default=None,
                        help="give non-reference phases their own grid (5 mm slices); default on for multiphase, "
                             "off otherwise (nnunet and mpth resample onto the reference grid)")
    parser.add_argument("--target-id", dest="dataset_id", type=int, default=500,
                        help="nnunet: id of the new dataset; default 500")
    parser.add_argument("--target-name", dest="name", default="MultiPhasePhantom",
                        help="nnunet: name of the new dataset; default MultiPhasePhantom")
    parser.add_argument("--noise-hu", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="range of each phase's Gaussian noise standard deviation in HU; default 10 15")
    parser.add_argument("--lesions", type=int, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="range of the number of lesions per case; default 1 3")
    parser.add_argument("--serialized-arrays", action="store_true",
                        help="mpth: write torch.save-d arrays under .png names, as the original loader reads them")
    parser.add_argument("--overwrite", action="store_true", help="replace phantom files in a non-empty output folder")
    from nnunet_mm.cli.common import add_deprecated_alias

    add_deprecated_alias(parser, "--dataset-id", "--target-id")
    add_deprecated_alias(parser, "--name", "--target-name")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (``nnunet_mm phantom ...``); prints one summary line per written dataset.

    Returns:
        Exit status 0 on success.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.num_test and args.layout in ("lits", "mpth"):
        parser.error(f"--num-test is not used by --layout {args.layout}; it applies to nnunet and multiphase.")
    case_kwargs: dict[str, Any] = {"shape_zyx": tuple(args.shape), "spacing_zyx_mm": tuple(args.spacing)}
    if args.phases is not None:
        case_kwargs["phases"] = tuple(args.phases)
    if args.different_grids is not None:
        case_kwargs["different_grids"] = args.different_grids
    if args.noise_hu is not None:
        case_kwargs["noise_std_hu"] = tuple(args.noise_hu)
    if args.lesions is not None:
        case_kwargs["num_lesions"] = tuple(args.lesions)
    try:
        if args.layout == "nnunet":
            path = write_nnunet_raw(args.output, dataset_id=args.dataset_id, name=args.name,
                                    num_training=args.num_cases, num_test=args.num_test, seed=args.seed,
                                    overwrite=args.overwrite, **case_kwargs)
            summary = f"{args.num_cases} training + {args.num_test} test cases"
        elif args.layout == "multiphase":
            path = write_multiphase_folders(args.output, num_cases=args.num_cases, num_unlabeled=args.num_test,
                                            seed=args.seed, overwrite=args.overwrite, **case_kwargs)
            summary = f"{args.num_cases} labelled + {args.num_test} unlabelled cases"
        elif args.layout == "lits":
            path = write_lits(args.output, num_cases=args.num_cases, seed=args.seed, overwrite=args.overwrite,
                              **case_kwargs)
            summary = f"{args.num_cases} cases"
        else:
            path = write_mpth(args.output, num_cases=args.num_cases, seed=args.seed,
                              as_serialized_arrays=args.serialized_arrays, overwrite=args.overwrite, **case_kwargs)
            summary = f"{args.num_cases} cases"
    except (FileExistsError, ValueError) as error:
        parser.error(str(error))
    shape = "x".join(str(n) for n in args.shape)
    print(f"phantom {args.layout}: wrote {summary} ({shape} voxels, seed {args.seed}) to {path}")
    return 0
