"""Losses the plugin adds to nnU-Net's DC+CE (semi-supervised consistency terms and their schedules)."""
from nnunet_mm.losses.consistency import (anatomical_consistency, channel_nt_xent, cosine_rampdown, sigmoid_rampup)

__all__ = ["anatomical_consistency", "channel_nt_xent", "cosine_rampdown", "sigmoid_rampup"]
