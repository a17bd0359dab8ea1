"""The one reader of the ``"nnunet_mm"`` block of dataset.json.

nnU-Net keeps unknown top-level keys of dataset.json: the planner copies the file to the preprocessed folder, the
trainer holds that copy as ``self.dataset_json`` and saves it next to the checkpoints, and the predictor reads the
model folder's copy. So everything a trainer or a command must know about the data travels in one block::

    "nnunet_mm": {
        "reference_channel": 0, "phase_names": ["pv", "art"], "channel_acquisition": "separate",
        "misalignment": {...}, "modality_dropout": {...}, "seed": null,  # core: nnunet_mm.settings.multimodal
        "modalities": {...}, "per_case_modality": {...}, "source": "...", "converter": "...",
        "registration": {...}, "notes": [...],                      # core: nnunet_mm.settings.description
        "phase_labels_dir": "...",                                  # CMG
        "unlabeled_dir": "...",                                     # CMC
        "synthesis": {...},                                         # synthetic tumours
        "image_labels": {...}, "weak_supervision": {...},           # weak supervision
        "prior_dropout": {...}                                      # atlas priors
    }

The core keys are parsed here; every other key is a **sub-block** that its method package registers with
:func:`register_sub_block` (key, parser, default) in its ``settings`` module, announced to the core through the
``nnunet_mm.settings`` entry-point group of the installed distribution. :func:`read_settings` validates every key of
the block, refuses unknown ones with the list of known ones (so a typo never falls back to a default silently), and
returns one typed :class:`DatasetSettings`. No other code reads the raw dict.

Every message names the file that was read (``source``): for a trainer that is the *preprocessed* copy
(:func:`preprocessed_dataset_json_source`), which is not the raw file a user edits.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import import_module, metadata
from pathlib import Path
from typing import Any

from nnunet_mm.settings.description import DatasetDescription
from nnunet_mm.settings.multimodal import MultiModalSettings

BLOCK_KEY = "nnunet_mm"
ENTRY_POINT_GROUP = "nnunet_mm.settings"


@dataclass(frozen=True)
class SubBlock:
    """One key of the block that a method package owns.

    Attributes:
        key: the key inside ``"nnunet_mm"``.
        parse: ``parse(value, where)`` → typed settings; raises ``ValueError`` / ``KeyError`` /
            ``FileNotFoundError`` with ``where`` (``"<file>: 'nnunet_mm'.<key>"``) in the message.
        default: ``default()`` → the settings when the key is absent.
        owner: the module that registered it (for messages).
    """

    key: str
    parse: Callable[[Any, str], Any]
    default: Callable[[], Any]
    owner: str


_CORE_KEYS = MultiModalSettings.KEYS + DatasetDescription.KEYS
_registry: dict[str, SubBlock] = {}
_entry_points_loaded = False
_lock = threading.Lock()


def register_sub_block(key: str, parse: Callable[[Any, str], Any], default: Callable[[], Any], *,
                       owner: str) -> None:
    """Register a method's sub-block; called at import of the method's ``settings`` module.

    Raises:
        ValueError: ``key`` is a core key, or another module already registered it.
    """
    if key in _CORE_KEYS:
        raise ValueError(f"'{BLOCK_KEY}'.{key} is a core key of nnunet_mm.settings; {owner} cannot register it.")
    existing = _registry.get(key)
    if existing is not None and existing.owner != owner:
        raise ValueError(f"'{BLOCK_KEY}'.{key} is registered twice: by {existing.owner} and by {owner}.")
    _registry[key] = SubBlock(key, parse, default, owner)


def registered_sub_blocks() -> Mapping[str, SubBlock]:
    """Every registered sub-block; the first call imports the modules named by the ``nnunet_mm.settings`` entry
    points (one per method package)."""
    global _entry_points_loaded
    if not _entry_points_loaded:
        with _lock:
            if not _entry_points_loaded:
                for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
                    import_module(entry_point.value.split(":")[0])
                _entry_points_loaded = True
    return dict(_registry)


@dataclass(frozen=True)
class DatasetSettings:
    """Everything the plugin reads from the ``"nnunet_mm"`` block of one dataset.json, typed and validated.

    Attributes:
        source: the file that was read (every message names it).
        multimodal: channels, reference channel, phase names, channel acquisition, misalignment, modality
            dropout, seed.
        description: what converters record: channel modalities, per-case modality, provenance, notes.
        sub_blocks: typed settings of every registered sub-block (defaults where the key is absent).
        given: the sub-block keys the block actually sets.
    """

    source: str
    multimodal: MultiModalSettings
    description: DatasetDescription
    sub_blocks: Mapping[str, Any] = field(default_factory=dict)
    given: frozenset[str] = frozenset()

    def method(self, key: str) -> Any:
        """The typed settings of sub-block ``key`` (its default when the block does not set it).

        Raises:
            KeyError: no method package registered ``key``.
        """
        if key not in self.sub_blocks:
            raise KeyError(f"'{BLOCK_KEY}'.{key} is not a registered sub-block; registered: "
                           f"{sorted(self.sub_blocks)}.")
        return self.sub_blocks[key]

    def is_set(self, key: str) -> bool:
        """Whether the block gives ``key`` explicitly."""
        return key in self.given


def read_settings(dataset_json: Mapping[str, Any], source: str = "dataset.json") -> DatasetSettings:
    """Parse and validate the whole block of ``dataset_json``; a dataset.json without it gets the defaults.

    A sub-block key whose value is null counts as absent: it gets its default and :meth:`DatasetSettings.is_set`
    is False.

    Args:
        dataset_json: the parsed dataset.json.
        source: the file it was read from, for messages.

    Raises:
        KeyError: an unknown key in the block (the message lists the known ones).
        ValueError: a value of the wrong type or out of range, naming ``source`` and the key.
        FileNotFoundError: a sub-block names a file that does not exist.
    """
    block = block_of(dataset_json, source)
    where = f"{source}: '{BLOCK_KEY}'"
    sub_blocks = registered_sub_blocks()
    known = set(_CORE_KEYS) | set(sub_blocks)
    unknown = sorted(set(block) - known)
    if unknown:
        raise KeyError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(known)}. (Method packages "
                       f"register their keys through the '{ENTRY_POINT_GROUP}' entry points; reinstall nnunet_mm "
                       f"if one of its own keys is missing.)")
    multimodal = MultiModalSettings.from_block(dataset_json, block, where)
    description = DatasetDescription.from_block(block, where, num_channels=multimodal.num_channels)
    given = frozenset(key for key in sub_blocks if block.get(key) is not None)  # null: as if absent
    parsed = {key: (sub.parse(block[key], f"{where}.{key}") if key in given else sub.default())
              for key, sub in sub_blocks.items()}
    return DatasetSettings(source=source, multimodal=multimodal, description=description, sub_blocks=parsed,
                           given=given)


def block_of(dataset_json: Mapping[str, Any], source: str = "dataset.json") -> Mapping[str, Any]:
    """The raw block (empty when absent), for code that *writes* a new dataset.json from an old one.

    Raises:
        ValueError: the block is not a JSON object.
    """
    block = dataset_json.get(BLOCK_KEY)
    if block is None:
        return {}
    if not isinstance(block, Mapping):
        raise ValueError(f"{source}: '{BLOCK_KEY}' must be an object, got {type(block).__name__}.")
    return block


def preprocessed_dataset_json_source(preprocessed_dataset_folder: str | Path | None) -> str:
    """How to name the dataset.json a trainer reads in messages: nnU-Net's preprocessed copy, not the raw file, and
    which of the two to edit -- when the copy's ``"nnunet_mm"`` block differs from the raw dataset.json's (someone
    edited one after planning), the message says so, since editing the raw file alone then changes nothing."""
    if not preprocessed_dataset_folder:
        return "dataset.json (nnU-Net's preprocessed copy)"
    import json

    copy = Path(preprocessed_dataset_folder) / "dataset.json"
    raw = _raw_dataset_json(Path(preprocessed_dataset_folder).name)
    try:
        same = raw is not None and (json.loads(copy.read_text(encoding="utf-8")).get(BLOCK_KEY)
                                    == json.loads(raw.read_text(encoding="utf-8")).get(BLOCK_KEY))
    except (OSError, ValueError, AttributeError):
        same = False
    if raw is None:
        return f"{copy} (nnU-Net's copy of the raw dataset.json, made at planning; the raw file was not found, edit " \
               f"this copy)"
    if same:
        return (f"{copy} (nnU-Net's copy of {raw}, made at planning; fix the raw file and re-run "
                f"nnUNetv2_plan_and_preprocess, or edit this copy)")
    return (f"{copy} (nnU-Net's copy made at planning; its '{BLOCK_KEY}' block DIFFERS from the one in {raw}, and the "
            f"trainer reads this copy: edit this copy, or fix the raw file and re-run nnUNetv2_plan_and_preprocess)")


def _raw_dataset_json(dataset_name: str) -> Path | None:
    """``$nnUNet_raw/<dataset_name>/dataset.json`` if it exists."""
    import os

    raw_root = os.environ.get("nnUNet_raw")
    if not raw_root:
        return None
    raw = Path(raw_root) / dataset_name / "dataset.json"
    return raw if raw.is_file() else None


def model_folder_dataset_json_source(model_folder: str | Path) -> str:
    """How to name the dataset.json of a trained model folder in messages: the copy nnU-Net saved at training."""
    return (f"{model_folder}/dataset.json (the copy nnU-Net saved with the model at training; the raw and "
            f"preprocessed dataset.json are not read)")
