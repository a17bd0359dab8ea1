"""Synthetic tumours for training (Diff4MMLiTS, paper 002): masks, synthesizers, real-tumour statistics.

The networks of the pipeline (inpainter, latent diffusion) live in their own modules of this package and are
imported from there, so importing this package pulls in no network code.
"""
from nnunet_mm.synthesis.base import MAX_BLENDING_RIM_VOXELS, TumorSynthesizer, blending_rim, check_synthesizer_inputs
from nnunet_mm.synthesis.handcrafted import HandcraftedSynthesizer, gaussian_blur
from nnunet_mm.synthesis.liver_postprocessing import keep_tumours_in_liver
from nnunet_mm.synthesis.masks import (DEFAULT_SIZE_CLASSES, TumourMaskSettings, TumourSizeClass, removal_mask,
                                       sample_tumour_masks)
from nnunet_mm.synthesis.settings import SynthesisSettings
from nnunet_mm.synthesis.statistics import (TumourContrastStatistics, fit_tumour_statistics, lesion_statistics,
                                            preprocessed_cases, statistics_path)

__all__ = [
    "DEFAULT_SIZE_CLASSES", "HandcraftedSynthesizer", "MAX_BLENDING_RIM_VOXELS", "SynthesisSettings",
    "TumorSynthesizer", "TumourContrastStatistics", "TumourMaskSettings", "TumourSizeClass", "blending_rim",
    "check_synthesizer_inputs", "fit_tumour_statistics", "gaussian_blur", "keep_tumours_in_liver",
    "lesion_statistics", "preprocessed_cases", "removal_mask", "sample_tumour_masks", "statistics_path",
]
