"""Checks shared by the parsers of the dataset.json ``'nnunet_mm'`` block; every message names where the value is."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


def check_keys(given: Mapping[str, Any], allowed: Iterable[str], where: str) -> None:
    """Refuse keys of ``given`` that are not ``allowed``.

    Raises:
        KeyError: naming ``where``, the unknown keys and the known ones.
    """
    allowed = list(allowed)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise KeyError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(allowed)}.")


def check_object(value: Any, allowed: Iterable[str], where: str) -> Mapping[str, Any]:
    """``value`` if it is a JSON object whose keys are all ``allowed``.

    Raises:
        ValueError: ``value`` is not an object, naming ``where``.
        KeyError: an unknown key (see :func:`check_keys`).
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be an object, got {type(value).__name__}.")
    check_keys(value, allowed, where)
    return value


def number(value: Any, where: str, low: float | None = None, high: float | None = None, *,
           low_open: bool = False) -> float:
    """``value`` as a float if it is a JSON number (not a bool) within ``[low, high]`` (``(low, high]`` if
    ``low_open``; None: unbounded).

    Raises:
        ValueError: naming ``where``, the interval and the value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} must be a number, got {value!r}.")
    below = low is not None and (value < low or (low_open and value == low))
    if below or (high is not None and value > high):
        interval = (f"{'(' if low_open or low is None else '['}{'-inf' if low is None else low}, "
                    f"{'inf)' if high is None else f'{high}]'}")
        raise ValueError(f"{where} must be in {interval}, got {value}.")
    return float(value)


def relative_folder_name(value: Any, where: str) -> str:
    """``value`` if it is a non-empty relative folder name that stays inside the dataset folder.

    Raises:
        ValueError: naming ``where`` and the value.
    """
    from pathlib import PurePath

    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where} must be a folder name relative to the dataset folder, got {value!r}.")
    path = PurePath(value)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{where} must stay inside the dataset folder (relative, no '..'), got {value!r}.")
    return value
