"""Augmentation of atlas prior channels: spatial yes, intensity no, and prior dropout.

nnU-Net's CPU pipeline (``nnUNetTrainer.get_training_transforms``) applies its intensity transforms (noise, blur,
brightness, contrast, simulated low resolution, gamma) to every image channel. A prior channel is a probability, not
an intensity: brightening or gamma-correcting it would change what it says. :func:`restrict_intensity_transforms`
wraps every image-only transform of a batchgeneratorsv2 pipeline (batchgeneratorsv2 marks them by subclassing
``ImageOnlyTransform``) so that it sees only the image channels; the spatial transforms (``SpatialTransform``,
``MirrorTransform``), which subclass ``BasicTransform`` and move image and segmentation with one draw, still move
the priors together with the images and the label.

:func:`drop_priors` zeroes all prior channels of random samples of a batch (on the training device), so the network
also learns to segment from the image alone and does not copy the prior blindly.
"""
from __future__ import annotations

import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform, ImageOnlyTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform


class ImageChannelsOnly(BasicTransform):
    """Runs an image-only transform on the first ``num_image_channels`` channels; the rest pass unchanged."""

    def __init__(self, transform: BasicTransform, num_image_channels: int):
        super().__init__()
        if num_image_channels < 1:
            raise ValueError(f"num_image_channels must be >= 1, got {num_image_channels}.")
        self.transform = transform
        self.num_image_channels = num_image_channels

    def __call__(self, **data_dict) -> dict:
        image = data_dict.get("image")
        if image is None:
            return data_dict
        kept = image[self.num_image_channels:].clone()
        transformed = self.transform(image=image[:self.num_image_channels].clone())["image"]
        data_dict["image"] = torch.cat((transformed, kept.to(transformed.dtype)), dim=0)
        return data_dict

    def __repr__(self) -> str:
        return f"{type(self).__name__}(channels<{self.num_image_channels}, {self.transform!r})"


def _is_image_only(transform: BasicTransform) -> bool:
    inner = transform.transform if isinstance(transform, RandomTransform) else transform
    return isinstance(inner, ImageOnlyTransform)


def restrict_intensity_transforms(pipeline: BasicTransform, num_image_channels: int) -> BasicTransform:
    """Return ``pipeline`` with every image-only (intensity) transform limited to the image channels.

    Args:
        pipeline: a transform as returned by ``nnUNetTrainer.get_training_transforms`` (nested
            ``ComposeTransforms`` are walked; ``RandomTransform`` wrappers keep their probability).
        num_image_channels: channels ``0..num_image_channels-1`` are images; the channels after them (priors) are
            never touched by intensity transforms.

    Returns:
        The same pipeline object, modified in place.
    """
    if isinstance(pipeline, ComposeTransforms):
        pipeline.transforms = [restrict_intensity_transforms(t, num_image_channels) for t in pipeline.transforms]
        return pipeline
    if _is_image_only(pipeline):
        return ImageChannelsOnly(pipeline, num_image_channels)
    return pipeline


def drop_priors(data: torch.Tensor, prior_channels: list[int], probability: float,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero every prior channel of each sample with probability ``probability``.

    Args:
        data: (B, C, *spatial) batch on any device.
        prior_channels: indices of the prior channels.
        probability: per-sample drop probability.
        generator: a generator on ``data``'s device (per DDP rank).

    Returns:
        The batch (a new tensor; the input is not modified) and the (B,) bool mask of dropped samples.
    """
    dropped = torch.rand(data.shape[0], generator=generator, device=data.device) < probability
    if not prior_channels or not bool(dropped.any()):
        return data, dropped
    keep = torch.ones(data.shape[:2], dtype=data.dtype, device=data.device)
    keep[:, prior_channels] = torch.where(dropped, 0.0, 1.0).to(data.dtype)[:, None]
    return data * keep.view(*keep.shape, *([1] * (data.ndim - 2))), dropped
