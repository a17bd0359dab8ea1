"""Tumour masks: where synthetic tumours go (random deformed ellipsoids inside the liver) and what inpainting removes.

**Synthetic tumour masks** (Diff4MMLiTS §3.2 "MCS", the mask generator of SyntheticTumors/DiffTumor), batched on the
training device: each sample draws a size class (tiny/small/medium/large, radius r in mm), a tumour count for that
class, and for every tumour a centre on a random voxel of the (3×3[×3]-eroded) allowed region, semi-axes
``U(0.75 r, 1.25 r)`` per axis, a random orientation and a smooth elastic deformation (a 3-point control grid per
axis of N(0, 1) displacements, upsampled, scaled by the class's σ in mm). The union is clipped to the allowed region
(the healthy liver). Sizes are in mm and converted through the voxel spacing, so a "small" tumour has the same
physical size at any resolution; a 2D configuration draws ellipses in-plane.

Deviations from the public recipe, on purpose: centres are drawn anywhere in the patch's liver (the recipe picks a
slice at 30–70 % of the whole liver's z-extent, which a training patch does not see); ellipsoids get a random
orientation (the public code keeps them axis-aligned); the elastic field is one smooth 2D/3D field instead of one
per plane pair.

**Removal mask** (Diff4MMLiTS §3.2 "NCG", paper values): the reference tumour label, morphologically closed with a
5×5 square, then dilated once with a 3×3 square, both **in voxels and in-plane** (per axial slice, axis 0 of a 3D
array), because the inpainter works slice by slice. The closing fills gaps between nearby lesions; the dilation adds
a one-voxel margin that covers the tumour in the roughly aligned other phases.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

ELASTIC_CONTROL_POINTS = 3  # per axis, as in the public mask generator


@dataclass(frozen=True)
class TumourSizeClass:
    """One tumour size class.

    Attributes:
        name: e.g. ``"small"``.
        radius_mm: nominal radius r; semi-axes are drawn from ``U(0.75 r, 1.25 r)``.
        count: (low, high) inclusive number of tumours of this class in one sample.
        elastic_std_mm: (low, high) range of the elastic deformation's standard deviation.
    """

    name: str
    radius_mm: float
    count: tuple[int, int]
    elastic_std_mm: tuple[float, float]

    def __post_init__(self) -> None:
        if self.radius_mm <= 0:
            raise ValueError(f"tumour size class {self.name!r}: radius_mm must be > 0, got {self.radius_mm}.")
        if not 1 <= self.count[0] <= self.count[1]:
            raise ValueError(f"tumour size class {self.name!r}: count must be (low, high) with 1 <= low <= high, "
                             f"got {self.count}.")
        if not 0 <= self.elastic_std_mm[0] <= self.elastic_std_mm[1]:
            raise ValueError(f"tumour size class {self.name!r}: elastic_std_mm must be (low, high) with "
                             f"0 <= low <= high, got {self.elastic_std_mm}.")


#: The public generator's classes at 1 mm (radii 4/8/16/32 voxels, σ 0.5–1/1–2/3–6/5–10), DiffTumor's counts.
DEFAULT_SIZE_CLASSES: tuple[TumourSizeClass, ...] = (
    TumourSizeClass("tiny", 4.0, (1, 3), (0.5, 1.0)),
    TumourSizeClass("small", 8.0, (1, 3), (1.0, 2.0)),
    TumourSizeClass("medium", 16.0, (1, 2), (3.0, 6.0)),
    TumourSizeClass("large", 32.0, (1, 1), (5.0, 10.0)),
)


@dataclass(frozen=True)
class TumourMaskSettings:
    """Parameters of :func:`sample_tumour_masks`.

    Attributes:
        size_classes: the classes to draw from.
        class_probabilities: one probability per class (normalised); uniform as in SyntheticTumors by default.
    """

    size_classes: tuple[TumourSizeClass, ...] = DEFAULT_SIZE_CLASSES
    class_probabilities: tuple[float, ...] | None = None
    _normalised: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.size_classes:
            raise ValueError("at least one tumour size class is needed.")
        probabilities = self.class_probabilities or tuple(1.0 for _ in self.size_classes)
        if len(probabilities) != len(self.size_classes) or any(p < 0 for p in probabilities) \
                or sum(probabilities) <= 0:
            raise ValueError(f"class_probabilities must be {len(self.size_classes)} non-negative numbers with a "
                             f"positive sum (one per class {[c.name for c in self.size_classes]}), got "
                             f"{list(probabilities)}.")
        total = float(sum(probabilities))
        object.__setattr__(self, "_normalised", tuple(float(p) / total for p in probabilities))

    @property
    def probabilities(self) -> tuple[float, ...]:
        """The class probabilities, normalised to sum 1."""
        return self._normalised


def _uniform(low: torch.Tensor | float, high: torch.Tensor | float, shape: Sequence[int],
             generator: torch.Generator) -> torch.Tensor:
    draw = torch.rand(tuple(shape), generator=generator, device=generator.device)
    return low + (high - low) * draw


def _random_rotations(count: int, ndim: int, generator: torch.Generator) -> torch.Tensor:
    """(count, ndim, ndim) uniformly random rotation matrices (unit quaternions in 3D, angles in 2D)."""
    device = generator.device
    if ndim == 2:
        angle = _uniform(0.0, 2 * math.pi, (count,), generator)
        cos, sin = torch.cos(angle), torch.sin(angle)
        return torch.stack((torch.stack((cos, -sin), -1), torch.stack((sin, cos), -1)), -2)
    q = torch.randn((count, 4), generator=generator, device=device)
    w, x, y, z = (q / q.norm(dim=1, keepdim=True)).unbind(1)
    return torch.stack((
        torch.stack((1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)), -1),
        torch.stack((2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)), -1),
        torch.stack((2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)), -1),
    ), -2)


def _smooth_unit_field(batch: int, spatial: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """(B, ndim, *spatial) smooth displacement directions: N(0, 1) on a 3-point grid per axis, upsampled."""
    ndim = len(spatial)
    coarse = torch.randn((batch, ndim, *([ELASTIC_CONTROL_POINTS] * ndim)), generator=generator,
                         device=generator.device)
    mode = "trilinear" if ndim == 3 else "bilinear"
    return F.interpolate(coarse, size=tuple(spatial), mode=mode, align_corners=True)


def _erode(region: torch.Tensor) -> torch.Tensor:
    pool = F.max_pool3d if region.ndim == 5 else F.max_pool2d
    return ~(pool((~region).float(), 3, stride=1, padding=1) > 0)


def _centres(region: torch.Tensor, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random voxel indices inside the eroded region (the region itself where erosion leaves nothing).

    Returns:
        (B, count, ndim) float voxel coordinates and (B,) bool "the sample has an allowed region".
    """
    eroded = _erode(region)
    use_eroded = eroded.flatten(1).any(1)
    candidates = torch.where(use_eroded.view(-1, *([1] * (region.ndim - 1))), eroded, region).flatten(1).float()
    has_region = candidates.sum(1) > 0
    weights = candidates + (~has_region).float()[:, None]  # uniform dummy weights; those samples get no tumour
    flat = torch.multinomial(weights, count, replacement=True, generator=generator)  # (B, count)
    spatial = region.shape[2:]
    coordinates = []
    for size in reversed(spatial):
        coordinates.append(flat % size)
        flat = torch.div(flat, size, rounding_mode="floor")
    return torch.stack(coordinates[::-1], -1).float(), has_region


def sample_tumour_masks(region: torch.Tensor, spacing_mm: Sequence[float], settings: TumourMaskSettings,
                        generator: torch.Generator) -> torch.Tensor:
    """Random deformed-ellipsoid tumour masks inside ``region`` (see the module docstring).

    Args:
        region: (B, 1, X, Y[, Z]) bool, where tumours may lie (the healthy liver); on the generator's device.
        spacing_mm: voxel size per spatial axis of ``region`` (the configuration's spacing).
        settings: size classes and their probabilities.
        generator: the only source of randomness (per DDP rank).

    Returns:
        (B, 1, X, Y[, Z]) bool, a subset of ``region``; empty for samples whose region is empty.

    Raises:
        ValueError: ``region`` is not a bool (B, 1, ...) tensor or ``spacing_mm`` does not match its dimensions.
    """
    spatial = tuple(region.shape[2:])
    ndim = len(spatial)
    if region.dtype != torch.bool or region.ndim not in (4, 5) or region.shape[1] != 1:
        raise ValueError(f"region must be a bool tensor (B, 1, X, Y[, Z]), got {region.dtype} with shape "
                         f"{tuple(region.shape)}.")
    if len(spacing_mm) != ndim or any(s <= 0 for s in spacing_mm):
        raise ValueError(f"spacing_mm must hold {ndim} positive values (one per spatial axis), got "
                         f"{list(spacing_mm)}.")
    batch, device = region.shape[0], region.device
    classes = settings.size_classes
    max_count = max(c.count[1] for c in classes)

    class_index = torch.multinomial(torch.tensor(settings.probabilities, device=device), batch, replacement=True,
                                    generator=generator)
    radius = torch.tensor([c.radius_mm for c in classes], device=device)[class_index]  # (B,)
    count_low = torch.tensor([c.count[0] for c in classes], device=device)[class_index]
    count_high = torch.tensor([c.count[1] for c in classes], device=device)[class_index]
    count = (count_low + (_uniform(0.0, 1.0, (batch,), generator) * (count_high - count_low + 1)).floor()).long()
    elastic_low = torch.tensor([c.elastic_std_mm[0] for c in classes], device=device)[class_index]
    elastic_high = torch.tensor([c.elastic_std_mm[1] for c in classes], device=device)[class_index]

    centres_voxel, has_region = _centres(region, max_count, generator)
    spacing = torch.tensor([float(s) for s in spacing_mm], device=device)
    centres_mm = centres_voxel * spacing  # (B, N, ndim)
    semi_axes_mm = radius[:, None, None] * _uniform(0.75, 1.25, (batch, max_count, ndim), generator)
    rotations = _random_rotations(batch * max_count, ndim, generator).view(batch, max_count, ndim, ndim)
    elastic_mm = _uniform(elastic_low[:, None], elastic_high[:, None], (batch, max_count), generator)
    active = (torch.arange(max_count, device=device)[None] < count[:, None]) & has_region[:, None]

    axes = torch.meshgrid(*[torch.arange(n, device=device, dtype=torch.float32) for n in spatial], indexing="ij")
    grid_mm = torch.stack(axes) * spacing.view(ndim, *([1] * ndim))  # (ndim, *spatial)
    field = _smooth_unit_field(batch, spatial, generator)  # (B, ndim, *spatial)
    mask = torch.zeros((batch, *spatial), dtype=torch.bool, device=device)
    for k in range(max_count):
        offset = grid_mm[None] + elastic_mm[:, k].view(batch, 1, *([1] * ndim)) * field \
            - centres_mm[:, k].view(batch, ndim, *([1] * ndim))
        local = torch.einsum("bji,bj...->bi...", rotations[:, k], offset)  # into the ellipsoid's own axes
        inside = ((local / semi_axes_mm[:, k].view(batch, ndim, *([1] * ndim))) ** 2).sum(1) <= 1.0
        mask |= inside & active[:, k].view(batch, *([1] * ndim))
    return mask[:, None] & region


def removal_mask(tumour_label: np.ndarray, *, closing_size_voxels: int = 5,
                 dilation_size_voxels: int = 3) -> np.ndarray:
    """The inpainting mask: closing with a square, then one dilation with a square, per axial slice (in voxels).

    Args:
        tumour_label: (Y, X) or (Z, Y, X) bool/0-1 array of the reference phase's tumour voxels.
        closing_size_voxels: side of the closing's square (paper: 5).
        dilation_size_voxels: side of the dilation's square (paper: 3).

    Returns:
        A bool array of the same shape, a superset of ``tumour_label``.

    Raises:
        ValueError: for an array that is not 2D or 3D, or even/negative sizes.
    """
    tumour = np.asarray(tumour_label).astype(bool)
    if tumour.ndim not in (2, 3):
        raise ValueError(f"tumour_label must be a 2D or 3D array, got shape {tumour.shape}.")
    for name, size in (("closing_size_voxels", closing_size_voxels), ("dilation_size_voxels", dilation_size_voxels)):
        if size < 1 or size % 2 == 0:
            raise ValueError(f"{name} must be an odd number >= 1, got {size}.")
    in_plane = (1,) if tumour.ndim == 3 else ()
    pad = closing_size_voxels // 2
    padding = [(0, 0)] * (tumour.ndim - 2) + [(pad, pad), (pad, pad)]
    padded = np.pad(tumour, padding)  # closing near the border must not be eroded by the outside
    closed = ndimage.binary_closing(padded, structure=np.ones(in_plane + (closing_size_voxels,) * 2, bool))
    closed = closed[tuple(slice(p, closed.shape[i] - p) for i, (p, _) in enumerate(padding))]
    dilated = ndimage.binary_dilation(closed, structure=np.ones(in_plane + (dilation_size_voxels,) * 2, bool))
    return dilated | tumour
