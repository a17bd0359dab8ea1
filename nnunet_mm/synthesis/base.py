"""The synthesizer contract shared by every tumour synthesizer (handcrafted, latent diffusion) and the trainer.

A synthesizer paints tumours into multi-phase images inside a given mask. The mask is the same for every phase, so
the synthetic tumour is aligned across phases by construction (Diff4MMLiTS, paper 002, §3.2 "MCS"); each phase gets
its own appearance. Synthesizers run on whatever device the images are on (the training GPU inside ``train_step``,
or the CPU) and draw all randomness from the generator they are given, so DDP ranks stay independent.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

#: Voxels around the mask that a synthesizer may change to blend the tumour edge into the surrounding tissue.
MAX_BLENDING_RIM_VOXELS = 2


@runtime_checkable
class TumorSynthesizer(Protocol):
    """``synthesizer(images, tumour_mask, generator) -> images_out``.

    Args:
        images: (B, C, *spatial) float tensor in nnU-Net's normalised intensity space, one channel per phase in
            dataset.json channel order.
        tumour_mask: (B, 1, *spatial) bool, the voxels that become tumour; the same mask for every phase.
        generator: a ``torch.Generator`` on the images' device; the only source of randomness.

    Returns:
        A tensor like ``images`` (shape, dtype, device) with synthetic tumour inside the mask and values identical
        to ``images`` outside a blending rim of at most :data:`MAX_BLENDING_RIM_VOXELS` voxels around the mask.
        Samples whose mask is empty come back unchanged.
    """

    def __call__(self, images: torch.Tensor, tumour_mask: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor: ...


def check_synthesizer_inputs(images: torch.Tensor, tumour_mask: torch.Tensor) -> None:
    """Raise ``ValueError`` naming the problem when ``images``/``tumour_mask`` break the contract above."""
    if images.ndim not in (4, 5) or not images.is_floating_point():
        raise ValueError(f"images must be a float tensor (B, C, X, Y[, Z]), got {images.dtype} with shape "
                         f"{tuple(images.shape)}.")
    expected = (images.shape[0], 1, *images.shape[2:])
    if tuple(tumour_mask.shape) != expected or tumour_mask.dtype != torch.bool:
        raise ValueError(f"tumour_mask must be a bool tensor of shape {expected} (one mask for all phases), got "
                         f"{tumour_mask.dtype} with shape {tuple(tumour_mask.shape)}.")
    if tumour_mask.device != images.device:
        raise ValueError(f"tumour_mask is on {tumour_mask.device} but images are on {images.device}.")


def blending_rim(tumour_mask: torch.Tensor, width_voxels: int = MAX_BLENDING_RIM_VOXELS) -> torch.Tensor:
    """The mask dilated by ``width_voxels`` (a (2w+1)-cube, i.e. chessboard distance): where a synthesizer may write.

    Args:
        tumour_mask: (B, 1, *spatial) bool.

    Returns:
        (B, 1, *spatial) bool, a superset of ``tumour_mask``.
    """
    pool = torch.nn.functional.max_pool3d if tumour_mask.ndim == 5 else torch.nn.functional.max_pool2d
    size = 2 * width_voxels + 1
    return pool(tumour_mask.float(), size, stride=1, padding=width_voxels) > 0
