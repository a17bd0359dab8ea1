"""Network architectures of the plugin, built from nnU-Net plans (``dynamic_network_architectures`` style)."""
from nnunet_mm.architectures.cmg_unet import CMGUNet
from nnunet_mm.architectures.cross_modal_guidance import (CrossModalGuidance, guidance_map,
                                                          masked_average_prototypes)
from nnunet_mm.architectures.multiscale_fusion import MultiScaleFusion

__all__ = ["CMGUNet", "CrossModalGuidance", "MultiScaleFusion", "guidance_map", "masked_average_prototypes"]
