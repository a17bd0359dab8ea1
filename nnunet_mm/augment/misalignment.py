"""Simulated registration error between channels: a random rigid + smooth elastic warp per non-reference channel.

Multi-phase CT and multi-sequence MR are registered to the reference channel (the one the label was drawn on), and
that registration is never perfect. This augmentation moves every non-reference channel of every sample on its own,
so the network learns to tolerate the residual misalignment. Randomness and computation are kept apart, as in
batchgeneratorsv2: :func:`sample_misalignment` draws a :class:`MisalignmentParameters` (the only random step) and
:func:`apply_misalignment` warps deterministically with it.

Geometry. Positions are physical, in mm, relative to the patch centre: voxel index ``i`` of spatial axis ``a`` sits at
``p_a = (i - (n_a - 1) / 2) * spacing_mm[a]``. Axes keep the array order (nnU-Net's transposed order, e.g. z, y, x
for axial CT). For every output voxel ``p`` the warped channel is read from the input at

    q(p) = R · p + t + e(p),     output(p) = input(q(p)),     displacement d(p) = q(p) - p,

with ``R`` a rotation about the patch centre, ``t`` a translation and ``e`` a smooth elastic displacement. Because
everything is computed in mm, a rotation is a rotation of the physical object also when the spacing is anisotropic.
Note the direction: the channel is *sampled* at ``p + t``, so its content moves by ``-t`` (a structure at input
position ``x`` appears at output position ``R⁻¹ (x - t)`` for a rigid warp).

- Rotation: ``rotation_deg[..., a]`` is a right-handed rotation about spatial axis ``a`` (in the plane of the other
  two axes, in cyclic order: axis 0 → plane (1, 2), axis 1 → plane (2, 0), axis 2 → plane (0, 1));
  ``R = R_0 · R_1 · R_2``. In 2D there is one angle, rotating the plane (0, 1).
- Elastic: a coarse grid of control-point displacements (mm) spanning the patch from corner to corner, upsampled to
  every voxel by tri/bilinear interpolation with ``align_corners=True`` (so the outermost control points sit exactly
  on the centres of the corner voxels). The result is continuous and piecewise (multi)linear between control points.
  Since that interpolation reproduces affine maps exactly, the whole of q is computed on the control grid and
  upsampled once (``F.interpolate(..., align_corners=True)``), straight into ``grid_sample``'s layout.
- Resampling: ``torch.nn.functional.grid_sample`` with bilinear interpolation, ``padding_mode="border"`` and
  ``align_corners=True``. Channels that are not moved (the reference channel and inactive channels) are copied,
  never resampled, so they are bit-identical to the input.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from nnunet_mm.settings.multimodal import MisalignmentSettings

__all__ = [
    "MisalignmentParameters",
    "sample_misalignment",
    "displacement_field_mm",
    "apply_misalignment",
    "random_misalignment",
]

# plane (i, j) rotated by the angle about each spatial axis of a 3D patch, in cyclic order
_ROTATION_PLANES_3D = ((1, 2), (2, 0), (0, 1))
# F.interpolate's (multi)linear mode per number of spatial dimensions
_INTERPOLATION_MODES = {2: "bilinear", 3: "trilinear"}


@dataclass(eq=False)  # tensors: element-wise == would be ambiguous
class MisalignmentParameters:
    """One draw of :func:`sample_misalignment`: the warp of every (sample, channel) pair of a batch.

    B samples, C channels, D spatial dimensions (2 or 3), R rotation angles (3 in 3D, 1 in 2D). All tensors live on
    the same device (the data's). Inactive pairs (including the reference channel) hold zeros everywhere.

    Attributes:
        active: (B, C) bool, True where the channel of that sample is moved.
        translation_mm: (B, C, D) float, translation ``t`` in mm per spatial axis (array order).
        rotation_deg: (B, C, R) float, rotation angles in degrees about each spatial axis (3D) or of the plane (2D).
        control_displacement_mm: (B, C, D, *control_grid) float, elastic displacement in mm at each control point,
            component ``a`` along spatial axis ``a``; ``control_grid`` has D entries, each >= 1.
    """

    active: Tensor
    translation_mm: Tensor
    rotation_deg: Tensor
    control_displacement_mm: Tensor

    def __post_init__(self) -> None:
        if self.active.ndim != 2 or self.active.dtype != torch.bool:
            raise ValueError(f"MisalignmentParameters.active must be a (B, C) bool tensor, got shape "
                             f"{tuple(self.active.shape)} and dtype {self.active.dtype}.")
        num_samples, num_channels = self.active.shape
        if self.translation_mm.ndim != 3 or self.translation_mm.shape[:2] != (num_samples, num_channels):
            raise ValueError(f"MisalignmentParameters.translation_mm must be (B, C, D) = ({num_samples}, "
                             f"{num_channels}, D), got {tuple(self.translation_mm.shape)}.")
        num_dims = self.translation_mm.shape[2]
        if num_dims not in (2, 3):
            raise ValueError(f"MisalignmentParameters supports 2 or 3 spatial dimensions, got D = {num_dims}.")
        expected_rotation = (num_samples, num_channels, _num_rotation_angles(num_dims))
        if tuple(self.rotation_deg.shape) != expected_rotation:
            raise ValueError(f"MisalignmentParameters.rotation_deg must be (B, C, R) = {expected_rotation} for "
                             f"D = {num_dims}, got {tuple(self.rotation_deg.shape)}.")
        control = self.control_displacement_mm
        if control.ndim != 3 + num_dims or control.shape[:3] != (num_samples, num_channels, num_dims):
            raise ValueError(f"MisalignmentParameters.control_displacement_mm must be (B, C, D, *control_grid) with "
                             f"B, C, D = {num_samples}, {num_channels}, {num_dims} and {num_dims} grid axes, got "
                             f"{tuple(control.shape)}.")
        devices = {t.device for t in (self.active, self.translation_mm, self.rotation_deg, control)}
        if len(devices) != 1:
            raise ValueError(f"MisalignmentParameters tensors must share one device, got {sorted(map(str, devices))}.")

    @property
    def num_spatial_dims(self) -> int:
        """D, the number of spatial dimensions (2 or 3)."""
        return self.translation_mm.shape[2]

    @property
    def device(self) -> torch.device:
        return self.active.device

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "MisalignmentParameters":
        """The same parameters on ``device``."""
        return MisalignmentParameters(*(t.to(device, non_blocking=non_blocking) for t in (
            self.active, self.translation_mm, self.rotation_deg, self.control_displacement_mm)))

    @classmethod
    def identity(cls, num_samples: int, num_channels: int, num_spatial_dims: int, *, control_points: int = 2,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
                 ) -> "MisalignmentParameters":
        """Parameters that move nothing (all inactive, all zero); a starting point for hand-made warps in tests."""
        if num_spatial_dims not in (2, 3):
            raise ValueError(f"num_spatial_dims must be 2 or 3, got {num_spatial_dims}.")
        b, c, d = num_samples, num_channels, num_spatial_dims
        return cls(
            active=torch.zeros((b, c), dtype=torch.bool, device=device),
            translation_mm=torch.zeros((b, c, d), dtype=dtype, device=device),
            rotation_deg=torch.zeros((b, c, _num_rotation_angles(d)), dtype=dtype, device=device),
            control_displacement_mm=torch.zeros((b, c, d) + (control_points,) * d, dtype=dtype, device=device),
        )


def sample_misalignment(num_samples: int, num_channels: int, num_spatial_dims: int, settings: MisalignmentSettings,
                        *, reference_channel: int = 0, generator: torch.Generator,
                        device: torch.device | str | None = None) -> MisalignmentParameters:
    """Draw a random warp for every non-reference channel of every sample (the only random step).

    Each non-reference (sample, channel) pair is active with ``settings.probability``. Active pairs get a
    translation uniform in ``±settings.max_translation_mm`` per axis (the last D values of the tuple), rotation
    angles uniform in ``±settings.max_rotation_deg`` and control-point displacements ~ N(0, ``elastic_std_mm``²) on
    an ``elastic_control_points``^D grid. Inactive pairs and the reference channel get zeros.

    Args:
        num_samples: B.
        num_channels: C.
        num_spatial_dims: D, 2 or 3.
        settings: the dataset's misalignment settings.
        reference_channel: the channel the label belongs to; never active.
        generator: source of all randomness. The numbers are drawn on the generator's device; a generator on the
            data's device avoids a host-to-device copy (and the synchronisation it implies).
        device: where the returned tensors live; None means the generator's device.

    Returns:
        The parameters, float32, on ``device``.

    Raises:
        ValueError: ``num_spatial_dims`` not 2 or 3, ``reference_channel`` out of range, or a 3D draw with only two
            ``max_translation_mm`` values.
    """
    if num_spatial_dims not in (2, 3):
        raise ValueError(f"num_spatial_dims must be 2 or 3, got {num_spatial_dims}.")
    _check_reference_channel(reference_channel, num_channels)
    max_translation = tuple(settings.max_translation_mm)
    if len(max_translation) < num_spatial_dims:
        raise ValueError(f"misalignment.max_translation_mm has {len(max_translation)} values {list(max_translation)}, "
                         f"but the data has {num_spatial_dims} spatial dimensions; give one value per axis.")
    max_translation = max_translation[-num_spatial_dims:]
    b, c, d = num_samples, num_channels, num_spatial_dims
    draw = {"generator": generator, "device": generator.device, "dtype": torch.float32}

    active = torch.rand((b, c), **draw) < settings.probability
    active[:, reference_channel] = False
    unit_translation = torch.rand((b, c, d), **draw) * 2 - 1
    # per-axis scaling with Python floats: no host-to-device copy of the maxima
    translation = torch.stack([unit_translation[..., a] * max_translation[a] for a in range(d)], dim=-1)
    rotation = (torch.rand((b, c, _num_rotation_angles(d)), **draw) * 2 - 1) * settings.max_rotation_deg
    control_grid = (settings.elastic_control_points,) * d
    control = torch.randn((b, c, d) + control_grid, **draw) * settings.elastic_std_mm

    params = MisalignmentParameters(
        active=active,
        translation_mm=torch.where(active[..., None], translation, 0.0),
        rotation_deg=torch.where(active[..., None], rotation, 0.0),
        control_displacement_mm=torch.where(active.view(b, c, *([1] * (d + 1))), control, 0.0),
    )
    if device is not None and torch.device(device) != generator.device:
        params = params.to(device, non_blocking=True)
    return params


def displacement_field_mm(params: MisalignmentParameters, spatial_shape: Sequence[int],
                          spacing_mm: Sequence[float]) -> Tensor:
    """The dense displacement ``d(p) = R·p + t + e(p) - p`` in mm of every (sample, channel) pair.

    Meant for inspection and tests; :func:`apply_misalignment` computes the sampling positions directly.

    Args:
        params: B × C warps with D spatial dimensions.
        spatial_shape: the patch size (D ints, array order).
        spacing_mm: voxel spacing in mm (D floats, same order).

    Returns:
        (B, C, D, *spatial_shape) float32 on ``params.device``; component ``a`` is the displacement along spatial
        axis ``a`` in mm. Exactly zero for inactive pairs and the reference channel.
    """
    spatial_shape, spacing_mm = _check_geometry(spatial_shape, spacing_mm, params.num_spatial_dims)
    b, c = params.active.shape
    sampling_mm = _sampling_coordinates(_flatten_pairs(params), spatial_shape, spacing_mm, torch.float32,
                                        for_grid_sample=False)
    positions = torch.meshgrid(*_axis_positions_mm(spatial_shape, spacing_mm, params.device, torch.float32),
                               indexing="ij")
    displacement = (sampling_mm - torch.stack(positions, dim=-1)).movedim(-1, 1).contiguous()
    displacement = displacement.view(b, c, *displacement.shape[1:])
    return torch.where(params.active.view(b, c, *([1] * (1 + len(spatial_shape)))), displacement, 0.0)


def apply_misalignment(images: Tensor, params: MisalignmentParameters, spacing_mm: Sequence[float], *,
                       compact: bool | None = None) -> Tensor:
    """Warp every active (sample, channel) pair of ``images`` with its parameters (deterministic).

    Args:
        images: (B, C, *spatial) floating tensor, spatial = (X, Y, Z) or (X, Y), any device.
        params: warps for the same B and C and D = len(spatial), on the same device.
        spacing_mm: voxel spacing in mm, one value per spatial axis in array order.
        compact: True resamples only the active pairs (their indices are gathered with ``nonzero``, which makes a
            CUDA device wait for the host); False resamples all B·C pairs and keeps the result only where active
            (no host synchronisation, at the cost of resampling inactive pairs too). None: compact on the CPU,
            not on other devices.

    Returns:
        A new tensor with the shape, dtype and device of ``images``. Inactive pairs (the reference channel
        included) are bit-identical copies of the input. Resampling runs in float32 (float64 for float64 input).

    Raises:
        ValueError: wrong number of dimensions, a non-floating dtype, or a shape/device/spacing mismatch.
    """
    _check_images(images)
    num_dims = images.ndim - 2
    b, c = images.shape[:2]
    spatial_shape, spacing_mm = _check_geometry(images.shape[2:], spacing_mm, num_dims)
    if params.active.shape != (b, c) or params.num_spatial_dims != num_dims:
        raise ValueError(f"Misalignment parameters are for B, C, D = {tuple(params.active.shape)}, "
                         f"{params.num_spatial_dims}, but the images are {tuple(images.shape)} (B, C, *spatial).")
    if params.device != images.device:
        raise ValueError(f"Misalignment parameters are on {params.device}, the images on {images.device}; "
                         f"sample with device=images.device.")
    if compact is None:
        compact = images.device.type == "cpu"
    work_dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
    pairs = images.reshape(b * c, 1, *spatial_shape)
    flat = _flatten_pairs(params)
    if compact:
        index = params.active.reshape(-1).nonzero().squeeze(1)
        output = images.clone(memory_format=torch.contiguous_format)
        if index.numel() == 0:
            return output
        warped = _warp(pairs.index_select(0, index), _select_pairs(flat, index), spatial_shape, spacing_mm, work_dtype)
        output.view(b * c, 1, *spatial_shape).index_copy_(0, index, warped.to(images.dtype))
        return output
    warped = _warp(pairs, flat, spatial_shape, spacing_mm, work_dtype).to(images.dtype).view(images.shape)
    return torch.where(params.active.view(b, c, *([1] * num_dims)), warped, images)


def random_misalignment(images: Tensor, spacing_mm: Sequence[float], settings: MisalignmentSettings, *,
                        reference_channel: int = 0, generator: torch.Generator) -> Tensor:
    """Sample and apply a random misalignment of the non-reference channels (the trainer's entry point).

    Args:
        images: (B, C, *spatial) floating tensor, spatial = (X, Y, Z) or (X, Y), any device.
        spacing_mm: voxel spacing in mm, one value per spatial axis in array order.
        settings: the dataset's misalignment settings.
        reference_channel: the channel the label belongs to; returned bit-identical.
        generator: source of all randomness (ideally on ``images.device``).

    Returns:
        The warped batch (same shape, dtype, device), or ``images`` itself when the settings cannot move anything
        or there is only one channel.
    """
    _check_images(images)
    num_channels = images.shape[1]
    _check_reference_channel(reference_channel, num_channels)
    if not settings.enabled or num_channels == 1:
        return images
    params = sample_misalignment(images.shape[0], num_channels, images.ndim - 2, settings,
                                 reference_channel=reference_channel, generator=generator, device=images.device)
    return apply_misalignment(images, params, spacing_mm)


# --------------------------------------------------------------------------------------------------------------------
# internals

@dataclass
class _FlatParameters:
    """The parameters of N = B·C pairs, flattened: translation (N, D), rotation (N, R), control (N, D, *grid)."""

    translation_mm: Tensor
    rotation_deg: Tensor
    control_displacement_mm: Tensor


def _num_rotation_angles(num_spatial_dims: int) -> int:
    return 3 if num_spatial_dims == 3 else 1


def _check_reference_channel(reference_channel: int, num_channels: int) -> None:
    if not 0 <= reference_channel < num_channels:
        raise ValueError(f"reference_channel must be in [0, {num_channels - 1}] for {num_channels} channel(s), "
                         f"got {reference_channel}.")


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor (B, C, *spatial), got {type(images).__name__}.")
    if images.ndim not in (4, 5):
        raise ValueError(f"images must be 4D (B, C, X, Y) or 5D (B, C, X, Y, Z), got {images.ndim}D with shape "
                         f"{tuple(images.shape)}.")
    if not images.is_floating_point():
        raise ValueError(f"images must have a floating dtype, got {images.dtype}.")


def _check_geometry(spatial_shape: Sequence[int], spacing_mm: Sequence[float], num_dims: int
                    ) -> tuple[tuple[int, ...], tuple[float, ...]]:
    spatial_shape = tuple(int(n) for n in spatial_shape)
    spacing_mm = tuple(float(s) for s in spacing_mm)
    if len(spatial_shape) != num_dims or len(spacing_mm) != num_dims:
        raise ValueError(f"Expected {num_dims} spatial dimensions, got spatial shape {spatial_shape} and spacing_mm "
                         f"{spacing_mm}; spacing_mm needs one value per spatial axis in array order.")
    if not all(s > 0 and math.isfinite(s) for s in spacing_mm):
        raise ValueError(f"spacing_mm must be positive and finite, got {spacing_mm}.")
    return spatial_shape, spacing_mm


def _flatten_pairs(params: MisalignmentParameters) -> _FlatParameters:
    return _FlatParameters(
        translation_mm=params.translation_mm.flatten(0, 1),
        rotation_deg=params.rotation_deg.flatten(0, 1),
        control_displacement_mm=params.control_displacement_mm.flatten(0, 1),
    )


def _select_pairs(flat: _FlatParameters, index: Tensor) -> _FlatParameters:
    return _FlatParameters(flat.translation_mm.index_select(0, index), flat.rotation_deg.index_select(0, index),
                           flat.control_displacement_mm.index_select(0, index))


def _rotation_matrices(rotation_deg: Tensor, num_dims: int) -> Tensor:
    """(N, R) angles in degrees -> (N, D, D) rotation matrices acting on positions in array axis order."""
    angles = torch.deg2rad(rotation_deg)
    cos, sin = angles.cos(), angles.sin()
    if num_dims == 2:
        return torch.stack([torch.stack([cos[:, 0], -sin[:, 0]], -1),
                            torch.stack([sin[:, 0], cos[:, 0]], -1)], dim=-2)
    identity = torch.eye(3, dtype=rotation_deg.dtype, device=rotation_deg.device)
    rotation = identity.expand(rotation_deg.shape[0], 3, 3)
    for axis, (i, j) in enumerate(_ROTATION_PLANES_3D):
        about_axis = identity.repeat(rotation_deg.shape[0], 1, 1)
        about_axis[:, i, i] = cos[:, axis]
        about_axis[:, i, j] = -sin[:, axis]
        about_axis[:, j, i] = sin[:, axis]
        about_axis[:, j, j] = cos[:, axis]
        # element-wise product-sum rather than `@`: TF32 matmuls would round the matrices to ~1e-3
        rotation = (rotation[:, :, :, None] * about_axis[:, None, :, :]).sum(dim=2)
    return rotation


def _axis_positions_mm(spatial_shape: tuple[int, ...], spacing_mm: tuple[float, ...], device: torch.device,
                       dtype: torch.dtype) -> list[Tensor]:
    """Per spatial axis, the (n_a,) physical positions in mm of the voxel centres, relative to the patch centre."""
    return [(torch.arange(n, device=device, dtype=dtype) - (n - 1) / 2) * s for n, s in zip(spatial_shape, spacing_mm)]


def _sampling_coordinates(flat: _FlatParameters, spatial_shape: tuple[int, ...], spacing_mm: tuple[float, ...],
                          dtype: torch.dtype, *, for_grid_sample: bool) -> Tensor:
    """q(p) = R·p + t + e(p) at every voxel of N pairs, component-last: (N, *spatial, D).

    With ``for_grid_sample=False`` the components are in mm in array axis order. With ``for_grid_sample=True``
    they are ready for ``F.grid_sample(align_corners=True)``: component k is spatial axis D-1-k (x = last axis),
    scaled so that -1 and 1 are the centres of the first and last voxel.

    Linear interpolation with ``align_corners=True`` reproduces affine functions exactly, so the rigid part R·p + t
    is evaluated at the control points, added to the elastic displacements there, and the sum is upsampled once.
    Scaling and reordering happen on that small control grid, before anything is expanded to the full patch.
    """
    num_dims = len(spatial_shape)
    control = flat.control_displacement_mm.to(dtype)  # (N, D, *control_grid)
    # an axis with a single control point cannot carry the linear part: repeat it (e(p) is constant along it)
    control_shape = tuple(max(k, 2) for k in control.shape[2:])
    if control_shape != tuple(control.shape[2:]):
        control = control.expand(*control.shape[:2], *control_shape)
    # physical position (mm) of each control point: the outermost ones sit on the centres of the corner voxels
    control_axes = [torch.linspace(-0.5, 0.5, k, device=control.device, dtype=dtype) * ((n - 1) * s)
                    for k, n, s in zip(control_shape, spatial_shape, spacing_mm)]
    control_positions = torch.stack(torch.meshgrid(*control_axes, indexing="ij"), dim=0)  # (D, *control_grid)
    rotation = _rotation_matrices(flat.rotation_deg.to(dtype), num_dims)  # (N, D_out, D_in)
    # R·p as an element-wise sum, not a matrix product: immune to TF32 matmul settings
    rigid = sum(rotation[:, :, j].view(-1, num_dims, *([1] * num_dims)) * control_positions[j]
                for j in range(num_dims))
    translation = flat.translation_mm.to(dtype).view(*flat.translation_mm.shape, *([1] * num_dims))
    control_sampling_mm = rigid + translation + control  # (N, D, *control_grid)

    components, scale = list(range(num_dims)), [1.0] * num_dims
    if for_grid_sample:
        components.reverse()
        scale = [2.0 / (s * (n - 1)) if n > 1 else 0.0 for n, s in zip(spatial_shape, spacing_mm)]
    control_sampling = torch.stack([control_sampling_mm[:, a] * scale[a] for a in components], dim=1)
    upsampled = F.interpolate(control_sampling, size=spatial_shape, mode=_INTERPOLATION_MODES[num_dims],
                              align_corners=True)
    return upsampled.movedim(1, -1)


def _warp(pairs: Tensor, flat: _FlatParameters, spatial_shape: tuple[int, ...], spacing_mm: tuple[float, ...],
          work_dtype: torch.dtype) -> Tensor:
    """Resample N single-channel images (N, 1, *spatial) at q(p); returns (N, 1, *spatial) in ``work_dtype``."""
    grid = _sampling_coordinates(flat, spatial_shape, spacing_mm, work_dtype, for_grid_sample=True)
    return F.grid_sample(pairs.to(work_dtype), grid, mode="bilinear", padding_mode="border", align_corners=True)
