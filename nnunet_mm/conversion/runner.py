"""What every converter does around its dataset-specific part: check its arguments and output folder (through
:mod:`nnunet_mm.io.staging`), find case ids used twice, map over cases with a progress bar (optionally in parallel),
summarise what was written, and the shared command line (options and ``main``)."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from tqdm import tqdm

from nnunet_mm.io.console import error_text
from nnunet_mm.io.staging import check_output, new_dataset_folder

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger(__name__)


def sanitize_case_id(name: str) -> str:
    """Case id from a file or folder name: characters other than letters, digits, ``_`` and ``-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def case_id_collisions(items: Iterable[T], case_id: Callable[[T], str]) -> list[tuple[T, T]]:
    """``(item, first)`` for every item whose case id an earlier item already has, ignoring case (ids that differ
    only in case collide on case-insensitive file systems); each converter words its own message from the pair."""
    first_of_id: dict[str, T] = {}
    collisions = []
    for item in items:
        first = first_of_id.setdefault(case_id(item).lower(), item)
        if first is not item:
            collisions.append((item, first))
    return collisions


def prepare_output(source_dir: Path, *, dataset_id: int, dataset_name: str, output_root: Path | None,
                   overwrite: bool, test_source: Path | None = None) -> Path:
    """Check the arguments that every converter shares and return ``<root>/DatasetNNN_Name``.

    Called before the source is read, so that a bad output fails at once; the folder itself is then written with
    :func:`nnunet_mm.io.staged_dataset`, which repeats the existence check. A ``test_source`` (the converters'
    ``--test-source``) must exist and stay clear of the output too.

    Raises:
        FileNotFoundError: ``source_dir`` (or ``test_source``) does not exist.
        ValueError: bad id or name, no output root, output overlapping the input, another dataset with the same id
            (:func:`nnunet_mm.io.new_dataset_folder`, :func:`nnunet_mm.io.check_output`).
        FileExistsError: the dataset exists and ``overwrite`` is False.
    """
    sources = [Path(source_dir)] + ([Path(test_source)] if test_source is not None else [])
    for source in sources:
        if not source.exists():
            raise FileNotFoundError(f"{source}: source folder not found.")
    final_dir = new_dataset_folder(dataset_id, dataset_name, output_root=output_root)
    return check_output(final_dir, overwrite=overwrite, sources=sources)


def map_cases(function: Callable[[T], R], items: Sequence[T], *, num_processes: int = 1,
              description: str = "cases") -> list[R]:
    """``[function(item) for item in items]`` with a progress bar; in ``num_processes`` spawned processes if > 1
    (``function`` must then be picklable, e.g. a module-level function or a ``functools.partial`` of one)."""
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}.")
    progress = tqdm(total=len(items), desc=description, unit="case", disable=None)
    results: list[R] = []
    try:
        if num_processes == 1 or len(items) <= 1:
            for item in items:
                results.append(function(item))
                progress.update()
            return results
        executor = ProcessPoolExecutor(max_workers=num_processes, mp_context=multiprocessing.get_context("spawn"))
        try:
            for result in executor.map(function, items):
                results.append(result)
                progress.update()
        except BaseException:
            executor.shutdown(wait=True, cancel_futures=True)  # no worker may write once staging is removed
            raise
        executor.shutdown(wait=True)
        return results
    finally:
        progress.close()


@dataclass(frozen=True)
class CaseRecord:
    """What converting one case wrote, for the summary."""

    case_id: str
    is_training: bool
    spacing: tuple[float, ...]  # as nnU-Net reports it for the written image (x, y, z for 3D; 2D: (1, 1))
    label_voxel_counts: tuple[int, ...] | None = None  # index = label value, only for training cases
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSummary:
    """Counts and ranges of a finished conversion; :meth:`format` is what the converters print."""

    output_dir: Path
    num_training: int
    num_test: int
    channel_names: dict[str, str]
    labels: dict[str, Any]  # as in dataset.json (regions included)
    label_voxel_counts: dict[str, int]  # voxels in labelsTr per name of counted_labels
    counted_labels: dict[str, int]  # name → label value counted in label_voxel_counts
    spacing_min: tuple[float, ...]
    spacing_max: tuple[float, ...]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["output_dir"] = str(self.output_dir)
        return values

    def format(self) -> str:
        channels = ", ".join(f"{k} {v}" for k, v in self.channel_names.items())
        counts = ", ".join(f"{name} ({value}): {self.label_voxel_counts.get(name, 0)}"
                           for name, value in self.counted_labels.items())
        axes = ", ".join("xyz"[:len(self.spacing_min)])

        def fmt(values: tuple[float, ...]) -> str:
            return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"

        lines = [f"Converted {self.num_training} training and {self.num_test} test case(s) into {self.output_dir}",
                 f"  channels: {channels}",
                 f"  labels (voxels in labelsTr): {counts}",
                 f"  spacing ({axes}) mm: min {fmt(self.spacing_min)}, max {fmt(self.spacing_max)}"]
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


def summarize(records: Sequence[CaseRecord], *, output_dir: Path, channel_names: dict[str, str],
              labels: dict[str, Any], notes: Sequence[str] = (),
              count_labels: dict[str, int] | None = None) -> DatasetSummary:
    """Totals over the per-case records (label voxel counts are summed over training cases).

    Args:
        labels: the ``labels`` of dataset.json; region entries (lists of values) are kept but not counted.
        count_labels: name → value of the labels whose voxels are counted; None = the plain (integer) entries of
            ``labels``. Region datasets pass the values that labelsTr holds, e.g. BraTS' edema, NCR/NET and
            enhancing tumour.
    """
    counted = ({name: int(value) for name, value in labels.items() if not isinstance(value, (list, tuple))}
               if count_labels is None else {name: int(value) for name, value in count_labels.items()})
    totals = np.zeros(max(counted.values()) + 1, dtype=np.int64)
    for record in records:
        if record.label_voxel_counts is not None:
            counts = np.asarray(record.label_voxel_counts[:totals.size], dtype=np.int64)
            totals[:counts.size] += counts
    spacings = np.array([record.spacing for record in records], dtype=float) if records else np.zeros((1, 3))
    return DatasetSummary(
        output_dir=Path(output_dir),
        num_training=sum(r.is_training for r in records),
        num_test=sum(not r.is_training for r in records),
        channel_names=dict(channel_names),
        labels=dict(labels),
        label_voxel_counts={name: int(totals[value]) for name, value in counted.items()},
        counted_labels=counted,
        spacing_min=tuple(float(v) for v in spacings.min(axis=0)),
        spacing_max=tuple(float(v) for v in spacings.max(axis=0)),
        notes=tuple(notes),
    )


def add_common_arguments(parser: argparse.ArgumentParser, *, dataset_id: int, dataset_name: str) -> None:
    """The options every converter has: ``--output-root --target-id --target-name --overwrite -np -v`` (the
    plugin's grammar for a new dataset; ``--dataset-id``/``--dataset-name`` still work, with a deprecation
    warning)."""
    from nnunet_mm.cli.common import add_deprecated_alias

    parser.add_argument("--output-root", type=Path, default=None, help="folder receiving the new dataset "
                                                                      "[default: $nnUNet_raw]")
    parser.add_argument("--target-id", dest="dataset_id", type=int, default=dataset_id,
                        help="id of the new nnU-Net dataset [default: %(default)s]")
    parser.add_argument("--target-name", dest="dataset_name", default=dataset_name,
                        help="name of the new dataset after DatasetNNN_ [default: %(default)s]")
    add_deprecated_alias(parser, "--dataset-id", "--target-id")
    add_deprecated_alias(parser, "--dataset-name", "--target-name")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")
    parser.add_argument("-np", "--num-processes", type=int, default=1, help="parallel cases (default: 1)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def comma_list(text: str) -> list[str]:
    """An argparse ``type``: ``"pv, art"`` → ``["pv", "art"]``; an empty list is refused."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


class PrintableSummary(Protocol):
    """What a converter's ``convert_with_summary`` returns: :class:`DatasetSummary` or a converter's own summary."""

    def format(self) -> str: ...


def converter_main(convert_with_summary: Callable[..., PrintableSummary],
                   build_parser: Callable[[], argparse.ArgumentParser]) -> Callable[[Sequence[str] | None], int]:
    """A converter module's ``main``: ``main = converter_main(convert_with_summary, build_parser)``.

    The parser's ``dest`` names are ``convert_with_summary``'s parameters: every option is passed by its name, except
    ``--verbose`` of :func:`add_common_arguments`, which only sets the log level.
    """
    def main(argv: Sequence[str] | None = None) -> int:
        """Command-line entry point: prints the summary and returns 0, or prints ``error: ...`` (a problem with the
        input or the arguments) and returns 1."""
        options = vars(build_parser().parse_args(argv))
        verbose = options.pop("verbose")
        if not logging.getLogger().handlers:
            logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                                format="%(levelname)s %(name)s: %(message)s")
        try:
            summary = convert_with_summary(**options)
        except (ValueError, OSError) as error:  # ConversionError is a ValueError; OSError: permission, full disk
            print(f"error: {error_text(error)}", file=sys.stderr)
            return 1
        print(summary.format())
        return 0

    return main
