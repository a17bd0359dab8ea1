"""The core keys of the ``'nnunet_mm'`` block: channels, reference channel and the multimodal augmentation.

::

    "reference_channel": 0,
    "phase_names": ["pv", "art", "del", "nc"],
    "channel_acquisition": "separate",          # or "co_registered", "colour_planes"; absent: not declared
    "misalignment": {"probability": 0.5, "max_translation_mm": [8, 3, 3], "max_rotation_deg": 2,
                     "elastic_std_mm": 3, "elastic_control_points": 4},
    "modality_dropout": {"probability": 0.1, "mode": "duplicate"},
    "seed": null

``channel_acquisition`` says how the channels relate, and with it whether the trainer's misalignment and modality
dropout make sense (:meth:`MultiModalSettings.augmentation_decision`):

==================  ==========================================================  =============  ================
value               the channels are                                            misalignment   modality dropout
==================  ==========================================================  =============  ================
``separate``        acquired separately (CT phases, MR sequences of different   on             on
                    breath-holds), so misregistered
``co_registered``   already aligned (BraTS sequences)                           off            off
``colour_planes``   planes of one image (RGB)                                   off (refused)  off
absent              not declared                                                off            off
==================  ==========================================================  =============  ================

An explicit ``"misalignment"`` or ``"modality_dropout"`` object wins over this table: that augmentation then follows
its own settings (``"modality_dropout": {"probability": 0.1}`` on BraTS trains for missing sequences), except that an
enabled ``"misalignment"`` on ``colour_planes`` is refused. Single-channel datasets get neither.

Read through :func:`nnunet_mm.settings.read_settings` (``.multimodal``), which validates the whole block.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from nnunet_mm.settings.validation import check_object, number

DROPOUT_MODES = ("duplicate", "zeros")
# how the channels of a dataset were acquired → whether misalignment and modality dropout are on by default
CHANNEL_ACQUISITIONS = ("separate", "co_registered", "colour_planes")
_ACQUISITION_REASONS = {
    "separate": "channel_acquisition 'separate'",
    "co_registered": "channel_acquisition 'co_registered': the channels are already aligned",
    "colour_planes": "channel_acquisition 'colour_planes': the channels are planes of one image",
    None: ("channel_acquisition not declared in dataset.json; set \"channel_acquisition\": \"separate\" in the "
           "'nnunet_mm' block if the channels are separately acquired"),
}


# upper limits of the misalignment augmentation: far beyond any real registration error, but finite, so that a typo
# (1e308 mm, 100000 control points) is refused when dataset.json is read, not at the first training step
MAX_TRANSLATION_MM = 200
MAX_ROTATION_DEG = 180
MAX_ELASTIC_STD_MM = 100
MAX_ELASTIC_CONTROL_POINTS = 32


@dataclass(frozen=True)
class MisalignmentSettings:
    """Random per-channel registration error applied to every non-reference channel during training.

    Attributes:
        probability: chance that a given non-reference channel of a given sample is moved at all.
        max_translation_mm: largest rigid offset per spatial axis of the preprocessed arrays (nnU-Net's transposed
            axis order; for axial CT that is z, y, x). Offsets are drawn uniformly in ``[-max, max]``. A 2D
            configuration uses the last two values.
        max_rotation_deg: largest rotation angle (uniform in ``[-max, max]``) about each rotation axis.
        elastic_std_mm: standard deviation of the smooth displacement at the control points.
        elastic_control_points: control points per axis of the coarse displacement grid (>= 2).
    """

    probability: float = 0.5
    max_translation_mm: tuple[float, ...] = (8.0, 3.0, 3.0)
    max_rotation_deg: float = 2.0
    elastic_std_mm: float = 3.0
    elastic_control_points: int = 4

    @property
    def enabled(self) -> bool:
        """True if this setting can move anything."""
        moves = any(t > 0 for t in self.max_translation_mm) or self.max_rotation_deg > 0 or self.elastic_std_mm > 0
        return self.probability > 0 and moves

    @classmethod
    def from_dict(cls, block: Mapping[str, Any], where: str = "misalignment") -> "MisalignmentSettings":
        """Validated settings from a JSON object; missing keys keep their defaults."""
        check_object(block, [f.name for f in dataclasses.fields(cls)], where)
        values: dict[str, Any] = {}
        if "probability" in block:
            values["probability"] = number(block["probability"], f"{where}.probability", 0, 1)
        if "max_translation_mm" in block:
            raw = block["max_translation_mm"]
            if isinstance(raw, (int, float)):
                raw = [raw] * 3
            if not isinstance(raw, (list, tuple)) or len(raw) not in (2, 3):
                raise ValueError(f"{where}.max_translation_mm must be a number or a list of 2 or 3 numbers, "
                                 f"got {raw!r}.")
            values["max_translation_mm"] = tuple(
                number(v, f"{where}.max_translation_mm[{i}]", 0, MAX_TRANSLATION_MM) for i, v in enumerate(raw))
        for name, high in (("max_rotation_deg", MAX_ROTATION_DEG), ("elastic_std_mm", MAX_ELASTIC_STD_MM)):
            if name in block:
                values[name] = number(block[name], f"{where}.{name}", 0, high)
        if "elastic_control_points" in block:
            points = block["elastic_control_points"]
            if not isinstance(points, int) or isinstance(points, bool) or not 2 <= points <= MAX_ELASTIC_CONTROL_POINTS:
                raise ValueError(f"{where}.elastic_control_points must be an integer in [2, "
                                 f"{MAX_ELASTIC_CONTROL_POINTS}], got {points!r}.")
            values["elastic_control_points"] = points
        return cls(**values)


@dataclass(frozen=True)
class ModalityDropoutSettings:
    """Random replacement of non-reference channels during training, so the model copes with missing ones.

    Attributes:
        probability: chance that a given non-reference channel of a given sample is dropped.
        mode: ``"duplicate"`` replaces it with a copy of a present channel (Diff4MMLiTS fills missing phases this
            way), ``"zeros"`` with zeros (the mean intensity after nnU-Net's normalisation).
    """

    probability: float = 0.1
    mode: str = "duplicate"

    @property
    def enabled(self) -> bool:
        return self.probability > 0

    @classmethod
    def from_dict(cls, block: Mapping[str, Any], where: str = "modality_dropout") -> "ModalityDropoutSettings":
        """Validated settings from a JSON object; missing keys keep their defaults."""
        check_object(block, [f.name for f in dataclasses.fields(cls)], where)
        values: dict[str, Any] = {}
        if "probability" in block:
            values["probability"] = number(block["probability"], f"{where}.probability", 0, 1)
        if "mode" in block:
            if block["mode"] not in DROPOUT_MODES:
                raise ValueError(f"{where}.mode must be one of {list(DROPOUT_MODES)}, got {block['mode']!r}.")
            values["mode"] = block["mode"]
        return cls(**values)


@dataclass(frozen=True)
class AugmentationDecision:
    """Whether the trainer misaligns and drops channels of this dataset, and why.

    Attributes:
        misalignment: non-reference channels get a random registration error.
        modality_dropout: non-reference channels are randomly replaced.
        reason: why, for the training log (the ``channel_acquisition`` and any explicit augmentation object).
    """

    misalignment: bool
    modality_dropout: bool
    reason: str

    def describe(self) -> str:
        """``"misalignment ON, modality dropout OFF (<reason>)"``."""
        return (f"misalignment {'ON' if self.misalignment else 'OFF'}, modality dropout "
                f"{'ON' if self.modality_dropout else 'OFF'} ({self.reason})")


def _check_channel_acquisition(acquisition: Any, misalignment: MisalignmentSettings, misalignment_explicit: bool,
                               where: str) -> None:
    """Refuse an unknown ``channel_acquisition`` and a misalignment requested on colour planes.

    Raises:
        ValueError: naming ``where``, the value and the allowed ones.
    """
    if acquisition is not None and (not isinstance(acquisition, str) or acquisition not in CHANNEL_ACQUISITIONS):
        raise ValueError(f"{where}.channel_acquisition must be one of {list(CHANNEL_ACQUISITIONS)} (or absent: not "
                         f"declared), got {acquisition!r}.")
    if acquisition == "colour_planes" and misalignment_explicit and misalignment.enabled:
        raise ValueError(f"{where}.misalignment: channel_acquisition 'colour_planes' declares the channels to be "
                         f"planes of one image, which are never misregistered, so shifting them against each other "
                         f"only damages the images; remove the 'misalignment' object (or set its probability to 0), "
                         f"or declare 'separate' if the channels are separately acquired.")


@dataclass(frozen=True)
class MultiModalSettings:
    """The core settings of the ``'nnunet_mm'`` block of one dataset.json (channels and augmentation).

    Attributes:
        num_channels: number of input channels (``len(channel_names)``).
        reference_channel: the channel the label belongs to; it is never moved or dropped, and prediction
            refuses to run without it.
        phase_names: optional human-readable name per channel (e.g. ``["pv", "art"]``), for messages and figures.
        channel_acquisition: how the channels were acquired, one of :data:`CHANNEL_ACQUISITIONS`; None when the
            block does not declare it. Decides the default of both augmentations (:meth:`augmentation_decision`).
        misalignment: see :class:`MisalignmentSettings` (the defaults when the block has no ``"misalignment"``).
        modality_dropout: see :class:`ModalityDropoutSettings` (likewise).
        seed: base seed of the trainer's augmentation generator (offset by the DDP rank); None draws a fresh one.
        misalignment_explicit: the block gives a ``"misalignment"`` object, which then wins over
            ``channel_acquisition``; :meth:`to_dict` writes the object only then.
        modality_dropout_explicit: the same for ``"modality_dropout"``.

    Raises:
        ValueError: an unknown ``channel_acquisition``, or an enabled explicit misalignment on ``colour_planes``.
    """

    num_channels: int = 1
    reference_channel: int = 0
    phase_names: tuple[str, ...] | None = None
    misalignment: MisalignmentSettings = field(default_factory=MisalignmentSettings)
    modality_dropout: ModalityDropoutSettings = field(default_factory=ModalityDropoutSettings)
    seed: int | None = None
    channel_acquisition: str | None = None
    misalignment_explicit: bool = False
    modality_dropout_explicit: bool = False

    KEYS = ("reference_channel", "phase_names", "channel_acquisition", "misalignment", "modality_dropout", "seed")

    def __post_init__(self) -> None:
        _check_channel_acquisition(self.channel_acquisition, self.misalignment, self.misalignment_explicit,
                                   type(self).__name__)

    def augmentation_decision(self) -> AugmentationDecision:
        """Whether the trainer misaligns and drops channels, and why.

        ``channel_acquisition`` ``"separate"`` turns both on with their settings; ``"co_registered"``,
        ``"colour_planes"`` and an undeclared acquisition leave them off. An explicit ``"misalignment"`` /
        ``"modality_dropout"`` object overrides that for its augmentation (on if its settings can change anything).
        With fewer than two channels both are off.
        """
        if self.num_channels < 2:
            return AugmentationDecision(False, False, "one image channel: nothing to misalign or drop")
        by_acquisition = self.channel_acquisition == "separate"
        explicit = [key for key, given in (("misalignment", self.misalignment_explicit),
                                           ("modality_dropout", self.modality_dropout_explicit)) if given]
        reason = _ACQUISITION_REASONS[self.channel_acquisition]
        if explicit:
            reason += f"; {' and '.join(repr(key) for key in explicit)} set explicitly in the block"
        return AugmentationDecision(
            misalignment=(by_acquisition or self.misalignment_explicit) and self.misalignment.enabled,
            modality_dropout=(by_acquisition or self.modality_dropout_explicit) and self.modality_dropout.enabled,
            reason=reason)

    def channel_name(self, channel: int) -> str:
        """``"1 (art)"`` when phase names are known, else ``"1"``."""
        if self.phase_names is not None and channel < len(self.phase_names):
            return f"{channel} ({self.phase_names[channel]})"
        return str(channel)

    def display_names(self, channel_names: Mapping[str, Any]) -> tuple[str, ...]:
        """One name per channel for figures: ``phase_names`` when given, else dataset.json's ``channel_names``.

        Args:
            channel_names: dataset.json's ``{"0": name, ...}``.
        """
        if self.phase_names is not None:
            return self.phase_names
        return tuple(str(channel_names[key]) for key in sorted(channel_names, key=int))

    @classmethod
    def from_block(cls, dataset_json: Mapping[str, Any], block: Mapping[str, Any], where: str) -> "MultiModalSettings":
        """Parse the core keys of ``block`` (the ``'nnunet_mm'`` object of ``dataset_json``); called by
        :func:`nnunet_mm.settings.read_settings`, which checks the keys of the block first.

        Raises:
            ValueError: a value of the wrong type or out of range, naming ``where`` and the key.
        """
        channel_names = dataset_json.get("channel_names", dataset_json.get("modality"))
        if not isinstance(channel_names, Mapping) or not channel_names:
            raise ValueError(f"{where.split(': ')[0]}: 'channel_names' is missing or empty.")
        num_channels = len(channel_names)
        reference = block.get("reference_channel", 0)
        if not isinstance(reference, int) or isinstance(reference, bool) or not 0 <= reference < num_channels:
            raise ValueError(f"{where}.reference_channel must be an integer in [0, {num_channels - 1}] "
                             f"(dataset has {num_channels} channels), got {reference!r}.")
        phase_names = block.get("phase_names")
        if phase_names is not None:
            if (not isinstance(phase_names, (list, tuple)) or len(phase_names) != num_channels
                    or not all(isinstance(p, str) for p in phase_names)):
                raise ValueError(f"{where}.phase_names must be a list of {num_channels} strings (one per channel), "
                                 f"got {phase_names!r}.")
            phase_names = tuple(phase_names)
        seed = block.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise ValueError(f"{where}.seed must be an integer or null, got {seed!r}.")
        misalignment = MisalignmentSettings.from_dict(block.get("misalignment", {}), f"{where}.misalignment")
        acquisition = block.get("channel_acquisition")  # null: not declared
        _check_channel_acquisition(acquisition, misalignment, "misalignment" in block, where)
        return cls(
            num_channels=num_channels,
            reference_channel=reference,
            phase_names=phase_names,
            misalignment=misalignment,
            modality_dropout=ModalityDropoutSettings.from_dict(block.get("modality_dropout", {}),
                                                               f"{where}.modality_dropout"),
            seed=seed,
            channel_acquisition=acquisition,
            misalignment_explicit="misalignment" in block,
            modality_dropout_explicit="modality_dropout" in block,
        )

    def to_dict(self) -> dict[str, Any]:
        """The core keys as written to dataset.json (round-trip through :func:`nnunet_mm.settings.read_settings`).

        ``channel_acquisition`` is written when declared, and each augmentation object only when it was explicit,
        so that the written block makes the same :meth:`augmentation_decision`.
        """
        block: dict[str, Any] = {"reference_channel": self.reference_channel, "seed": self.seed}
        if self.channel_acquisition is not None:
            block["channel_acquisition"] = self.channel_acquisition
        if self.misalignment_explicit:
            block["misalignment"] = {**dataclasses.asdict(self.misalignment),
                                     "max_translation_mm": list(self.misalignment.max_translation_mm)}
        if self.modality_dropout_explicit:
            block["modality_dropout"] = dataclasses.asdict(self.modality_dropout)
        if self.phase_names is not None:
            block["phase_names"] = list(self.phase_names)
        return block
