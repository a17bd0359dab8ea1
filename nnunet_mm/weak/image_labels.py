"""Image-level labels (``"diseased"`` / ``"normal"``) from the ``'nnunet_mm'`` block of dataset.json.

The block's ``"image_labels"`` is either an inline object ``{case: "diseased" | "normal"}`` or the name of a JSON
file holding that object, relative to the raw dataset folder (converter 508 writes ``image_labels.json``)::

    'nnunet_mm': {"image_labels": {"ISIC_0000000": "diseased", "ISIC_0000000_normal1": "normal"}}
    'nnunet_mm': {"image_labels": "image_labels.json"}
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nnunet_mm.settings.block import BLOCK_KEY

DISEASED, NORMAL = "diseased", "normal"
IMAGE_LABEL_VALUES = (DISEASED, NORMAL)
IMAGE_LABELS_KEY = "image_labels"


def validate_image_labels(image_labels: Any, source: str) -> dict[str, str]:
    """``image_labels`` checked to be ``{case: "diseased" | "normal"}``.

    Raises:
        ValueError: not an object, or a value other than the two labels (the message names ``source`` and the
            offending cases).
    """
    if not isinstance(image_labels, Mapping):
        raise ValueError(f"{source}: '{IMAGE_LABELS_KEY}' must be an object {{case: 'diseased' | 'normal'}}, got "
                         f"{type(image_labels).__name__}.")
    wrong = {str(case): value for case, value in image_labels.items() if value not in IMAGE_LABEL_VALUES}
    if wrong:
        shown = dict(list(wrong.items())[:5])
        raise ValueError(f"{source}: image labels must be one of {list(IMAGE_LABEL_VALUES)}; got {shown}"
                         f"{' ...' if len(wrong) > 5 else ''} ({len(wrong)} case(s)).")
    return {str(case): str(value) for case, value in image_labels.items()}


def parse_image_labels_value(value: Any, where: str) -> str | dict[str, str]:
    """The block's ``"image_labels"``: a file name (checked when read) or inline labels (checked now)."""
    if isinstance(value, str):
        if not value.strip():
            raise ValueError(f"{where} must be a file name or an object {{case: 'diseased' | 'normal'}}, got ''.")
        return value
    return validate_image_labels(value, where)


def read_image_labels(image_labels: str | Mapping[str, str] | None, dataset_folder: Path | None,
                      source: str = "dataset.json") -> dict[str, str] | None:
    """The image-level labels a dataset declares, or None when its block has no ``"image_labels"``.

    Args:
        image_labels: the typed ``"image_labels"`` value (``read_settings(...).method("image_labels")``).
        dataset_folder: the raw dataset folder, against which a file name is resolved (None: only inline labels
            can be read).
        source: the dataset.json the value came from, for messages.

    Raises:
        FileNotFoundError: the named file does not exist (or no folder was given to resolve it).
        ValueError: malformed JSON or labels, naming the file.
    """
    if image_labels is None:
        return None
    if isinstance(image_labels, str):
        if dataset_folder is None:
            raise FileNotFoundError(f"{source} names the image-label file '{image_labels}', but the raw dataset "
                                    f"folder is unknown; set nnUNet_raw or put the labels inline.")
        file = Path(dataset_folder) / image_labels
        if not file.is_file():
            raise FileNotFoundError(f"{file}: image-label file named in {source} ('{BLOCK_KEY}'.'{IMAGE_LABELS_KEY}') "
                                    f"does not exist.")
        try:
            value = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{file}: not valid JSON ({error.msg}, line {error.lineno}).") from None
        return validate_image_labels(value, str(file))
    return dict(image_labels)


def normal_cases(image_labels: Mapping[str, str] | None) -> frozenset[str]:
    """The case ids labelled ``"normal"`` (empty without labels)."""
    return frozenset(case for case, value in (image_labels or {}).items() if value == NORMAL)
