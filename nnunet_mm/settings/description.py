"""What a converter records about a dataset in the ``'nnunet_mm'`` block: channel modalities and provenance.

::

    "modalities": {"0": "CT|MR", "1": "atlas_prior:liver"},   # what each channel is (or a list, one per channel)
    "per_case_modality": {"amos_0001": "CT", ...},            # unpaired datasets: the modality of each case
    "source": "/abs/path/of/the/input",                        # or {"train": "...", "test": "..."}
    "converter": "Dataset504_AMOS",
    "registration": "rigid",                                   # or {...}: how channels were brought onto one grid
    "notes": ["every image reoriented to LPS", ...]

These keys describe the data; the methods read them (CMC pairs by ``per_case_modality``, atlas priors are the
channels whose modality starts with ``atlas_prior:``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DatasetDescription:
    """Validated description keys of the block (all optional)."""

    modalities: Mapping[int, str] = field(default_factory=dict)
    per_case_modality: Mapping[str, str] = field(default_factory=dict)
    source: str | Mapping[str, Any] | None = None
    converter: str | None = None
    registration: str | Mapping[str, Any] | None = None
    notes: tuple[str, ...] = ()

    KEYS = ("modalities", "per_case_modality", "source", "converter", "registration", "notes")

    @classmethod
    def from_block(cls, block: Mapping[str, Any], where: str, *, num_channels: int) -> "DatasetDescription":
        """Parse the description keys of ``block``.

        Raises:
            ValueError: a value of the wrong type, or a ``modalities`` channel outside the dataset's channels,
                naming ``where`` and the key.
        """
        modalities: dict[int, str] = {}
        raw = block.get("modalities") or {}
        if isinstance(raw, list):  # one entry per channel (converter 505 writes this form)
            if len(raw) != num_channels:
                raise ValueError(f"{where}.modalities as a list needs one entry per channel ({num_channels}), got "
                                 f"{raw!r}.")
            raw = dict(enumerate(raw))
        if not isinstance(raw, Mapping):
            raise ValueError(f"{where}.modalities must be an object {{\"<channel>\": \"<modality>\"}} or a list with "
                             f"one modality per channel, got {raw!r}.")
        for channel, modality in raw.items():
            if not str(channel).isdigit() or not 0 <= int(channel) < num_channels or not isinstance(modality, str):
                raise ValueError(f"{where}.modalities: entry {channel!r}: {modality!r} must map a channel index in "
                                 f"[0, {num_channels - 1}] to a string.")
            modalities[int(channel)] = modality
        per_case = block.get("per_case_modality") or {}
        if not isinstance(per_case, Mapping) or not all(isinstance(v, str) for v in per_case.values()):
            raise ValueError(f"{where}.per_case_modality must be an object {{\"<case>\": \"<modality>\"}}, got "
                             f"{per_case!r}.")
        if block.get("converter") is not None and not isinstance(block["converter"], str):
            raise ValueError(f"{where}.converter must be a string, got {block['converter']!r}.")
        for key in ("source", "registration"):  # a path / method name, or an object of details
            if block.get(key) is not None and not isinstance(block[key], (str, Mapping)):
                raise ValueError(f"{where}.{key} must be a string or an object, got {block[key]!r}.")
        notes = block.get("notes") or []
        notes = [notes] if isinstance(notes, str) else notes
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            raise ValueError(f"{where}.notes must be a string or a list of strings, got {notes!r}.")
        return cls(modalities=modalities, per_case_modality={str(k): v for k, v in per_case.items()},
                   source=block.get("source"), converter=block.get("converter"),
                   registration=block.get("registration"),
                   notes=tuple(notes))

    def channels_with_modality_prefix(self, prefix: str) -> list[int]:
        """Sorted channels whose modality starts with ``prefix`` (e.g. ``"atlas_prior:"``)."""
        return sorted(c for c, m in self.modalities.items() if m.startswith(prefix))
