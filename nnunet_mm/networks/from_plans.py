"""Building the plugin's multi-stream networks from an nnU-Net configuration's U-Net description."""
from __future__ import annotations

import math
import pydoc
from collections.abc import Sequence
from typing import Any

UNET_KWARGS = ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_conv_per_stage",
               "n_conv_per_stage_decoder", "conv_bias", "norm_op", "norm_op_kwargs", "dropout_op",
               "dropout_op_kwargs", "nonlin", "nonlin_kwargs")


def stream_width_factor(num_streams: int) -> float:
    """Features per stage relative to the plans' single-stream U-Net so that ``num_streams`` encoder/decoder streams
    fit roughly where one U-Net did: 0.6 for two streams (methods §1.6), shrinking with the square root of the
    number of streams."""
    return 0.6 * math.sqrt(2.0 / max(num_streams, 2))


def slim_features(features: Sequence[int], factor: float) -> list[int]:
    """``features × factor``, rounded to multiples of 4, at least 8."""
    return [max(8, int(round(f * factor / 4)) * 4) for f in features]


def network_kwargs_from_plans(configuration_manager: Any, network_class_name: str, num_streams: int) -> dict:
    """Keyword arguments for a multi-stream network (CMGUNet, CMCUNet) from a configuration.

    If the configuration already names ``network_class_name`` (plans from the plugin's planners, or a hand-made
    configuration), its arguments are used as they are (operators imported). Only the class name is compared, not
    its module, so plans written before the network moved package (``nnunet_mm.architectures.cmg_unet.CMGUNet``)
    still load. Otherwise the configuration's U-Net
    (plain or residual-encoder) is translated: same stages, kernels and strides, features ×
    :func:`stream_width_factor` (see :func:`slim_features`).
    """
    kwargs = dict(configuration_manager.network_arch_init_kwargs)
    for key in configuration_manager.network_arch_init_kwargs_req_import:
        if kwargs.get(key) is not None:
            kwargs[key] = pydoc.locate(kwargs[key])
    if configuration_manager.network_arch_class_name.rsplit(".", 1)[-1] == network_class_name.rsplit(".", 1)[-1]:
        return kwargs
    if "n_conv_per_stage" not in kwargs and "n_blocks_per_stage" in kwargs:  # residual-encoder plans
        kwargs["n_conv_per_stage"] = [2 * n for n in kwargs["n_blocks_per_stage"]]
    kwargs["features_per_stage"] = slim_features(kwargs["features_per_stage"], stream_width_factor(num_streams))
    return {k: v for k, v in kwargs.items() if k in UNET_KWARGS}
