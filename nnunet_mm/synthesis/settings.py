"""The ``"synthesis"`` object of the dataset.json ``'nnunet_mm'`` block: SynthTumorTrainer's settings.

::

    'nnunet_mm': {"synthesis": {
        "synthesizer": "handcrafted",          # "diffusion" (online, latent-diffusion models) or "pool" (synth-pool)
        "probability": 0.5,                    # chance that a sample with liver in its patch gets tumours
                                               # (pool: the share of each batch's samples taken from the pool)
        "class_probabilities": [1, 1, 1, 1],   # tiny, small, medium, large (or the names of "size_classes")
        "size_classes": [{"name": "tiny", "radius_mm": 4, "count": [1, 3], "elastic_std_mm": [0.5, 1]}, ...],
        "dice_weight": 1.0, "ce_weight": 0.5,  # L = Dice + 0.5 CE (the paper)
        "liver_label": null, "tumour_label": null,   # default: the labels named liver / tumour (tumor, lesion)
        "statistics_file": null,               # default: beside the preprocessed data (nnunet_mm synth-stats)
        "model_folder": null,                  # diffusion: default <preprocessed>/nnunet_mm_synthesis/latent_diffusion
        "pool_folder": null,                   # pool: default <preprocessed>/nnunet_mm_synthesis/pool_<configuration>
        "texture_sigma_mm": [3, 15], "edge_sigma_voxels": [0.5, 1.5], "contrast_jitter": 0.2,
        "misalign_synthetic": true             # false: samples with synthetic tumours skip the misalignment
    }}

Every key is optional; unknown keys and bad values are refused with a message naming the key.

``misalign_synthetic``: the multimodal misalignment (on for ``"channel_acquisition": "separate"``) moves the phases of
every training sample against each other. Synthetic tumours are painted with one mask for all phases, i.e. strictly
aligned (paper 002's point); ``false`` keeps a sample that received synthetic tumours aligned (its modality dropout
still applies), ``true`` (the default, the behaviour before the key existed) misaligns it like a real one. Which is
better is an experiment's question; the default is not a claim.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nnunet_mm.settings.block import BLOCK_KEY, register_sub_block
from nnunet_mm.settings.validation import check_object, number
from nnunet_mm.synthesis.masks import DEFAULT_SIZE_CLASSES, TumourMaskSettings, TumourSizeClass

SYNTHESIS_KEY = "synthesis"
SYNTHESIZERS = ("handcrafted", "diffusion", "pool")
LIVER_NAMES = ("liver",)
TUMOUR_NAMES = ("tumour", "tumor", "lesion", "liver_tumour", "liver_tumor")


def _range(value: Any, where: str, low: float = 0.0) -> tuple[float, float]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{where} must be a list [low, high], got {value!r}.")
    pair = (number(value[0], f"{where}[0]", low), number(value[1], f"{where}[1]", low))
    if pair[0] > pair[1]:
        raise ValueError(f"{where} must have low <= high, got {list(value)}.")
    return pair


def _label(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where} must be a positive integer label value or null, got {value!r}.")
    return value


@dataclass(frozen=True)
class SynthesisSettings:
    """Validated ``"synthesis"`` settings (see the module docstring for the keys and defaults)."""

    synthesizer: str = "handcrafted"
    probability: float = 0.5
    masks: TumourMaskSettings = field(default_factory=TumourMaskSettings)
    dice_weight: float = 1.0
    ce_weight: float = 0.5
    liver_label: int | None = None
    tumour_label: int | None = None
    statistics_file: str | None = None
    model_folder: str | None = None
    pool_folder: str | None = None
    texture_sigma_mm: tuple[float, float] = (3.0, 15.0)
    edge_sigma_voxels: tuple[float, float] = (0.5, 1.5)
    contrast_jitter: float = 0.2
    misalign_synthetic: bool = True

    KNOWN_KEYS = ("synthesizer", "probability", "class_probabilities", "size_classes", "dice_weight", "ce_weight",
                  "liver_label", "tumour_label", "statistics_file", "model_folder", "pool_folder", "texture_sigma_mm",
                  "edge_sigma_voxels", "contrast_jitter", "misalign_synthetic")

    @classmethod
    def from_dict(cls, block: Mapping[str, Any] | None,
                  where: str = f"'{BLOCK_KEY}'.{SYNTHESIS_KEY}") -> "SynthesisSettings":
        """Parse the block (None or missing: defaults).

        Raises:
            KeyError: an unknown key (the message lists the known ones).
            ValueError: a bad value, naming the key.
        """
        block = block or {}
        check_object(block, cls.KNOWN_KEYS, where)
        values: dict[str, Any] = {}
        if "synthesizer" in block:
            if block["synthesizer"] not in SYNTHESIZERS:
                raise ValueError(f"{where}.synthesizer must be one of {list(SYNTHESIZERS)}, got "
                                 f"{block['synthesizer']!r}.")
            values["synthesizer"] = block["synthesizer"]
        for key, low, high in (("probability", 0, 1), ("dice_weight", 0, None), ("ce_weight", 0, None),
                               ("contrast_jitter", 0, 0.99)):
            if key in block:
                values[key] = number(block[key], f"{where}.{key}", low, high)
        for key in ("texture_sigma_mm", "edge_sigma_voxels"):
            if key in block:
                values[key] = _range(block[key], f"{where}.{key}", low=1e-3)
        for key in ("liver_label", "tumour_label"):
            if key in block:
                values[key] = _label(block[key], f"{where}.{key}")
        for key in ("statistics_file", "model_folder", "pool_folder"):
            if block.get(key) is not None:
                if not isinstance(block[key], str):
                    raise ValueError(f"{where}.{key} must be a path string or null, got {block[key]!r}.")
                values[key] = block[key]
        if "misalign_synthetic" in block:
            if not isinstance(block["misalign_synthetic"], bool):
                raise ValueError(f"{where}.misalign_synthetic must be true or false, got "
                                 f"{block['misalign_synthetic']!r}.")
            values["misalign_synthetic"] = block["misalign_synthetic"]
        values["masks"] = cls._mask_settings(block, where)
        settings = cls(**values)
        if settings.dice_weight == 0 and settings.ce_weight == 0:
            raise ValueError(f"{where}: dice_weight and ce_weight are both 0; the loss would be zero.")
        return settings

    @staticmethod
    def _mask_settings(block: Mapping[str, Any], where: str) -> TumourMaskSettings:
        classes = DEFAULT_SIZE_CLASSES
        if "size_classes" in block:
            raw = block["size_classes"]
            if not isinstance(raw, list) or not raw:
                raise ValueError(f"{where}.size_classes must be a non-empty list of objects, got {raw!r}.")
            classes = []
            for i, entry in enumerate(raw):
                item = f"{where}.size_classes[{i}]"
                required = {"name", "radius_mm", "count", "elastic_std_mm"}
                if not isinstance(entry, Mapping) or set(entry) != required:
                    raise ValueError(f"{item} must be an object with exactly the keys {sorted(required)}, got "
                                     f"{entry!r}.")
                count = _range(entry["count"], f"{item}.count", low=1)
                if count != tuple(int(c) for c in count):
                    raise ValueError(f"{item}.count must be two integers, got {entry['count']!r}.")
                classes.append(TumourSizeClass(str(entry["name"]), number(entry["radius_mm"], f"{item}.radius_mm",
                                                                           1e-3),
                                               (int(count[0]), int(count[1])),
                                               _range(entry["elastic_std_mm"], f"{item}.elastic_std_mm")))
            classes = tuple(classes)
        probabilities = None
        if "class_probabilities" in block:
            raw = block["class_probabilities"]
            if not isinstance(raw, list) or len(raw) != len(classes):
                raise ValueError(f"{where}.class_probabilities must be a list of {len(classes)} numbers (one per "
                                 f"size class {[c.name for c in classes]}), got {raw!r}.")
            probabilities = tuple(number(p, f"{where}.class_probabilities[{i}]", 0) for i, p in enumerate(raw))
        try:
            return TumourMaskSettings(classes, probabilities)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None

    def resolve_labels(self, labels: Mapping[str, Any], source: str = "dataset.json") -> tuple[int, int]:
        """(liver label, tumour label): the configured values, else the ones dataset.json names liver / tumour.

        Raises:
            ValueError: a label cannot be found or is not in dataset.json's labels, naming ``source``.
        """
        plain = {name.lower(): value for name, value in labels.items() if isinstance(value, int)}

        def find(configured: int | None, names: tuple[str, ...], what: str, key: str) -> int:
            if configured is not None:
                if configured not in plain.values():
                    raise ValueError(f"{source}: '{BLOCK_KEY}'.{SYNTHESIS_KEY}.{key} = {configured} is not a label "
                                     f"value of 'labels' {dict(labels)}.")
                return configured
            for name in names:
                if name in plain:
                    return plain[name]
            raise ValueError(f"{source}: no {what} label among 'labels' {dict(labels)} (looked for {list(names)}); "
                             f"set '{BLOCK_KEY}': {{'{SYNTHESIS_KEY}': {{'{key}': N}}}}.")

        liver = find(self.liver_label, LIVER_NAMES, "liver", "liver_label")
        tumour = find(self.tumour_label, TUMOUR_NAMES, "tumour", "tumour_label")
        if liver == tumour:
            raise ValueError(f"{source}: liver and tumour label are both {liver}.")
        return liver, tumour


register_sub_block(SYNTHESIS_KEY, SynthesisSettings.from_dict, SynthesisSettings, owner=__name__)
