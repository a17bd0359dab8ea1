"""Tests of nnunet_mm.augment.modality_dropout: which channels drop, what replaces them, inference-time filling."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nnunet_mm.augment import (
    ModalityDropoutParameters,
    apply_modality_dropout,
    fill_missing_channels,
    random_modality_dropout,
    sample_modality_dropout,
)
from nnunet_mm.settings.multimodal import ModalityDropoutSettings

SHAPE_3D = (2, 3, 24, 32, 32)
SHAPE_2D = (2, 3, 48, 48)
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _generator(seed: int = 0, device: str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def _distinct_channels(shape) -> torch.Tensor:
    """Every (sample, channel) pair holds its own constant offset plus noise, so copies are recognisable."""
    b, c = shape[:2]
    offsets = torch.arange(b * c, dtype=torch.float32).view(b, c, *([1] * (len(shape) - 2))) * 10
    return offsets + torch.rand(shape, generator=_generator(99))


# ---------------------------------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("reference_channel", [0, 2])
def test_reference_channel_is_never_dropped(reference_channel):
    params = sample_modality_dropout(500, 4, ModalityDropoutSettings(probability=1.0),
                                     reference_channel=reference_channel, generator=_generator(1))
    assert not params.dropped[:, reference_channel].any()
    others = [c for c in range(4) if c != reference_channel]
    assert params.dropped[:, others].all()
    assert (params.source_channel[params.dropped] == reference_channel).all()  # the only present channel


def test_empirical_drop_rate_matches_probability():
    params = sample_modality_dropout(4000, 4, ModalityDropoutSettings(probability=0.3), generator=_generator(2))
    rate = params.dropped[:, 1:].float().mean().item()
    assert rate == pytest.approx(0.3, abs=0.02)


def test_source_is_a_present_channel_of_the_same_sample_and_minus_one_elsewhere():
    params = sample_modality_dropout(2000, 4, ModalityDropoutSettings(probability=0.5), generator=_generator(3))
    source = params.source_channel
    assert source.dtype == torch.int64
    assert (source[~params.dropped] == -1).all()
    dropped_b, dropped_c = params.dropped.nonzero(as_tuple=True)
    chosen = source[dropped_b, dropped_c]
    assert ((chosen >= 0) & (chosen < 4)).all()
    assert not params.dropped[dropped_b, chosen].any()  # the source itself is present
    # uniform among present channels: every non-reference channel serves as a source sometimes
    assert set(chosen.tolist()) == {0, 1, 2, 3}


def test_source_is_uniform_among_present_channels():
    # channels 1..3 dropped with p = 1/2: when exactly one of them is present, reference and it share the draws
    params = sample_modality_dropout(20000, 4, ModalityDropoutSettings(probability=0.5), generator=_generator(4))
    one_present = (~params.dropped[:, 1:]).sum(dim=1) == 1
    chosen = params.source_channel[one_present][params.dropped[one_present]]
    assert (chosen == 0).float().mean().item() == pytest.approx(0.5, abs=0.03)


# ---------------------------------------------------------------------------------------------------- applying

def test_duplicate_copies_exactly_the_source_channel_of_the_same_sample():
    images = _distinct_channels((8, 4, 6, 7, 8))
    params = sample_modality_dropout(8, 4, ModalityDropoutSettings(probability=0.5), generator=_generator(5))
    assert params.dropped.any()
    out = apply_modality_dropout(images, params, "duplicate")
    for b in range(8):
        for c in range(4):
            expected_channel = params.source_channel[b, c].item() if params.dropped[b, c] else c
            assert torch.equal(out[b, c], images[b, expected_channel])


def test_zeros_mode_writes_zeros_and_keeps_other_channels_bit_identical():
    images = _distinct_channels(SHAPE_3D)
    params = sample_modality_dropout(2, 3, ModalityDropoutSettings(probability=1.0), generator=_generator(6))
    out = apply_modality_dropout(images, params, "zeros")
    assert torch.equal(out[:, 1:], torch.zeros_like(out[:, 1:]))
    assert torch.equal(out[:, 0], images[:, 0])


def test_invalid_mode_raises_with_the_valid_modes_listed():
    params = ModalityDropoutParameters(torch.zeros((2, 3), dtype=torch.bool), torch.full((2, 3), -1))
    with pytest.raises(ValueError, match=r"one of \['duplicate', 'zeros'\], got 'noise'"):
        apply_modality_dropout(torch.zeros(SHAPE_2D), params, "noise")


def test_probability_zero_returns_the_input_unchanged():
    images = torch.randn(SHAPE_3D)
    assert random_modality_dropout(images, ModalityDropoutSettings(probability=0.0), generator=_generator()) is images
    params = sample_modality_dropout(2, 3, ModalityDropoutSettings(probability=0.0), generator=_generator())
    assert not params.dropped.any()
    assert torch.equal(apply_modality_dropout(images, params, "duplicate"), images)


@pytest.mark.parametrize("mode", ["duplicate", "zeros"])
def test_random_dropout_keeps_reference_and_non_dropped_channels_bit_identical(mode):
    images = _distinct_channels((16, 4, 5, 6, 7))
    before = images.clone()
    settings = ModalityDropoutSettings(probability=0.5, mode=mode)
    out = random_modality_dropout(images, settings, reference_channel=1, generator=_generator(7))
    params = sample_modality_dropout(16, 4, settings, reference_channel=1, generator=_generator(7))
    assert torch.equal(images, before)
    assert torch.equal(out[:, 1], images[:, 1])
    assert torch.equal(out[~params.dropped], images[~params.dropped])
    assert not torch.equal(out[params.dropped], images[params.dropped])


def test_same_seed_gives_same_result_and_different_seeds_differ():
    images = _distinct_channels((16, 4, 5, 6, 7))
    settings = ModalityDropoutSettings(probability=0.5)
    first = random_modality_dropout(images, settings, generator=_generator(42))
    again = random_modality_dropout(images, settings, generator=_generator(42))
    other = random_modality_dropout(images, settings, generator=_generator(43))
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_works_in_2d_and_preserves_dtype(dtype):
    images = _distinct_channels(SHAPE_2D).to(dtype)
    out = random_modality_dropout(images, ModalityDropoutSettings(probability=1.0), generator=_generator(8))
    assert out.shape == images.shape and out.dtype == dtype and out.device == images.device
    for c in range(1, 3):
        assert torch.equal(out[:, c], images[:, 0])  # only the reference is present to copy


def test_parameters_for_another_batch_shape_raise():
    params = ModalityDropoutParameters(torch.zeros((2, 2), dtype=torch.bool), torch.full((2, 2), -1))
    with pytest.raises(ValueError, match=r"are for \(B, C\) = \(2, 2\)"):
        apply_modality_dropout(torch.zeros(SHAPE_2D), params, "zeros")


# ---------------------------------------------------------------------------------------------------- inference filling

def test_fill_missing_channels_duplicate_copies_the_reference_into_missing_numpy_channels():
    case = np.random.default_rng(0).standard_normal((4, 5, 6, 7)).astype(np.float32)  # (C, X, Y, Z)
    before = case.copy()
    filled = fill_missing_channels(case, [0, 2], "duplicate")
    assert isinstance(filled, np.ndarray) and filled.dtype == case.dtype
    np.testing.assert_array_equal(filled[[0, 2]], case[[0, 2]])
    np.testing.assert_array_equal(filled[1], case[0])
    np.testing.assert_array_equal(filled[3], case[0])
    np.testing.assert_array_equal(case, before)


def test_fill_missing_channels_zeros_mode_zeros_missing_channels_of_a_tensor():
    case = torch.randn((3, 5, 6, 7))
    filled = fill_missing_channels(case, [0, 1], "zeros")
    assert isinstance(filled, torch.Tensor)
    assert torch.equal(filled[:2], case[:2]) and torch.equal(filled[2], torch.zeros_like(case[2]))


@pytest.mark.parametrize("mode", ["duplicate", "zeros"])
def test_fill_missing_channels_with_a_non_zero_reference_on_a_batch(mode):
    batch = torch.randn((2, 3, 8, 8))  # (B, C, X, Y): channel_axis=1
    filled = fill_missing_channels(batch, [2], mode, reference_channel=2, channel_axis=1)
    expected = batch[:, 2] if mode == "duplicate" else torch.zeros_like(batch[:, 2])
    assert torch.equal(filled[:, 0], expected) and torch.equal(filled[:, 1], expected)
    assert torch.equal(filled[:, 2], batch[:, 2])


def test_fill_missing_channels_with_everything_available_is_a_copy():
    case = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    filled = fill_missing_channels(case, [0, 1], "duplicate")
    np.testing.assert_array_equal(filled, case)
    assert filled is not case


def test_fill_missing_channels_refuses_a_missing_reference_channel():
    with pytest.raises(ValueError, match="reference channel 0 is missing; the model cannot predict without it"):
        fill_missing_channels(np.zeros((3, 4, 4, 4)), [1, 2], "duplicate")


def test_fill_missing_channels_refuses_out_of_range_indices():
    with pytest.raises(ValueError, match=r"available channel\(s\) \[3\] out of range.*0\.\.2"):
        fill_missing_channels(torch.zeros((3, 4, 4, 4)), [0, 3], "zeros")


def test_fill_missing_channels_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match=r"\['duplicate', 'zeros'\]"):
        fill_missing_channels(np.zeros((3, 4, 4)), [0], "mean")


# ---------------------------------------------------------------------------------------------------- devices

@requires_cuda
@pytest.mark.parametrize("mode", ["duplicate", "zeros"])
def test_cuda_dropout_matches_cpu_with_the_same_parameters(mode):
    images = _distinct_channels((8, 4, 5, 6, 7))
    params = sample_modality_dropout(8, 4, ModalityDropoutSettings(probability=0.5), generator=_generator(9))
    cpu = apply_modality_dropout(images, params, mode)
    gpu = apply_modality_dropout(images.cuda(), params.to("cuda"), mode)
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)


@requires_cuda
def test_cuda_generator_dropout_is_seeded_and_fill_works_on_device():
    images = _distinct_channels((8, 4, 5, 6, 7)).cuda()
    settings = ModalityDropoutSettings(probability=0.5)
    first = random_modality_dropout(images, settings, generator=_generator(1, "cuda"))
    again = random_modality_dropout(images, settings, generator=_generator(1, "cuda"))
    assert first.device == images.device and torch.equal(first, again)
    filled = fill_missing_channels(images[0], [0], "duplicate")
    assert filled.device == images.device and torch.equal(filled[3], images[0, 0])
