"""Raw nnU-Net datasets: the cases a folder of images holds, and a raw dataset's folder, dataset.json and files.

nnU-Net names every image ``{case}_{XXXX}{file_ending}``, XXXX the 4-digit channel index in dataset.json's
``channel_names`` order, and every label ``{case}{file_ending}``. :func:`available_channel_files` is the one
listing of such a folder; every folder of images goes through it: ``imagesTr`` / ``imagesTs`` of a raw dataset
(:func:`open_raw_dataset`), the unlabeled images of CMC, the input folder of prediction with missing channels and
the images of weakly labelled datasets.

Importing this module loads neither nnU-Net nor numpy; nnU-Net is imported only to find a dataset by id or name.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CHANNEL_FILE = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")
"""A file name without its ending: case id, underscore, 4-digit channel index."""

_MAX_LISTED_PROBLEMS = 20


def _raise_problems(problems: list[str], folder: Path) -> None:
    if not problems:
        return
    listed = problems[:_MAX_LISTED_PROBLEMS]
    if len(problems) > len(listed):
        listed.append(f"... and {len(problems) - len(listed)} more")
    raise ValueError(f"{folder}: {len(problems)} problem(s) with the image files:\n  " + "\n  ".join(listed))


def available_channel_files(folder: Path | str, file_ending: str, num_channels: int | None, *,
                            source: str = "dataset.json",
                            refuse_other_files: bool = False) -> dict[str, dict[int, Path]]:
    """The image files of every case in ``folder``, by channel; a case may lack channels.

    Hidden files are skipped. A file that ends in ``file_ending`` but is not named ``{case}_{XXXX}{file_ending}`` is
    refused rather than skipped: nnU-Net would read it as a case, and skipping it would silently drop the case.

    Args:
        folder: a folder of ``{case}_{XXXX}{file_ending}`` images (``imagesTr``, ``imagesTs``, ``imagesUnl``, the
            input folder of a prediction).
        file_ending: dataset.json's ``file_ending``.
        num_channels: the number of channels (``channel_names``); a higher channel index is refused. None sets no
            bound (natural images, where one RGB file holds three of ``channel_names``).
        source: where ``num_channels`` comes from, for the messages (``"dataset.json"``, ``"the model"``).
        refuse_other_files: also refuse files without ``file_ending`` (folders nnU-Net never reads, where nothing
            else belongs); by default they are skipped, as nnU-Net skips them.

    Returns:
        ``{case: {channel: file}}``, sorted by case and channel; empty when the folder holds no image.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: every misnamed file and every channel index out of range, one line each, naming the file.
    """
    cases, problems = _scan(Path(folder), file_ending, num_channels, source, refuse_other_files)
    _raise_problems(problems, Path(folder))
    return cases


def _scan(folder: Path, file_ending: str, num_channels: int | None, source: str,
          refuse_other_files: bool) -> tuple[dict[str, dict[int, Path]], list[str]]:
    """The listing of :func:`available_channel_files` and its problems (not raised yet)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found.")
    found: dict[str, dict[int, Path]] = {}
    problems = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        has_ending = path.name.endswith(file_ending) and len(path.name) > len(file_ending)
        match = _CHANNEL_FILE.fullmatch(path.name[:-len(file_ending)]) if has_ending and path.is_file() else None
        if match is None:
            if has_ending or refuse_other_files:
                problems.append(f"{path}: not an image named CASE_XXXX{file_ending} (XXXX = 4-digit channel index)")
            continue
        channel = int(match["channel"])
        if num_channels is not None and channel >= num_channels:
            problems.append(f"{path}: channel {channel}, but {source} has {num_channels} channel(s) "
                            f"(_0000 .. _{num_channels - 1:04d})")
            continue
        found.setdefault(match["case"], {})[channel] = path
    return {case: dict(sorted(channels.items())) for case, channels in sorted(found.items())}, problems


def case_channel_files(folder: Path | str, file_ending: str, num_channels: int | None, *,
                       source: str = "dataset.json", phase_names: Sequence[str] | None = None,
                       refuse_other_files: bool = False) -> dict[str, list[Path]]:
    """The image files of every case in ``folder``, each case complete.

    The listing of :func:`available_channel_files`, then every case must have channels ``0 .. num_channels - 1``;
    with ``num_channels`` None, channels ``0 .. k - 1`` without a gap, k per case.

    Args:
        folder, file_ending, num_channels, source, refuse_other_files: as in :func:`available_channel_files`.
        phase_names: names of the channels for the messages (``"missing channel 1 (art)"``).

    Returns:
        ``{case: [file of channel 0, file of channel 1, ...]}``, sorted by case; empty when the folder holds no
        image.

    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: every problem of :func:`available_channel_files` and every missing channel file, together, one
            line each.
    """
    folder = Path(folder)
    cases, problems = _scan(folder, file_ending, num_channels, source, refuse_other_files)
    for case, channels in cases.items():
        expected = num_channels if num_channels is not None else max(channels) + 1
        for channel in range(expected):
            if channel not in channels:
                name = f"{channel} ({phase_names[channel]})" if phase_names and channel < len(phase_names) \
                    else str(channel)
                problems.append(f"{folder / f'{case}_{channel:04d}{file_ending}'}: missing channel {name} of case "
                                f"{case!r}")
    _raise_problems(problems, folder)
    return {case: list(channels.values()) for case, channels in cases.items()}


@dataclass
class RawDataset:
    """An nnU-Net raw dataset: its folder, its dataset.json and its complete cases (see :func:`open_raw_dataset`).

    One image file per channel of ``channel_names`` (not natural-image datasets, whose RGB file holds three).
    """

    folder: Path
    dataset_json: dict[str, Any]
    training_cases: list[str] = field(default_factory=list)
    test_cases: list[str] = field(default_factory=list)

    @property
    def file_ending(self) -> str:
        return self.dataset_json["file_ending"]

    @property
    def num_channels(self) -> int:
        return len(self.dataset_json["channel_names"])

    def image_file(self, case: str, channel: int, split: str = "Tr") -> Path:
        """``images{split}/{case}_{channel:04d}{file_ending}``."""
        return self.folder / f"images{split}" / f"{case}_{channel:04d}{self.file_ending}"

    def label_file(self, case: str, split: str = "Tr") -> Path:
        """``labels{split}/{case}{file_ending}`` (which need not exist)."""
        return self.folder / f"labels{split}" / f"{case}{self.file_ending}"


def raw_dataset_folder(dataset: int | str | Path) -> Path:
    """The folder of a raw dataset given by folder, or by id or name under ``nnUNet_raw``."""
    if isinstance(dataset, Path) or (isinstance(dataset, str) and os.sep in dataset):
        return Path(dataset)
    from nnunetv2.paths import nnUNet_raw
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    return Path(nnUNet_raw) / maybe_convert_to_dataset_name(dataset)


def open_raw_dataset(dataset: int | str | Path) -> RawDataset:
    """Find a raw dataset by folder, id or name, read its dataset.json and list its cases in ``imagesTr`` and
    ``imagesTs`` (:func:`case_channel_files`; a missing folder has no cases).

    Raises:
        FileNotFoundError: no dataset.json, naming the file.
        ValueError: dataset.json is not valid JSON; a misnamed image or a case that lacks a channel file, each
            named.
    """
    folder = raw_dataset_folder(dataset)
    json_file = folder / "dataset.json"
    if not json_file.is_file():
        raise FileNotFoundError(f"{json_file}: not found; expected an nnU-Net raw dataset.")
    try:
        raw = RawDataset(folder, json.loads(json_file.read_text(encoding="utf-8")))
    except json.JSONDecodeError as error:
        raise ValueError(f"{json_file}: not valid JSON ({error}).") from None
    for split, cases in (("Tr", raw.training_cases), ("Ts", raw.test_cases)):
        images = folder / f"images{split}"
        if images.is_dir():
            cases.extend(case_channel_files(images, raw.file_ending, raw.num_channels, source=str(json_file)))
    return raw
