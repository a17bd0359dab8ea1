"""Handcrafted multi-phase tumour synthesizer: texture + smooth edge, per-phase contrast fitted from real tumours.

The SyntheticTumors recipe (methods.md §3.2, the non-learned baseline), moved into nnU-Net's normalised intensity
space and made multi-phase (methods.md §3.4 (ii)). For a tumour mask y shared by all phases and each phase p::

    x'_p = x_p + w · (Δ_p · j + s_p · t)

* Δ_p: the tumour-vs-liver contrast of phase p, from one real tumour's row of
  :class:`~nnunet_mm.synthesis.statistics.TumourContrastStatistics` (so arterial enhancement with portal washout,
  or a hypodense cyst, comes out as in the data), times a jitter j ~ U(1 − a, 1 + a) shared by the phases.
* t: the texture, Gaussian-filtered uniform noise (σ ~ U(texture_sigma_mm)), standardised, the same for every phase
  (one tissue); s_p = sqrt(max(σ_tumour,p² − σ_liver,p², 0)) adds the extra heterogeneity real tumours show over
  liver, on top of the phase's own noise, which x_p keeps.
* w: the smooth edge, the mask blurred with σ ~ U(edge_sigma_voxels) (SyntheticTumors' G_σ(geo)) and cut to the
  2-voxel blending rim of the synthesizer contract, so everything farther away is bit-identical.

It runs batched on the images' device, with randomness from the given generator only.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.simplelayers import gaussian_1d, separable_filtering

from nnunet_mm.synthesis.base import blending_rim, check_synthesizer_inputs
from nnunet_mm.synthesis.statistics import TumourContrastStatistics


def gaussian_blur(volume: torch.Tensor, sigma_voxels: Sequence[float]) -> torch.Tensor:
    """MONAI's separable Gaussian filter of a (B, C, *spatial) tensor, replicate padding, σ per axis in voxels."""
    kernels = [gaussian_1d(torch.tensor(float(s)), truncated=3.0).to(volume.device) for s in sigma_voxels]
    return separable_filtering(volume, kernels, mode="replicate")


class HandcraftedSynthesizer:
    """A :class:`~nnunet_mm.synthesis.base.TumorSynthesizer` (see the module docstring).

    Args:
        statistics: real tumour-vs-liver rows, one column per image channel.
        spacing_mm: voxel size per spatial axis of the images (for the texture scale).
        texture_sigma_mm: (low, high) range of the texture's Gaussian σ (SyntheticTumors: 3–15 at 1 mm).
        edge_sigma_voxels: (low, high) range of the edge blur σ (SyntheticTumors: 1–2).
        contrast_jitter: a, the relative jitter of the drawn contrast.
    """

    def __init__(self, statistics: TumourContrastStatistics, spacing_mm: Sequence[float], *,
                 texture_sigma_mm: tuple[float, float] = (3.0, 15.0),
                 edge_sigma_voxels: tuple[float, float] = (0.5, 1.5), contrast_jitter: float = 0.2):
        if not 0 < texture_sigma_mm[0] <= texture_sigma_mm[1]:
            raise ValueError(f"texture_sigma_mm must be (low, high) with 0 < low <= high, got {texture_sigma_mm}.")
        if not 0 < edge_sigma_voxels[0] <= edge_sigma_voxels[1]:
            raise ValueError(f"edge_sigma_voxels must be (low, high) with 0 < low <= high, got {edge_sigma_voxels}.")
        if not 0 <= contrast_jitter < 1:
            raise ValueError(f"contrast_jitter must be in [0, 1), got {contrast_jitter}.")
        self.statistics = statistics
        self.spacing_mm = tuple(float(s) for s in spacing_mm)
        self.texture_sigma_mm = texture_sigma_mm
        self.edge_sigma_voxels = edge_sigma_voxels
        self.contrast_jitter = contrast_jitter

    def _uniform(self, low: float, high: float, generator: torch.Generator, shape=()) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator, device=generator.device)

    def texture(self, shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
        """(B, 1, *spatial) smooth noise with zero mean and unit std per sample."""
        spatial = shape[2:]
        sigma_mm = float(self._uniform(*self.texture_sigma_mm, generator))
        # the kernel radius (3σ) stays within half the patch, where replicate padding is still meaningful
        sigma_voxels = [min(sigma_mm / s, n / 6) for s, n in zip(self.spacing_mm, spatial)]
        noise = torch.rand((shape[0], 1, *spatial), generator=generator, device=generator.device)
        smooth = gaussian_blur(noise, sigma_voxels)
        flat = smooth.flatten(1)
        return ((flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-8)).view_as(smooth)

    def edge_weight(self, tumour_mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B, 1, *spatial) float in [0, 1]: the blurred mask, zero beyond the blending rim."""
        sigma = float(self._uniform(*self.edge_sigma_voxels, generator))
        blurred = gaussian_blur(tumour_mask.float(), [sigma] * (tumour_mask.ndim - 2))
        return torch.where(blending_rim(tumour_mask), blurred.clamp(0.0, 1.0), torch.zeros_like(blurred))

    def __call__(self, images: torch.Tensor, tumour_mask: torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor:
        check_synthesizer_inputs(images, tumour_mask)
        if images.shape[1] != self.statistics.num_phases:
            raise ValueError(f"images have {images.shape[1]} channels but the tumour statistics describe "
                             f"{self.statistics.num_phases} phases {list(self.statistics.phase_names)}; refit them "
                             f"for this dataset ('nnunet_mm synth-stats').")
        batch, phases = images.shape[:2]
        contrast, tumour_std, liver_std = self.statistics.sample(batch, generator)
        jitter = self._uniform(1 - self.contrast_jitter, 1 + self.contrast_jitter, generator, (batch, 1))
        extra_std = (tumour_std ** 2 - liver_std ** 2).clamp_min(0.0).sqrt()
        view = (batch, phases, *([1] * (images.ndim - 2)))
        texture = self.texture(images.shape, generator)
        weight = self.edge_weight(tumour_mask, generator)
        change = weight * ((contrast * jitter).view(view) + extra_std.view(view) * texture)
        return images + change.to(images.dtype)
