"""The atlas-prior key of the ``'nnunet_mm'`` block: ``"prior_dropout"`` (MASPriorTrainer).

::

    'nnunet_mm': {"prior_dropout": {"probability": 0.3}}

The share of training samples whose prior channels are zeroed, so the network does not copy the prior blindly.
Which channels are priors is part of the dataset description (``"modalities"``, :mod:`.prior_channels`).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nnunet_mm.settings.block import register_sub_block
from nnunet_mm.settings.validation import check_keys, number

PRIOR_DROPOUT_KEY = "prior_dropout"
DEFAULT_PRIOR_DROPOUT = 0.3


def parse_prior_dropout(value: Any, where: str) -> float:
    """The dropout probability p in [0, 1] of ``{"probability": p}``.

    Raises:
        ValueError: not an object, or p outside [0, 1], naming ``where``.
        KeyError: a key other than ``probability``.
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be an object {{\"probability\": p}}, got {value!r}.")
    check_keys(value, ["probability"], where)
    return number(value.get("probability", DEFAULT_PRIOR_DROPOUT), f"{where}.probability", 0, 1)


register_sub_block(PRIOR_DROPOUT_KEY, parse_prior_dropout, lambda: DEFAULT_PRIOR_DROPOUT, owner=__name__)
