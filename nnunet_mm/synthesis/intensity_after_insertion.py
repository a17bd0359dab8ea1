"""nnU-Net's intensity augmentation, moved behind the online tumour synthesis so that it degrades a synthetic lesion
exactly as it degrades the tissue around it.

nnU-Net's CPU pipeline (``nnUNetTrainer.get_training_transforms``) applies, per sample and after the spatial
transform: Gaussian noise, Gaussian blur, multiplicative brightness, contrast, simulated low resolution and gamma
(twice: inverted and not), then mirroring, the nonzero mask (``MaskImageTransform``, only where the plans use a mask
for normalisation) and ``RemoveLabelTransform(-1 -> 0)``. SynthTumorTrainer paints its tumours on the training device,
after that pipeline; a lesion painted there would stay sharp, noise- and gamma-free in a blurred, low-resolution or
re-contrasted patch, a shortcut the network can learn.

:func:`split_training_transforms` takes nnU-Net's pipeline apart: the CPU part keeps everything except those six
intensity classes (found by class, so the objects keep nnU-Net's exact parameters and probabilities), and, where the
pipeline masks the image, the mask and the ``-1`` label removal that must follow the intensity transforms. The
removed transforms are :class:`DeferredAugmentation`, applied per sample by :func:`apply_deferred_augmentation` after
the insertion. They act on intensities only and draw nothing from the label, so applying them after mirroring
instead of before it gives the same distribution (blur, noise, gamma, contrast and brightness commute with a flip).

Randomness: batchgeneratorsv2 draws from the global numpy and torch generators. In the training process those are
the same on every DDP rank (torch starts from a fixed seed), so the transforms run under a seed drawn from the
trainer's per-rank generator, with the global generators forked (their state is restored afterwards).
Gaussian blur builds its kernel on the CPU; on another device it runs on a CPU copy of the sample (:class:`OnCPU`).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.brightness import MultiplicativeBrightnessTransform
from batchgeneratorsv2.transforms.intensity.contrast import ContrastTransform
from batchgeneratorsv2.transforms.intensity.gamma import GammaTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.noise.gaussian_blur import GaussianBlurTransform
from batchgeneratorsv2.transforms.spatial.low_resolution import SimulateLowResolutionTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.nnunet_masking import MaskImageTransform
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTransform

INTENSITY_CLASSES = (GaussianNoiseTransform, GaussianBlurTransform, MultiplicativeBrightnessTransform,
                     ContrastTransform, SimulateLowResolutionTransform, GammaTransform)
CPU_ONLY_CLASSES = (GaussianBlurTransform,)  # kernels built on the CPU (batchgeneratorsv2 0.3.x)


class OnCPU(BasicTransform):
    """Runs an image transform on a CPU copy of the image and moves the result back to the image's device."""

    def __init__(self, transform: BasicTransform):
        super().__init__()
        self.transform = transform

    def __call__(self, **data_dict) -> dict:
        image = data_dict["image"]
        if image.device.type == "cpu":
            return self.transform(**data_dict)
        data_dict["image"] = self.transform(image=image.cpu())["image"].to(image.device)
        return data_dict

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transform!r})"


def _inner(transform: BasicTransform) -> BasicTransform:
    """The transform inside its ``RandomTransform`` and :class:`OnCPU` wrappers."""
    while isinstance(transform, (RandomTransform, OnCPU)):
        transform = transform.transform
    return transform


def _on_device(transform: BasicTransform) -> BasicTransform:
    """The transform, with its CPU-only inner transform wrapped in :class:`OnCPU` (after the coin flip, so a
    transform that is not applied costs no copy)."""
    if isinstance(transform, RandomTransform) and isinstance(transform.transform, CPU_ONLY_CLASSES):
        return RandomTransform(OnCPU(transform.transform), transform.apply_probability)
    return OnCPU(transform) if isinstance(transform, CPU_ONLY_CLASSES) else transform


@dataclass
class DeferredAugmentation:
    """The part of nnU-Net's training pipeline that runs after the synthesis (see the module docstring).

    Attributes:
        intensity: nnU-Net's intensity transforms (with their ``RandomTransform`` wrappers), in nnU-Net's order.
        mask: nnU-Net's ``MaskImageTransform`` (None where the plans use no mask for normalisation).
        remove_label: the ``RemoveLabelTransform`` that followed the mask (None with no mask: it then stays in the
            CPU pipeline).
    """

    intensity: list[BasicTransform] = field(default_factory=list)
    mask: MaskImageTransform | None = None
    remove_label: RemoveLabelTransform | None = None

    def describe(self) -> str:
        """For the training log: the transforms' class names and probabilities, in order."""
        names = [f"{type(_inner(t)).__name__}(p={t.apply_probability})" if isinstance(t, RandomTransform)
                 else type(t).__name__ for t in self.intensity]
        if self.mask is not None:
            names.append("MaskImageTransform, RemoveLabelTransform(-1 -> 0)")
        return ", ".join(names) if names else "none"


def split_training_transforms(pipeline: BasicTransform) -> tuple[ComposeTransforms, DeferredAugmentation]:
    """Split nnU-Net's training pipeline into its CPU part and the part that must follow the synthesis.

    Args:
        pipeline: what ``nnUNetTrainer.get_training_transforms`` returns (a flat ``ComposeTransforms``).

    Returns:
        (the pipeline without the intensity transforms, and without mask and ``-1`` removal where it masks; the
        deferred transforms). The transform objects are nnU-Net's own.

    Raises:
        TypeError: ``pipeline`` is not a ``ComposeTransforms``.
    """
    if not isinstance(pipeline, ComposeTransforms):
        raise TypeError(f"expected nnU-Net's ComposeTransforms training pipeline, got {type(pipeline).__name__}.")
    kept: list[BasicTransform] = []
    deferred = DeferredAugmentation()
    for transform in pipeline.transforms:
        if isinstance(_inner(transform), INTENSITY_CLASSES):
            deferred.intensity.append(_on_device(transform))
        elif isinstance(transform, MaskImageTransform):
            deferred.mask = transform
        elif (deferred.mask is not None and deferred.remove_label is None
              and isinstance(transform, RemoveLabelTransform) and transform.label_value == -1):
            deferred.remove_label = transform  # the mask reads the -1 it removes
        else:
            kept.append(transform)
    if deferred.mask is not None and deferred.remove_label is None:
        raise ValueError("nnU-Net's training pipeline masks the image but removes no -1 label after the mask; "
                         "SynthTumorTrainer cannot move the mask behind the synthesis.")
    return ComposeTransforms(kept), deferred


@contextmanager
def seeded_global_generators(seed: int, device: torch.device) -> Iterator[None]:
    """numpy's and torch's global generators (CPU and ``device``) seeded with ``seed`` inside the block, and
    restored to their previous state after it."""
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" \
        else []
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        np.random.seed(seed % 2 ** 32)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)


def apply_deferred_augmentation(data: torch.Tensor, targets: list[torch.Tensor], deferred: DeferredAugmentation,
                                num_image_channels: int, generator: torch.Generator
                                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """nnU-Net's deferred transforms, per sample, on the training device.

    Args:
        data: (B, C, *patch) float; the intensity transforms see channels ``0..num_image_channels-1`` (the
            channels nnU-Net's CPU pipeline had at that point; a cascade's one-hot channels come after them).
        targets: deep-supervision targets, highest resolution first, each (B, S, *scale); channel 0 of the first
            carries the ``-1`` outside the mask when :attr:`DeferredAugmentation.mask` is set.
        generator: the trainer's per-rank generator (one draw: the seed of this batch's transforms).

    Returns:
        (data, targets), new tensors; the inputs are not modified.
    """
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator, device=generator.device).item())
    data = data.clone()
    with torch.no_grad(), seeded_global_generators(seed, data.device):
        for b in range(data.shape[0]):
            sample = {"image": data[b, :num_image_channels].clone()}
            for transform in deferred.intensity:
                sample = transform(**sample)
            data[b, :num_image_channels] = sample["image"]
    if deferred.mask is None:
        return data, targets
    for b in range(data.shape[0]):
        deferred.mask(image=data[b], segmentation=targets[0][b])  # in place on data[b] (a view)
    targets = [t.clone() for t in targets]
    for t in targets:
        for b in range(t.shape[0]):
            t[b] = deferred.remove_label(segmentation=t[b])["segmentation"]
    return data, targets
