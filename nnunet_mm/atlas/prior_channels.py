"""Which input channels of a dataset are atlas priors, and how they are named.

A dataset written by ``nnunet_mm mas`` holds the target's own image channels first and then one prior channel per
foreground class (the fused atlas probability of that class, values in [0, 1]). Prior channels are named
``"noNorm"`` in ``channel_names``: nnU-Net's normalisation mapping
(``nnunetv2/preprocessing/normalization/map_channel_name_to_normalization.py``, key ``'nonorm'``, matched
case-insensitively) then picks ``NoNormalization``, so the probabilities reach the network unchanged. The
block's ``modalities`` marks them (``{"1": "atlas_prior:liver", ...}``), which is how
:class:`nnunet_mm.atlas.trainer.MASPriorTrainer` finds them.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nnunet_mm.settings import DatasetSettings

PRIOR_CHANNEL_NAME = "noNorm"
PRIOR_MODALITY_PREFIX = "atlas_prior:"


def prior_modality(class_name: str) -> str:
    """The ``"modalities"`` entry of the prior channel of one class, e.g. ``"atlas_prior:liver"``."""
    return f"{PRIOR_MODALITY_PREFIX}{class_name}"


def prior_channel_indices(settings: DatasetSettings, channel_names: Mapping[str, Any]) -> list[int]:
    """The prior channels of a dataset: those whose ``modalities`` entry starts with ``atlas_prior:``.

    Args:
        settings: the dataset's settings (:func:`nnunet_mm.settings.read_settings`); ``settings.source`` names the
            file in messages.
        channel_names: dataset.json's ``channel_names``.

    Returns:
        Sorted channel indices (empty if the dataset has no priors).

    Raises:
        ValueError: a prior channel not named ``noNorm`` (nnU-Net would normalise it), or prior channels that are
            not the last channels (image channels must come first), naming ``settings.source``.
    """
    priors = settings.description.channels_with_modality_prefix(PRIOR_MODALITY_PREFIX)
    for channel in priors:
        name = channel_names.get(str(channel), channel_names.get(channel))
        if name is None or str(name).casefold() != PRIOR_CHANNEL_NAME.casefold():
            raise ValueError(f"{settings.source}: channel {channel} is an atlas prior but is named {name!r} in "
                             f"channel_names; name it {PRIOR_CHANNEL_NAME!r} so nnU-Net leaves the probabilities "
                             f"unnormalised.")
    num_channels = len(channel_names)
    if priors and priors != list(range(num_channels - len(priors), num_channels)):
        raise ValueError(f"{settings.source}: prior channels {priors} must be the last of the {num_channels} channels "
                         f"(image channels first), as 'nnunet_mm mas' writes them.")
    return priors
