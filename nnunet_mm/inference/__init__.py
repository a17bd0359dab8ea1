"""Prediction helpers beyond nnU-Net's stock predictor (cases with missing channels)."""
from nnunet_mm.inference.missing_channels import (
    DerivedChannels,
    model_dataset_json,
    plan_available_channels,
    predict_with_missing_channels,
)

__all__ = ["DerivedChannels", "model_dataset_json", "plan_available_channels", "predict_with_missing_channels"]
