"""Writing dataset.json through nnU-Net's own ``generate_dataset_json``, plus the plugin's ``'nnunet_mm'`` block."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nnunet_mm
from nnunet_mm.settings import BLOCK_KEY, read_settings

logger = logging.getLogger(__name__)


def _channel_dict(channel_names: Mapping[int | str, str] | Sequence[str]) -> dict[str, str]:
    if isinstance(channel_names, Mapping):
        channels = {str(k): str(v) for k, v in channel_names.items()}
    else:
        channels = {str(i): str(v) for i, v in enumerate(channel_names)}
    if not channels:
        raise ValueError("channel_names is empty; give one name per input channel.")
    expected = [str(i) for i in range(len(channels))]
    if set(channels) != set(expected):
        raise ValueError(f"channel_names keys must be 0..{len(channels) - 1}, got {list(channels)}.")
    return {k: channels[k] for k in expected}


def _check_labels(labels: Mapping[str, Any]) -> dict[str, Any]:
    labels = dict(labels)
    plain = sorted(int(v) for v in labels.values() if not isinstance(v, (list, tuple)))
    if 0 not in plain:
        raise ValueError(f"labels {labels} have no background (value 0); add 'background': 0.")
    if plain != list(range(len(plain))):
        raise ValueError(f"label values must be consecutive integers 0, 1, 2, ..., got {plain} in {labels}.")
    return labels


def write_dataset_json(out_dir: Path, *, channel_names: Mapping[int | str, str] | Sequence[str],
                       labels: Mapping[str, int | tuple[int, ...]], num_training: int, file_ending: str,
                       dataset_name: str, nnunet_mm_block: dict[str, Any] | None = None, **extra: Any) -> Path:
    """Write ``out_dir/dataset.json`` with nnU-Net's ``generate_dataset_json``.

    Args:
        out_dir: the raw dataset folder.
        channel_names: one name per channel, as a list or a ``{index: name}`` mapping. The name selects nnU-Net's
            normalisation (``"CT"`` → CT normalisation, unknown names → z-score); the choice is logged.
        labels: ``{name: value}`` with ``"background": 0`` and consecutive values (tuples for regions, which then
            need ``regions_class_order`` in ``extra``).
        num_training: number of labelled training cases.
        file_ending: e.g. ``".nii.gz"``.
        dataset_name: stored as ``"name"``.
        nnunet_mm_block: the plugin's settings, stored under :data:`nnunet_mm.settings.BLOCK_KEY` (validated with
            :func:`nnunet_mm.settings.read_settings` first, so a typo fails here and not at training time).
        **extra: more ``generate_dataset_json`` arguments or extra top-level keys (``description``, ``reference``,
            ``license``, ``converted_by``, ...).

    Returns:
        The path of the written dataset.json.
    """
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
    from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import get_normalization_scheme

    out_dir = Path(out_dir)
    channels = _channel_dict(channel_names)
    checked_labels = _check_labels(labels)
    if num_training < 1:
        raise ValueError(f"num_training must be >= 1, got {num_training}; nnU-Net needs labelled cases.")
    if nnunet_mm_block is not None:
        read_settings({"channel_names": channels, BLOCK_KEY: nnunet_mm_block}, str(out_dir / "dataset.json"))
        extra[BLOCK_KEY] = dict(nnunet_mm_block)
    for index, name in channels.items():
        logger.info("channel %s %r: nnU-Net will use %s", index, name, get_normalization_scheme(name).__name__)
    extra.setdefault("converted_by", nnunet_mm.__name__)
    extra.setdefault("license", "see the licence of the source data")
    generate_dataset_json(str(out_dir), channel_names=channels, labels=checked_labels,
                          num_training_cases=int(num_training), file_ending=file_ending, dataset_name=dataset_name,
                          **extra)
    return out_dir / "dataset.json"
