"""Prediction helpers beyond nnU-Net's stock predictor (cases with missing channels)."""
from nnunet_mm.inference.missing_channels import (
    plan_available_channels,
    predict_with_missing_channels,
)

__all__ = ["plan_available_channels", "predict_with_missing_channels"]
