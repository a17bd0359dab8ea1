"""Tests of nnunet_mm.augment.misalignment: geometry in mm, reference channel untouched, seeded randomness."""
from __future__ import annotations

import math

import pytest
import torch

from nnunet_mm.augment import (
    MisalignmentParameters,
    apply_misalignment,
    displacement_field_mm,
    random_misalignment,
    sample_misalignment,
)
from nnunet_mm.augment.benchmark import benchmark_augmentation
from nnunet_mm.settings.multimodal import MisalignmentSettings

SPACING_3D = (3.0, 1.5, 1.5)
SHAPE_3D = (2, 3, 24, 32, 32)
SHAPE_2D = (2, 3, 48, 48)
ALWAYS = MisalignmentSettings(probability=1.0, max_translation_mm=(8.0, 3.0, 3.0), max_rotation_deg=5.0,
                              elastic_std_mm=2.0, elastic_control_points=4)
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _generator(seed: int = 0, device: str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def _gaussian_blob(spatial_shape, spacing_mm, centre_offset_mm, sigma_mm: float = 4.0) -> torch.Tensor:
    """A Gaussian (float64) centred ``centre_offset_mm`` away from the patch centre, in array axis order."""
    axes = [(torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * s for n, s in zip(spatial_shape, spacing_mm)]
    grids = torch.meshgrid(*axes, indexing="ij")
    squared = sum((g - c) ** 2 for g, c in zip(grids, centre_offset_mm))
    return torch.exp(-squared / (2 * sigma_mm ** 2))


def _centroid_voxels(volume: torch.Tensor) -> torch.Tensor:
    """Centre of mass in voxel indices, one value per axis of ``volume``."""
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in volume.shape], indexing="ij")
    total = volume.double().sum()
    return torch.stack([(g * volume.double()).sum() / total for g in grids])


def _translation_only(translation_mm, num_channels: int = 2, moved_channel: int = 1) -> MisalignmentParameters:
    params = MisalignmentParameters.identity(1, num_channels, len(translation_mm))
    params.active[0, moved_channel] = True
    params.translation_mm[0, moved_channel] = torch.tensor(translation_mm)
    return params


def _rotation_only(rotation_deg, num_spatial_dims: int = 3) -> MisalignmentParameters:
    params = MisalignmentParameters.identity(1, 2, num_spatial_dims)
    params.active[0, 1] = True
    params.rotation_deg[0, 1] = torch.tensor(rotation_deg)
    return params


# ---------------------------------------------------------------------------------------------------- untouched data

@pytest.mark.parametrize("reference_channel", [0, 2])
def test_reference_channel_is_bit_identical_and_input_is_not_modified(reference_channel):
    images = torch.randn(SHAPE_3D, generator=_generator(1))
    label = torch.randint(0, 3, (2, 1, *SHAPE_3D[2:]), generator=_generator(2))
    images_before, label_before = images.clone(), label.clone()
    out = random_misalignment(images, SPACING_3D, ALWAYS, reference_channel=reference_channel,
                              generator=_generator(3))
    assert torch.equal(out[:, reference_channel], images[:, reference_channel])
    assert torch.equal(images, images_before)  # no in-place change of the input
    assert torch.equal(label, label_before)  # the label is never an argument, so it cannot move


def test_inactive_channels_are_copied_bit_identically():
    settings = MisalignmentSettings(probability=0.5)
    images = torch.randn((16, 3, 8, 12, 12), generator=_generator(1))
    params = sample_misalignment(16, 3, 3, settings, generator=_generator(4))
    assert params.active.any() and not params.active[:, 1:].all()
    for compact in (True, False):
        out = apply_misalignment(images, params, SPACING_3D, compact=compact)
        inactive = ~params.active
        assert torch.equal(out[inactive], images[inactive])
        assert not torch.equal(out[params.active], images[params.active])


def test_compact_and_full_resampling_paths_agree():
    images = torch.randn(SHAPE_3D, generator=_generator(1))
    params = sample_misalignment(2, 3, 3, MisalignmentSettings(probability=0.5), generator=_generator(7))
    compact = apply_misalignment(images, params, SPACING_3D, compact=True)
    full = apply_misalignment(images, params, SPACING_3D, compact=False)
    torch.testing.assert_close(compact, full, atol=1e-4, rtol=0)  # batched float32 rounding only


# ---------------------------------------------------------------------------------------------------- geometry in mm

@pytest.mark.parametrize("translation_mm", [(4.5, 0.0, 0.0), (0.0, -2.25, 0.0), (0.0, 0.0, 3.3), (4.5, -2.25, 3.3)])
def test_translation_moves_blob_by_minus_t_over_spacing_with_anisotropic_spacing(translation_mm):
    spatial = SHAPE_3D[2:]
    blob = _gaussian_blob(spatial, SPACING_3D, (0.0, 0.0, 0.0)).float()
    images = torch.stack([blob, blob])[None]  # (1, 2, *spatial): channel 0 reference, channel 1 moved
    out = apply_misalignment(images, _translation_only(translation_mm), SPACING_3D)
    # output(p) = input(p + t): the content moves by -t
    expected_shift = -torch.tensor(translation_mm, dtype=torch.float64) / torch.tensor(SPACING_3D)
    shift = _centroid_voxels(out[0, 1]) - _centroid_voxels(images[0, 1])
    torch.testing.assert_close(shift, expected_shift, atol=0.3, rtol=0)
    assert torch.equal(out[0, 0], images[0, 0])


def test_translation_moves_blob_by_minus_t_over_spacing_in_2d():
    spacing = (0.8, 1.25)
    translation_mm = (2.4, -3.75)
    blob = _gaussian_blob(SHAPE_2D[2:], spacing, (0.0, 0.0)).float()
    images = torch.stack([blob, blob])[None]
    out = apply_misalignment(images, _translation_only(translation_mm), spacing)
    shift = _centroid_voxels(out[0, 1]) - _centroid_voxels(images[0, 1])
    torch.testing.assert_close(shift, torch.tensor([-3.0, 3.0], dtype=torch.float64), atol=0.3, rtol=0)


def test_pure_translation_has_constant_displacement_field():
    params = _translation_only((4.5, -2.25, 3.3))
    field = displacement_field_mm(params, (6, 7, 8), SPACING_3D)
    assert field.shape == (1, 2, 3, 6, 7, 8)
    assert torch.equal(field[0, 0], torch.zeros_like(field[0, 0]))
    expected = torch.tensor((4.5, -2.25, 3.3)).view(3, 1, 1, 1).expand(3, 6, 7, 8)
    torch.testing.assert_close(field[0, 1], expected, atol=1e-5, rtol=0)


def test_rotation_keeps_centre_voxel_fixed():
    spatial = (25, 33, 33)  # odd: the centre is a voxel
    images = torch.randn((1, 2, *spatial), generator=_generator(5))
    out = apply_misalignment(images, _rotation_only((7.0, -4.0, 9.0)), SPACING_3D)
    torch.testing.assert_close(out[0, 1, 12, 16, 16], images[0, 1, 12, 16, 16], atol=1e-5, rtol=0)
    field = displacement_field_mm(_rotation_only((7.0, -4.0, 9.0)), spatial, SPACING_3D)
    torch.testing.assert_close(field[0, 1, :, 12, 16, 16], torch.zeros(3), atol=1e-5, rtol=0)


def test_rotation_about_axis_1_moves_off_centre_blob_along_the_expected_arc_in_mm():
    spatial = (25, 33, 33)
    radius_mm, angle_deg = 12.0, 20.0
    blob = _gaussian_blob(spatial, SPACING_3D, (0.0, 0.0, radius_mm)).float()
    images = torch.stack([blob, blob])[None]
    out = apply_misalignment(images, _rotation_only((0.0, angle_deg, 0.0)), SPACING_3D)
    # rotation about axis 1 turns the plane (2, 0); a structure at x appears at R^T x = (-r sin θ, 0, r cos θ)
    theta = math.radians(angle_deg)
    expected_mm = torch.tensor([-radius_mm * math.sin(theta), 0.0, radius_mm * math.cos(theta)], dtype=torch.float64)
    centre = torch.tensor([(n - 1) / 2 for n in spatial], dtype=torch.float64)
    spacing = torch.tensor(SPACING_3D, dtype=torch.float64)
    position_mm = (_centroid_voxels(out[0, 1]) - centre) * spacing
    torch.testing.assert_close(position_mm / spacing, expected_mm / spacing, atol=0.3, rtol=0)
    moved_mm = torch.linalg.norm(position_mm - torch.tensor([0.0, 0.0, radius_mm], dtype=torch.float64))
    assert moved_mm.item() == pytest.approx(2 * radius_mm * math.sin(theta / 2), abs=0.3 * SPACING_3D[2])


def test_rotation_displacement_has_chord_length_in_mm_not_voxels():
    angle_deg = 10.0
    spatial = (25, 33, 33)
    field = displacement_field_mm(_rotation_only((0.0, angle_deg, 0.0)), spatial, SPACING_3D)
    # rotation about axis 1 (plane of the 3.0 mm and 1.5 mm axes): every voxel moves by the chord 2 r sin(θ/2),
    # r its distance in mm from axis 1
    index = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in spatial], indexing="ij")
    r_mm = torch.sqrt(((index[0] - 12) * SPACING_3D[0]) ** 2 + ((index[2] - 16) * SPACING_3D[2]) ** 2)
    chord = 2 * r_mm * math.sin(math.radians(angle_deg) / 2)
    torch.testing.assert_close(torch.linalg.norm(field[0, 1], dim=0), chord, atol=1e-4, rtol=1e-4)
    # nothing moves along the rotation axis (up to float32 rounding)
    torch.testing.assert_close(field[0, 1, 1], torch.zeros_like(field[0, 1, 1]), atol=1e-5, rtol=0)


def test_2d_rotation_moves_off_centre_blob_along_the_expected_arc():
    spacing = (1.0, 1.0)
    angle_deg, radius_mm = 15.0, 12.0
    blob = _gaussian_blob((49, 49), spacing, (radius_mm, 0.0), sigma_mm=2.5).float()
    images = torch.stack([blob, blob])[None]
    out = apply_misalignment(images, _rotation_only((angle_deg,), num_spatial_dims=2), spacing)
    theta = math.radians(angle_deg)
    # R = [[c, -s], [s, c]] rotates the plane (0, 1); the blob at x appears at R^T x = (r cos θ, -r sin θ)
    expected = torch.tensor([24 + radius_mm * math.cos(theta), 24 - radius_mm * math.sin(theta)], dtype=torch.float64)
    torch.testing.assert_close(_centroid_voxels(out[0, 1]), expected, atol=0.3, rtol=0)


# ---------------------------------------------------------------------------------------------------- elastic field

def test_displacement_field_matches_dense_rigid_plus_trilinear_elastic_formula():
    settings = MisalignmentSettings(probability=1.0, max_translation_mm=(6.0, 3.0, 3.0), max_rotation_deg=10.0,
                                    elastic_std_mm=2.0, elastic_control_points=3)
    spatial = (9, 14, 11)
    params = sample_misalignment(2, 2, 3, settings, generator=_generator(21))
    field = displacement_field_mm(params, spatial, SPACING_3D).double()
    axes = [(torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * s for n, s in zip(spatial, SPACING_3D)]
    p = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # (3, *spatial)
    for b in range(2):
        a, c, e = [math.radians(v) for v in params.rotation_deg[b, 1].tolist()]
        r0 = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
        r1 = torch.tensor([[math.cos(c), 0, math.sin(c)], [0, 1, 0], [-math.sin(c), 0, math.cos(c)]])
        r2 = torch.tensor([[math.cos(e), -math.sin(e), 0], [math.sin(e), math.cos(e), 0], [0, 0, 1]])
        rotation = (r0 @ r1 @ r2).double()
        elastic = torch.nn.functional.interpolate(params.control_displacement_mm[b, 1][None].double(), size=spatial,
                                                  mode="trilinear", align_corners=True)[0]
        expected = (torch.einsum("ij,j...->i...", rotation, p) + elastic
                    + params.translation_mm[b, 1].double().view(3, 1, 1, 1) - p)
        torch.testing.assert_close(field[b, 1], expected, atol=1e-4, rtol=0)
        assert torch.equal(field[b, 0], torch.zeros_like(field[b, 0]))


def test_elastic_field_is_smooth_and_has_configured_std_at_control_points():
    std_mm, points = 3.0, 4
    settings = MisalignmentSettings(probability=1.0, max_translation_mm=(0.0, 0.0, 0.0), max_rotation_deg=0.0,
                                    elastic_std_mm=std_mm, elastic_control_points=points)
    spatial = (25, 31, 31)  # (n - 1) divisible by (points - 1): control points fall on voxels
    params = sample_misalignment(32, 3, 3, settings, generator=_generator(11))
    field = displacement_field_mm(params, spatial, SPACING_3D)[:, 1:]
    on_control = [torch.arange(points) * ((n - 1) // (points - 1)) for n in spatial]
    at_control = field[..., on_control[0][:, None, None], on_control[1][None, :, None], on_control[2][None, None, :]]
    torch.testing.assert_close(at_control, params.control_displacement_mm[:, 1:], atol=1e-5, rtol=0)
    assert at_control.std().item() == pytest.approx(std_mm, rel=0.1)
    amplitude = field.abs().amax()
    for axis in range(3):
        neighbour_difference = field.diff(dim=3 + axis).abs().amax()
        assert neighbour_difference < 0.3 * amplitude, f"axis {axis}: field not smooth"


# ---------------------------------------------------------------------------------------------------- sampling

def test_sampled_magnitudes_respect_the_maxima_and_are_not_all_zero():
    params = sample_misalignment(64, 3, 3, ALWAYS, generator=_generator(2))
    moved = params.active
    assert moved[:, 1:].all() and not moved[:, 0].any()
    for axis, maximum in enumerate(ALWAYS.max_translation_mm):
        values = params.translation_mm[..., axis][moved]
        assert values.abs().max() <= maximum and values.abs().max() > 0.5 * maximum
    assert params.rotation_deg.shape == (64, 3, 3)
    assert params.rotation_deg.abs().max() <= ALWAYS.max_rotation_deg
    assert params.rotation_deg[moved].abs().max() > 0.5 * ALWAYS.max_rotation_deg
    assert params.control_displacement_mm.shape == (64, 3, 3, 4, 4, 4)
    assert params.control_displacement_mm[moved].std().item() == pytest.approx(ALWAYS.elastic_std_mm, rel=0.1)


def test_inactive_and_reference_entries_are_all_zero():
    params = sample_misalignment(32, 4, 3, MisalignmentSettings(probability=0.5), reference_channel=2,
                                 generator=_generator(3))
    assert not params.active[:, 2].any()
    inactive = ~params.active
    for tensor in (params.translation_mm, params.rotation_deg, params.control_displacement_mm):
        assert torch.equal(tensor[inactive], torch.zeros_like(tensor[inactive]))


def test_2d_uses_the_last_two_translation_maxima_and_one_rotation_angle():
    settings = MisalignmentSettings(probability=1.0, max_translation_mm=(8.0, 3.0, 1.0))
    params = sample_misalignment(256, 2, 2, settings, generator=_generator(4))
    assert params.rotation_deg.shape == (256, 2, 1)
    assert params.control_displacement_mm.shape == (256, 2, 2, 4, 4)
    translation = params.translation_mm[:, 1]
    assert 1.0 < translation[:, 0].abs().max() <= 3.0
    assert 0.5 < translation[:, 1].abs().max() <= 1.0


def test_probability_zero_is_identity():
    settings = MisalignmentSettings(probability=0.0)
    images = torch.randn(SHAPE_3D, generator=_generator(1))
    assert random_misalignment(images, SPACING_3D, settings, generator=_generator(2)) is images
    params = sample_misalignment(2, 3, 3, settings, generator=_generator(2))
    assert not params.active.any()
    assert torch.equal(apply_misalignment(images, params, SPACING_3D), images)


def test_single_channel_or_disabled_settings_return_the_input():
    single = torch.randn((2, 1, 8, 8, 8))
    assert random_misalignment(single, SPACING_3D, ALWAYS, generator=_generator()) is single
    still = MisalignmentSettings(probability=1.0, max_translation_mm=(0.0, 0.0, 0.0), max_rotation_deg=0.0,
                                 elastic_std_mm=0.0)
    images = torch.randn(SHAPE_3D)
    assert random_misalignment(images, SPACING_3D, still, generator=_generator()) is images


def test_probability_one_moves_every_non_reference_channel():
    images = torch.randn(SHAPE_3D, generator=_generator(1))
    out = random_misalignment(images, SPACING_3D, ALWAYS, generator=_generator(2))
    for b in range(SHAPE_3D[0]):
        for c in range(1, SHAPE_3D[1]):
            assert (out[b, c] - images[b, c]).abs().max() > 0.1, f"sample {b} channel {c} did not move"


def test_same_seed_gives_same_result_and_different_seeds_differ():
    images = torch.randn(SHAPE_3D, generator=_generator(1))
    first = random_misalignment(images, SPACING_3D, ALWAYS, generator=_generator(42))
    again = random_misalignment(images, SPACING_3D, ALWAYS, generator=_generator(42))
    other = random_misalignment(images, SPACING_3D, ALWAYS, generator=_generator(43))
    assert torch.equal(first, again)
    assert not torch.equal(first[:, 1:], other[:, 1:])


def test_works_in_2d_and_keeps_reference_bit_identical():
    images = torch.randn(SHAPE_2D, generator=_generator(1))
    out = random_misalignment(images, (0.8, 0.8), ALWAYS, generator=_generator(2))
    assert out.shape == images.shape
    assert torch.equal(out[:, 0], images[:, 0])
    assert not torch.equal(out[:, 1:], images[:, 1:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_output_dtype_and_device_are_preserved(dtype):
    images = torch.randn(SHAPE_2D, generator=_generator(1)).to(dtype)
    out = random_misalignment(images, (1.0, 1.0), ALWAYS, generator=_generator(2))
    assert out.dtype == dtype and out.device == images.device and out.shape == images.shape
    assert torch.equal(out[:, 0], images[:, 0])


def test_non_contiguous_channel_slice_is_accepted():
    data = torch.randn((2, 5, 16, 20, 20), generator=_generator(1))
    images = data[:, :3]  # the trainer slices off cascade channels
    out = random_misalignment(images, SPACING_3D, ALWAYS, generator=_generator(2))
    assert out.shape == images.shape and torch.equal(out[:, 0], images[:, 0])


# ---------------------------------------------------------------------------------------------------- errors

def test_spacing_of_the_wrong_length_raises_a_clear_error():
    images = torch.randn(SHAPE_3D)
    with pytest.raises(ValueError, match="spacing_mm needs one value per spatial axis"):
        random_misalignment(images, (1.0, 1.0), ALWAYS, generator=_generator())


def test_3d_draw_with_two_translation_maxima_raises():
    settings = MisalignmentSettings(max_translation_mm=(3.0, 3.0))
    with pytest.raises(ValueError, match="max_translation_mm has 2 values"):
        sample_misalignment(2, 3, 3, settings, generator=_generator())


def test_reference_channel_out_of_range_raises():
    with pytest.raises(ValueError, match=r"reference_channel must be in \[0, 2\]"):
        random_misalignment(torch.randn(SHAPE_3D), SPACING_3D, ALWAYS, reference_channel=3, generator=_generator())


def test_parameters_for_another_batch_shape_raise():
    params = MisalignmentParameters.identity(2, 2, 3)
    with pytest.raises(ValueError, match="Misalignment parameters are for"):
        apply_misalignment(torch.randn(SHAPE_3D), params, SPACING_3D)


def test_malformed_parameters_raise_on_construction():
    with pytest.raises(ValueError, match="rotation_deg must be"):
        MisalignmentParameters(torch.zeros((1, 2), dtype=torch.bool), torch.zeros((1, 2, 3)), torch.zeros((1, 2, 1)),
                               torch.zeros((1, 2, 3, 2, 2, 2)))


# ---------------------------------------------------------------------------------------------------- devices

@requires_cuda
def test_cuda_matches_cpu_and_keeps_reference_bit_identical():
    images = torch.randn(SHAPE_3D, generator=_generator(1))
    params = sample_misalignment(2, 3, 3, ALWAYS, generator=_generator(2))
    cpu = apply_misalignment(images, params, SPACING_3D)
    gpu = apply_misalignment(images.cuda(), params.to("cuda"), SPACING_3D)
    assert gpu.device.type == "cuda" and gpu.dtype == images.dtype
    assert torch.equal(gpu[:, 0].cpu(), images[:, 0])
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)


@requires_cuda
def test_cuda_generator_random_misalignment_is_seeded_and_stays_on_device():
    images = torch.randn(SHAPE_3D, device="cuda")
    first = random_misalignment(images, SPACING_3D, ALWAYS, generator=_generator(5, "cuda"))
    again = random_misalignment(images, SPACING_3D, ALWAYS, generator=_generator(5, "cuda"))
    assert first.device == images.device and torch.equal(first, again)
    assert torch.equal(first[:, 0], images[:, 0])


def test_benchmark_smoke_on_cpu():
    result = benchmark_augmentation(batch_shape=(1, 2, 8, 12, 12), device="cpu", iterations=1, warmup=0)
    assert (result["batch_shape"], result["device"], result["iterations"]) == ((1, 2, 8, 12, 12), "cpu", 1)
    assert result["total_ms"] == result["misalignment_ms"] + result["modality_dropout_ms"]
    with pytest.raises(ValueError, match="batch_shape must be"):
        benchmark_augmentation(batch_shape=(1, 2, 8), device="cpu", iterations=1)
