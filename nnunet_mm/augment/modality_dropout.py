"""Modality dropout: random replacement of non-reference channels, so the model copes with missing ones.

During training (:func:`random_modality_dropout`) each non-reference channel of each sample is dropped with a given
probability and replaced either by a copy of a channel that is present in the same sample (``"duplicate"``; the
way Diff4MMLiTS fills missing phases) or by zeros (``"zeros"``; the mean intensity after nnU-Net's z-score
normalisation). As in batchgeneratorsv2, the random draw (:func:`sample_modality_dropout`) is separate from the
deterministic replacement (:func:`apply_modality_dropout`).

At inference (:func:`fill_missing_channels`) channels that are really missing are filled the way training did:
``"duplicate"`` copies the reference channel (the one channel that is always present), ``"zeros"`` writes zeros.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar

import numpy as np
import torch
from torch import Tensor

from nnunet_mm.settings.multimodal import DROPOUT_MODES, ModalityDropoutSettings

__all__ = [
    "ModalityDropoutParameters",
    "sample_modality_dropout",
    "apply_modality_dropout",
    "random_modality_dropout",
    "fill_missing_channels",
]

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, Tensor)


@dataclass(eq=False)  # tensors: element-wise == would be ambiguous
class ModalityDropoutParameters:
    """One draw of :func:`sample_modality_dropout` for a batch of B samples with C channels.

    Attributes:
        dropped: (B, C) bool, True where the channel of that sample is replaced.
        source_channel: (B, C) int64; for a dropped channel, the channel of the same sample whose content replaces
            it in ``"duplicate"`` mode (a channel that is not dropped); -1 where not dropped.
    """

    dropped: Tensor
    source_channel: Tensor

    def __post_init__(self) -> None:
        if self.dropped.ndim != 2 or self.dropped.dtype != torch.bool:
            raise ValueError(f"ModalityDropoutParameters.dropped must be a (B, C) bool tensor, got shape "
                             f"{tuple(self.dropped.shape)} and dtype {self.dropped.dtype}.")
        if self.source_channel.shape != self.dropped.shape or self.source_channel.dtype != torch.int64:
            raise ValueError(f"ModalityDropoutParameters.source_channel must be a {tuple(self.dropped.shape)} int64 "
                             f"tensor, got shape {tuple(self.source_channel.shape)} and dtype "
                             f"{self.source_channel.dtype}.")
        if self.source_channel.device != self.dropped.device:
            raise ValueError(f"ModalityDropoutParameters tensors must share one device, got {self.dropped.device} "
                             f"and {self.source_channel.device}.")

    @property
    def device(self) -> torch.device:
        return self.dropped.device

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "ModalityDropoutParameters":
        """The same parameters on ``device``."""
        return ModalityDropoutParameters(self.dropped.to(device, non_blocking=non_blocking),
                                         self.source_channel.to(device, non_blocking=non_blocking))


def sample_modality_dropout(num_samples: int, num_channels: int, settings: ModalityDropoutSettings, *,
                            reference_channel: int = 0, generator: torch.Generator,
                            device: torch.device | str | None = None) -> ModalityDropoutParameters:
    """Draw which channels to drop and, for each dropped one, a present channel of the same sample to copy.

    Each non-reference channel is dropped independently with ``settings.probability``; the reference channel never
    is. Each dropped channel gets its own source, uniform among the channels of its sample that are not dropped
    (there is always at least one: the reference channel).

    Args:
        num_samples: B.
        num_channels: C.
        settings: the dataset's modality-dropout settings (only ``probability`` is used here).
        reference_channel: the channel the label belongs to; never dropped.
        generator: source of all randomness; numbers are drawn on its device.
        device: where the returned tensors live; None means the generator's device.

    Returns:
        The parameters on ``device``.

    Raises:
        ValueError: ``reference_channel`` out of range.
    """
    _check_reference_channel(reference_channel, num_channels)
    b, c = num_samples, num_channels
    draw = {"generator": generator, "device": generator.device}
    dropped = torch.rand((b, c), **draw) < settings.probability
    dropped[:, reference_channel] = False
    # scores[b, i, k]: random score of candidate source k for channel i; dropped candidates can never win
    scores = torch.rand((b, c, c), **draw).masked_fill(dropped[:, None, :], -1.0)
    source_channel = torch.where(dropped, scores.argmax(dim=-1), -1)
    params = ModalityDropoutParameters(dropped, source_channel)
    if device is not None and torch.device(device) != generator.device:
        params = params.to(device, non_blocking=True)
    return params


def apply_modality_dropout(images: Tensor, params: ModalityDropoutParameters, mode: str) -> Tensor:
    """Replace the dropped channels of ``images`` (deterministic).

    Args:
        images: (B, C, *spatial) tensor, any device.
        params: drops for the same B and C, on the same device.
        mode: ``"duplicate"`` copies ``params.source_channel`` of the same sample (read from the input, before any
            replacement); ``"zeros"`` writes zeros.

    Returns:
        A new tensor with the shape, dtype and device of ``images``; channels that are not dropped are bit-identical.

    Raises:
        ValueError: an unknown ``mode`` (the message lists the valid ones) or a shape/device mismatch.
    """
    _check_mode(mode)
    if images.ndim < 3:
        raise ValueError(f"images must be (B, C, *spatial), got shape {tuple(images.shape)}.")
    b, c = images.shape[:2]
    if params.dropped.shape != (b, c):
        raise ValueError(f"Modality-dropout parameters are for (B, C) = {tuple(params.dropped.shape)}, but the images "
                         f"are {tuple(images.shape)} (B, C, *spatial).")
    if params.device != images.device:
        raise ValueError(f"Modality-dropout parameters are on {params.device}, the images on {images.device}; "
                         f"sample with device=images.device.")
    dropped = params.dropped.view(b, c, *([1] * (images.ndim - 2)))
    if mode == "zeros":
        return torch.where(dropped, 0.0, images)
    own_channel = torch.arange(c, device=images.device).expand(b, c)
    channel = torch.where(params.dropped, params.source_channel, own_channel)
    sample = torch.arange(b, device=images.device)[:, None]
    return images[sample, channel]


def random_modality_dropout(images: Tensor, settings: ModalityDropoutSettings, *, reference_channel: int = 0,
                            generator: torch.Generator) -> Tensor:
    """Sample and apply modality dropout to the non-reference channels (the trainer's entry point).

    Args:
        images: (B, C, *spatial) tensor, any device.
        settings: the dataset's modality-dropout settings (probability and mode).
        reference_channel: the channel the label belongs to; returned bit-identical.
        generator: source of all randomness (ideally on ``images.device``).

    Returns:
        The batch with dropped channels replaced (same shape, dtype, device), or ``images`` itself when the
        probability is 0 or there is only one channel.

    Raises:
        ValueError: an unknown ``settings.mode`` or ``reference_channel`` out of range.
    """
    _check_mode(settings.mode)
    if images.ndim < 3:
        raise ValueError(f"images must be (B, C, *spatial), got shape {tuple(images.shape)}.")
    num_channels = images.shape[1]
    _check_reference_channel(reference_channel, num_channels)
    if not settings.enabled or num_channels == 1:
        return images
    params = sample_modality_dropout(images.shape[0], num_channels, settings, reference_channel=reference_channel,
                                     generator=generator, device=images.device)
    return apply_modality_dropout(images, params, settings.mode)


def fill_missing_channels(images: ArrayOrTensor, available: Sequence[int], mode: str, reference_channel: int = 0,
                          *, channel_axis: int = 0) -> ArrayOrTensor:
    """Fill the channels that are missing at inference the way modality dropout replaced them in training.

    Args:
        images: a numpy array or tensor, by default one case ``(C, *spatial)`` as nnU-Net's preprocessor returns it;
            pass ``channel_axis=1`` for a batch ``(B, C, *spatial)``. Missing channels may hold anything.
        available: indices of the channels that are really present; every other channel is filled.
        mode: ``"duplicate"`` (copy of the reference channel) or ``"zeros"``, as in the model's dataset.json.
        reference_channel: the channel the label belongs to; it must be available.
        channel_axis: the axis that indexes channels.

    Returns:
        A new array or tensor (same type, shape, dtype and device); available channels are bit-identical.

    Raises:
        ValueError: an unknown mode, an index outside ``[0, C)``, or the reference channel not available.
    """
    _check_mode(mode)
    if not isinstance(images, (np.ndarray, Tensor)):
        raise ValueError(f"images must be a numpy array or a torch.Tensor, got {type(images).__name__}.")
    if not -images.ndim <= channel_axis < images.ndim:
        raise ValueError(f"channel_axis {channel_axis} is out of range for an array of shape {tuple(images.shape)}.")
    num_channels = images.shape[channel_axis]
    available = [int(a) for a in available]
    out_of_range = sorted({a for a in available if not 0 <= a < num_channels})
    if out_of_range:
        raise ValueError(f"available channel(s) {out_of_range} out of range: the images have {num_channels} channels "
                         f"(axis {channel_axis} of shape {tuple(images.shape)}), valid indices are "
                         f"0..{num_channels - 1}.")
    _check_reference_channel(reference_channel, num_channels)
    if reference_channel not in available:
        raise ValueError(f"reference channel {reference_channel} is missing; the model cannot predict without it "
                         f"(available channels: {sorted(set(available))}).")
    missing = [c for c in range(num_channels) if c not in available]
    if isinstance(images, np.ndarray):
        filled = images.copy()
        channel_slice: list = [slice(None)] * images.ndim
        channel_slice[channel_axis] = missing
        if mode == "zeros":
            filled[tuple(channel_slice)] = 0
        else:
            reference_slice: list = [slice(None)] * images.ndim
            reference_slice[channel_axis] = slice(reference_channel, reference_channel + 1)
            filled[tuple(channel_slice)] = images[tuple(reference_slice)]
        return filled
    if not missing:
        return images.clone()
    if mode == "zeros":
        missing_index = torch.tensor(missing, device=images.device)
        return images.index_fill(channel_axis, missing_index, 0)
    source = [c if c in available else reference_channel for c in range(num_channels)]
    return images.index_select(channel_axis, torch.tensor(source, device=images.device))


def _check_mode(mode: str) -> None:
    if mode not in DROPOUT_MODES:
        raise ValueError(f"modality dropout mode must be one of {list(DROPOUT_MODES)}, got {mode!r}.")


def _check_reference_channel(reference_channel: int, num_channels: int) -> None:
    if not 0 <= reference_channel < num_channels:
        raise ValueError(f"reference_channel must be in [0, {num_channels - 1}] for {num_channels} channel(s), "
                         f"got {reference_channel}.")
