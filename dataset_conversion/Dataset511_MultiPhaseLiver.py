"""Dataset511_MultiPhaseLiver: multi-phase liver CT labelled on one reference phase (mmLiTs layout) → nnU-Net raw.

Input (a folder, or a ``.zip``/``.tar``/``.tar.gz`` archive of it), one sub-folder per case; each phase may be on its
own grid, and the label lies on the reference phase's grid::

    <source>/<case>/pv.nii.gz      reference phase (first of ``phases``); any ending of nnunet_mm.io.IMAGE_ENDINGS,
                                   or a folder pv/ holding one DICOM series
    <source>/<case>/art.nii.gz     the other phases (``del``, ``nc``, ...), matched case-insensitively by stem
    <source>/<case>/label.nii.gz   0 background, 1 liver, 2 tumour; a case without a label is a test case

Archives are extracted into a temporary folder first; a member that would land outside it (absolute name, ``..``,
link pointing out) is refused and nothing is extracted. Symbolic links are followed only while they stay inside the
source folder: a case folder, phase or label file, file of a DICOM folder, or data file named by a ``.mhd``/``.nhdr``
header that resolves outside it is refused (named, with where it points), so the converter reads nothing outside
its input.

Output, in ``<output_root>/Dataset511_MultiPhaseLiver/``:

* ``imagesTr/<case>_0000.nii.gz`` = reference phase, ``_0001`` ... = the other phases in ``phases`` order, each
  resampled (linear; after optional rigid/affine registration to the reference) onto the reference grid;
  ``labelsTr/<case>.nii.gz`` = the label, values and grid unchanged (uint8); unlabelled cases go to ``imagesTs``.
* Partial fields of view (a short arterial z-range is common): reference voxels outside a phase's field of view hold
  the reference phase's values there, the way modality dropout's ``"duplicate"`` mode fills a missing phase -- not
  a constant such as −1024 HU, which inside the body would enter nnU-Net's CT normalisation statistics of that
  channel (foreground percentiles, mean, std) and squeeze its contrast. ``nnunet_mm_qa/coverage.json`` (written
  with or without ``qa_figures``) records per case and phase the covered fraction of the grid, of the labelled
  region (label > 0) and of each label, with a mask ``nnunet_mm_qa/coverage/<case>_<XXXX>.nii.gz`` (uint8,
  1 = the phase's own voxel) for every phase that does not cover the whole grid; a warning per case and phase names
  the file when labelled voxels (below 99.5 % of any label region) or most of the grid (below 50 %) are not covered.
  Nothing is refused for this.
* ``dataset.json``: every channel is named ``"CT"`` so that nnU-Net applies CT normalisation to each phase (the
  phase names are kept in the ``'nnunet_mm'`` block: ``reference_channel``, ``phase_names``, ``source``,
  ``registration``, ``converter``, and ``"channel_acquisition": "separate"`` for two or more phases, which turns on
  the trainer's misalignment and modality dropout). Label values are kept as they are (``label_names[i]`` ↔
  ``i + 1``), so no inverse mapping is needed to export predictions.
* ``nnunet_mm_qa/`` (``qa_figures=True``): one PNG per case and ``summary.json``, see :func:`convert`; when
  registering, also ``nnunet_mm_qa/transforms/<case>_<phase>.tfm`` (fixed = reference to moving = phase, ITK
  convention).

Every image is read twice (checked, then converted), so that memory stays at one case per process.

What every converter guarantees (checks before writing, staging, errors) is in :mod:`nnunet_mm.dataset_conversion`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk
from skimage.metrics import normalized_mutual_information

from nnunet_mm.conversion.archives import IGNORED_PREFIXES, check_inside, is_archive, source_folder, source_path_name
from nnunet_mm.conversion.coverage import (FOREGROUND, GRID_COVERAGE_WARNING_BELOW, LABEL_COVERAGE_WARNING_BELOW,
                                           PhaseCoverage, coverage_warning, field_of_view, fill_uncovered,
                                           measure_coverage)
from nnunet_mm.conversion.errors import ConversionError  # noqa: F401 - what convert raises, importable from here
from nnunet_mm.conversion.errors import attempt, raise_if_problems
from nnunet_mm.conversion.labels import label_dict, label_value_problems
from nnunet_mm.conversion.runner import (add_common_arguments, case_id_collisions, comma_list, converter_main,
                                         map_cases, prepare_output, sanitize_case_id)
from nnunet_mm.io import (
    IMAGE_ENDINGS,
    describe_geometry,
    find_image,
    geometry_differences,
    read_image,
    register as register_images,
    resample_to_reference,
    staged_dataset,
    write_dataset_json,
    write_image,
)

logger = logging.getLogger(__name__)

DATASET_ID = 511
DATASET_NAME = "MultiPhaseLiver"
DEFAULT_PHASES = ("pv", "art", "del", "nc")
DEFAULT_LABEL_NAME = "label"
DEFAULT_LABEL_NAMES = ("liver", "tumor")
REGISTRATION_CHOICES = ("none", "rigid", "affine")
FILE_ENDING = ".nii.gz"
CHANNEL_NAME = "CT"  # nnU-Net picks CT normalisation by this exact name (any case)
QA_FOLDER = "nnunet_mm_qa"
COVERAGE_FILE = "coverage.json"  # in QA_FOLDER, written with or without the QA figures
COVERAGE_MASK_FOLDER = "coverage"  # in QA_FOLDER: <case>_<XXXX>.nii.gz for every phase not covering the whole grid
QA_MARGIN_MM = 10.0  # the label's bounding box is grown by this much on each side for the QA similarity
QA_HISTOGRAM_BINS = 32
GEOMETRY_TOLERANCE = 1e-3  # mm (spacing, origin) and direction cosines
HEADER_ENDINGS = (".mhd", ".mha", ".nhdr", ".nrrd")  # formats whose header may name a separate data file
HEADER_READ_LIMIT = 1 << 20  # bytes of a header searched for the data file field
CONTOUR_COLOURS = ("#ff3030", "#30e030", "#3090ff", "#ffd030", "#ff30ff", "#30ffff")



@dataclass(frozen=True)
class CaseFiles:
    """The input files of one case: ``phase_files[0]`` is the reference phase (None marks a missing phase, which
    :func:`find_cases` has reported); ``label_file`` is None for test cases."""

    case_id: str
    folder: Path
    phase_files: tuple[Path | None, ...]
    label_file: Path | None

    @property
    def is_training(self) -> bool:
        return self.label_file is not None


@dataclass(frozen=True)
class PhaseCoverageRecord:
    """Field of view of one non-reference phase of one case on the reference grid (``nnunet_mm_qa/coverage.json``).

    Attributes:
        channel: the phase's channel index (``_XXXX``).
        file: the phase's source file.
        coverage: covered fractions of the grid and of the label regions.
        mask: the coverage mask's path relative to ``nnunet_mm_qa/`` (uint8, 1 = the phase's own voxel), None
            when the phase covers the whole grid.
    """

    channel: int
    file: str
    coverage: PhaseCoverage
    mask: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "file": self.file, **self.coverage.to_dict(), "mask": self.mask}


@dataclass(frozen=True)
class CaseResult:
    """What converting one case produced, for the summary."""

    case_id: str
    is_training: bool
    spacing_xyz_mm: tuple[float, float, float]
    label_voxel_counts: tuple[int, ...] | None  # index = label value
    qa: dict[str, Any] | None
    coverage: dict[str, PhaseCoverageRecord] = dataclasses.field(default_factory=dict)  # by phase name


@dataclass(frozen=True)
class ConversionSummary:
    """Counts and ranges of a finished conversion; :meth:`format` gives the text that ``main`` prints."""

    output_dir: Path
    num_training: int
    num_test: int
    phase_names: tuple[str, ...]
    channel_names: dict[str, str]
    labels: dict[str, int]
    label_voxel_counts: dict[str, int]
    spacing_min_xyz_mm: tuple[float, float, float]
    spacing_max_xyz_mm: tuple[float, float, float]
    registration: str
    qa_dir: Path | None
    # per non-reference phase: lowest "grid" and "labelled" (label > 0) coverage over the cases, and
    # "cases_not_covering_label": how many cases leave labelled voxels uncovered (below LABEL_COVERAGE_WARNING_BELOW)
    coverage: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    coverage_file: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["output_dir"] = str(self.output_dir)
        values["qa_dir"] = None if self.qa_dir is None else str(self.qa_dir)
        values["coverage_file"] = None if self.coverage_file is None else str(self.coverage_file)
        return values

    def format(self) -> str:
        channels = ", ".join(f"{i} {phase} ({self.channel_names[str(i)]})" for i, phase in enumerate(self.phase_names))
        counts = ", ".join(f"{name} ({self.labels[name]}): {count}" for name, count in self.label_voxel_counts.items())

        def fmt(values: tuple[float, ...]) -> str:
            return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"

        lines = [
            f"Converted {self.num_training} training and {self.num_test} test case(s) into {self.output_dir}",
            f"  channels: {channels}",
            f"  labels (voxels in labelsTr): {counts}",
            f"  spacing x, y, z (mm): min {fmt(self.spacing_min_xyz_mm)}, max {fmt(self.spacing_max_xyz_mm)}",
            f"  registration: {self.registration}",
        ]
        if self.coverage:
            def percent(value: float | None) -> str:
                return "-" if value is None else f"{100 * value:.1f}%"

            per_phase = "; ".join(
                f"{phase} {percent(c['grid'])} / {percent(c['labelled'])}"
                + (f" ({c['cases_not_covering_label']} case(s) with labelled voxels uncovered)"
                   if c["cases_not_covering_label"] else "")
                for phase, c in self.coverage.items())
            lines.append(f"  field of view on the reference grid, lowest over cases (grid / labelled region): "
                         f"{per_phase}; voxels outside it hold the reference phase ({self.coverage_file})")
        if self.qa_dir is not None:
            lines.append(f"  QA figures and summary.json: {self.qa_dir}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# finding and checking the input

def _missing_phase_message(folder: Path, phase: str) -> str:
    present = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in folder.iterdir())
    return (f"{folder}: missing phase '{phase}': expected {folder / phase}{{{','.join(IMAGE_ENDINGS)}}} or a DICOM "
            f"folder {folder / phase}/ (case-insensitive); the folder holds {present}.")


def _outside(path: Path, root: Path) -> str | None:
    """The problem line for ``path`` when it resolves (following symbolic links) outside ``root``, else None."""
    try:
        check_inside(path, root)
    except ValueError as error:
        return str(error)
    return None


def _header_data_files(header: Path) -> list[Path]:
    """The data files that a MetaImage (``ElementDataFile``) or NRRD (``data file``) header names, relative names
    taken next to the header as ITK does: one file, a ``LIST`` of files, or a printf pattern with its range. Empty
    for data inside the file (``LOCAL``, no such field) and for other formats.

    Raises:
        OSError: the header cannot be read.
    """
    ending = next((e for e in HEADER_ENDINGS if header.name.lower().endswith(e)), None)
    if ending is None:
        return []
    with header.open("rb") as handle:
        text = handle.read(HEADER_READ_LIMIT).decode("latin-1")
    lines = text.splitlines()
    metaimage = ending in (".mhd", ".mha")
    value, following = None, []
    for index, line in enumerate(lines):
        if metaimage:
            key, separator, rest = line.partition("=")
            if separator and key.strip().lower() == "elementdatafile":
                value, following = rest.strip(), lines[index + 1:]
                break
        else:
            if not line.strip():  # the end of a NRRD header
                break
            key, separator, rest = line.partition(":")
            if separator and key.strip().lower() in ("data file", "datafile"):
                value, following = rest.lstrip("=").strip(), lines[index + 1:]
                break
    if not value or value.upper() == "LOCAL":
        return []
    names: list[str]
    tokens = value.split()
    if tokens[0].upper() == "LIST":
        names = [line.strip() for line in following if line.strip()]
    elif len(tokens) >= 4 and "%" in tokens[0] and all(re.fullmatch(r"[+-]?\d+", t) for t in tokens[1:4]):
        first, last, step = (int(t) for t in tokens[1:4])
        if step == 0 or (last - first) // step > 100_000:
            names = [str(Path(tokens[0]).parent / "x")]  # an absurd range: the folder of the pattern at least
        else:
            try:
                names = [tokens[0] % number for number in range(first, last + (1 if step > 0 else -1), step)]
            except (TypeError, ValueError):
                names = [str(Path(tokens[0]).parent / "x")]
    else:
        names = [value]
    return [header.parent / name for name in names]


def _outside_problems(path: Path, root: Path) -> list[str]:
    """Problem lines for ``path`` (an image file or DICOM folder found in a case folder inside ``root``) and for
    what reading it would open, when any of it resolves outside ``root``: the path itself, every entry of a DICOM
    folder, every data file named by a MetaImage/NRRD header."""
    problem = _outside(path, root)
    if problem is not None:
        return [problem]
    if path.is_dir():
        return [problem for entry in sorted(path.iterdir()) if (problem := _outside(entry, root)) is not None]
    try:
        data_files = _header_data_files(path)
    except OSError:
        return []  # unreadable: read_image reports it
    return [f"{path}: header names the data file {problem}" for data_file in data_files
            if (problem := _outside(data_file, root)) is not None]


def find_cases(source_dir: Path, *, phases: Sequence[str], label_name: str) -> tuple[list[CaseFiles], list[str]]:
    """Find the case folders of ``source_dir`` and their phase and label files.

    Returns:
        Every case (missing phases as None, so that the files that are there can still be checked), and one
        problem line per missing or ambiguous file, duplicate case id, empty source folder, or case folder, file
        (or file it leads to) resolving outside ``source_dir`` through a symbolic link; such a folder is not listed
        and such a file is not read (None in the case).
    """
    problems: list[str] = []
    folders = sorted(p for p in source_dir.iterdir() if p.is_dir() and not p.name.startswith(IGNORED_PREFIXES))
    if not folders:
        problems.append(f"{source_dir}: no case folders found (the source folder is empty or holds only files); "
                        f"expected {source_dir}/<case_id>/{phases[0]}.nii.gz, ... and <case_id>/{label_name}.nii.gz.")
    cases: list[CaseFiles] = []
    any_label = False
    for folder in folders:
        outside = _outside(folder, source_dir)
        if outside is not None:
            problems.append(outside)
            continue
        phase_files: list[Path | None] = []
        for phase in phases:
            try:
                found = find_image(folder, phase)
            except ValueError as error:  # several matches
                problems.append(str(error))
                found = None
            else:
                if found is None:
                    problems.append(_missing_phase_message(folder, phase))
                elif outside := _outside_problems(found, source_dir):
                    problems += outside
                    found = None
            phase_files.append(found)
        try:
            label_file = find_image(folder, label_name)
        except ValueError as error:
            problems.append(str(error))
            label_file = None
            any_label = True
        else:
            any_label = any_label or label_file is not None
            if label_file is not None and (outside := _outside_problems(label_file, source_dir)):
                problems += outside
                label_file = None
        cases.append(CaseFiles(sanitize_case_id(folder.name), folder, tuple(phase_files), label_file))
    problems += [f"{case.folder}: duplicate case id '{case.case_id}': folders {first.folder} and {case.folder} map "
                 f"to the same id (non-alphanumeric characters become '_', case is ignored); rename one."
                 for case, first in case_id_collisions(cases, lambda case: case.case_id)]
    if cases and not any_label:
        problems.append(f"{source_dir}: no case has a label file '{label_name}.<ending>'; nnU-Net needs at least "
                        f"one labelled training case.")
    return cases, problems


def validate_case(case: CaseFiles, *, label_names: Sequence[str]) -> list[str]:
    """Read every file of ``case`` and return one problem line per unreadable, non-3D or non-finite image, label
    off the reference grid, or bad label value."""
    problems: list[str] = []
    images = [attempt(problems, read_image, file) if file is not None else None for file in case.phase_files]
    reference = images[0]
    label = attempt(problems, read_image, case.label_file) if case.label_file is not None else None
    if label is None:
        return problems
    if reference is not None:
        differences = geometry_differences(label, reference, tolerance=GEOMETRY_TOLERANCE)
        if differences:
            problems.append(f"{case.label_file}: label is not on the grid of the reference phase "
                            f"{case.phase_files[0]} ({', '.join(differences)} differ): label "
                            f"{describe_geometry(label)}; reference {describe_geometry(reference)}. Resample the label "
                            f"onto the reference phase, or make the phase it was drawn on the first of --phases.")
    labels = label_dict(label_names)
    problems += label_value_problems(sitk.GetArrayViewFromImage(label), labels.values(), case.label_file,
                                     hint=f"Values: {', '.join(f'{v} {n}' for n, v in labels.items())}. Remap them, "
                                          f"or name more labels with --labels.")
    return problems


# ----------------------------------------------------------------------------------------------------------------
# converting one case

def _qa_region(label: np.ndarray, spacing_zyx_mm: Sequence[float]) -> tuple[tuple[slice, ...], str]:
    """The label's bounding box grown by QA_MARGIN_MM, or the whole grid when there is no foreground."""
    if not label.any():
        return tuple(slice(0, s) for s in label.shape), "whole_image"
    region = []
    for axis, (size, spacing) in enumerate(zip(label.shape, spacing_zyx_mm)):
        other_axes = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(label.any(axis=other_axes))
        margin = int(math.ceil(QA_MARGIN_MM / spacing))
        region.append(slice(max(0, present[0] - margin), min(size, present[-1] + 1 + margin)))
    return tuple(region), f"label_bbox+{QA_MARGIN_MM:g}mm"


def normalized_cross_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the voxel values (1 = identical up to a linear intensity map)."""
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / denominator) if denominator > 0 else float("nan")


def _similarity(reference: np.ndarray, phase: np.ndarray) -> dict[str, float | None]:
    """NCC and NMI rounded for JSON; None where undefined (no voxels to compare, or a constant image)."""
    if reference.size < 2:
        return {"ncc": None, "nmi": None}
    with np.errstate(divide="ignore", invalid="ignore"):  # constant images: NMI 0/0 is undefined (None below)
        nmi = normalized_mutual_information(reference, phase, bins=QA_HISTOGRAM_BINS)
    scores = {"ncc": normalized_cross_correlation(reference, phase), "nmi": float(nmi)}
    return {name: round(value, 5) if math.isfinite(value) else None for name, value in scores.items()}


def _views(volume: np.ndarray, centre_zyx: Sequence[int]) -> dict[str, np.ndarray]:
    """Copies of the axial and coronal slice through ``centre_zyx`` (copies: ``volume`` may be a view of an image
    that is freed before the figure is drawn)."""
    return {"axial": np.array(volume[centre_zyx[0]]), "coronal": np.array(volume[:, centre_zyx[1], :])}


def _display_window(volume: np.ndarray, mask: np.ndarray | None) -> tuple[float, float]:
    """Grey-value window: the 1st-99th percentile inside the label (widened by half its range on each side, so
    that liver and tumour contrast stays visible), or of the whole image without a label."""
    if mask is None or not mask.any():
        low, high = np.percentile(volume, [1, 99])
        return float(low), float(high)
    low, high = np.percentile(volume[mask], [1, 99])
    margin = max(0.5 * (high - low), 1.0)
    return float(low - margin), float(high + margin)


def _save_qa_figure(path: Path, *, case_id: str, phase_names: Sequence[str], rows: list[dict[str, Any]],
                    label_views: dict[str, np.ndarray] | None, spacing_zyx_mm: Sequence[float],
                    registered: bool, centre_zyx: Sequence[int]) -> None:
    """Montage: one row per phase, columns = axial slice ``centre_zyx[0]`` and coronal slice ``centre_zyx[1]``,
    each resampled (and registered); an axial slice outside a phase's field of view says so instead of a score."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: leaves the global backend alone
    from matplotlib.figure import Figure

    states = ("resampled", "registered") if registered else ("resampled",)
    columns = [(view, state) for view in ("axial", "coronal") for state in states]
    aspects = {"axial": spacing_zyx_mm[1] / spacing_zyx_mm[2], "coronal": spacing_zyx_mm[0] / spacing_zyx_mm[2]}
    figure = Figure(figsize=(2.6 * len(columns), 2.6 * len(rows) + 0.4), dpi=90)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), len(columns), squeeze=False)
    for row_axes, row, phase in zip(axes, rows, phase_names):
        for ax, (view, state) in zip(row_axes, columns):
            image = row[state][view]
            ax.imshow(image, cmap="gray", vmin=row["window"][0], vmax=row["window"][1], aspect=aspects[view],
                      origin="upper" if view == "axial" else "lower", interpolation="nearest")
            if label_views is not None:
                for value in range(1, int(label_views[view].max(initial=0)) + 1):
                    mask = label_views[view] == value
                    if mask.any():
                        ax.contour(mask.astype(np.float32), levels=[0.5], linewidths=0.8,
                                   colors=CONTOUR_COLOURS[(value - 1) % len(CONTOUR_COLOURS)])
            score = row["metrics"].get(state) or {}
            where = f"{view} z{centre_zyx[0]}" if view == "axial" else f"{view} y{centre_zyx[1]}"
            if row is rows[0]:
                text = f"{phase} {where} (reference)"
            elif view == "axial" and row.get("axial_note"):
                text = f"{phase} {where} {state}\n{row['axial_note']}"
            elif score.get("ncc") is not None:
                text = f"{phase} {where} {state}\nNCC {score['ncc']:.3f}"
            else:
                text = f"{phase} {where} {state}"
            ax.set_title(text, fontsize=7)
            ax.set_axis_off()
    contour_text = "reference label contour" if label_views is not None else "no label (test case)"
    figure.suptitle(f"{case_id}: phases on the reference grid, {contour_text}", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)


class _CaseQa:
    """QA numbers and figure rows of one case, filled phase by phase (see ``qa_figures`` in :func:`convert`)."""

    def __init__(self, reference: sitk.Image, label_array: np.ndarray | None):
        self.reference = reference
        self.reference_array = sitk.GetArrayFromImage(reference)
        self.spacing_zyx_mm = reference.GetSpacing()[::-1]
        foreground = None if label_array is None else label_array > 0
        self.region, self.region_name = _qa_region(
            foreground if foreground is not None else np.zeros(self.reference_array.shape, bool),
            self.spacing_zyx_mm)
        self.centre = [(s.start + s.stop - 1) // 2 for s in self.region]
        self.window_mask = foreground
        self.label_views = None if label_array is None else _views(label_array, self.centre)
        reference_views = _views(self.reference_array, self.centre)
        self.rows: list[dict[str, Any]] = [{"resampled": reference_views, "registered": reference_views,
                                            "window": _display_window(self.reference_array, foreground),
                                            "metrics": {}}]
        self.phases: dict[str, Any] = {}

    def add_phase(self, phase: str, file: Path, moving: sitk.Image, resampled: sitk.Image,
                  registered: sitk.Image | None, transform: sitk.Transform | None, covered: np.ndarray) -> None:
        """Add one phase; ``resampled``/``registered`` as resampled (outside the field of view not filled, so the
        figure shows the phase's real extent), ``covered`` the field of view of the channel written (registered
        if registering)."""
        arrays = {"resampled": sitk.GetArrayFromImage(resampled)}
        if registered is not None:
            arrays["registered"] = sitk.GetArrayFromImage(registered)
        coverage = float(covered.mean())
        # before and after are compared on the same voxels: those inside the phase's field of view in both
        compared_voxels = covered if transform is None else covered & field_of_view(moving, self.reference)
        compared = compared_voxels[self.region]
        reference_values = self.reference_array[self.region][compared]
        metrics = {state: _similarity(reference_values, array[self.region][compared])
                   for state, array in arrays.items()}
        self.phases[phase] = {"file": str(file), "before": metrics["resampled"], "after": metrics.get("registered"),
                              "coverage": round(coverage, 4)}
        shown = arrays.get("registered", arrays["resampled"])
        # the grey window from the phase's own voxels: the resampler's fill outside the field of view would widen it
        labelled = None if self.window_mask is None else self.window_mask & covered
        if labelled is not None and labelled.any():
            window = _display_window(shown, labelled)
        else:
            window = _display_window(shown[covered] if covered.any() else shown, None)
        covered_slices = np.flatnonzero(covered.any(axis=(1, 2)))
        note = None
        if not covered[self.centre[0]].any():  # the axial slice shown holds only the resampler's fill
            note = (f"outside this phase's field of view\n(it covers z {covered_slices.min()}-{covered_slices.max()})"
                    if covered_slices.size else "outside this phase's field of view")
        self.rows.append({**{state: _views(array, self.centre) for state, array in arrays.items()},
                          "window": window, "metrics": metrics, "axial_note": note})

    def finish(self, figure_path: Path, *, case: CaseFiles, phase_names: Sequence[str],
               registered: bool) -> dict[str, Any]:
        """Save the figure; return this case's entry of summary.json."""
        _save_qa_figure(figure_path, case_id=case.case_id, phase_names=phase_names, rows=self.rows,
                        label_views=self.label_views, spacing_zyx_mm=self.spacing_zyx_mm, registered=registered,
                        centre_zyx=self.centre)
        return {"training": case.is_training, "region": self.region_name,
                "region_zyx": [[int(s.start), int(s.stop)] for s in self.region], "phases": self.phases}


def _write_label(case: CaseFiles, reference: sitk.Image, staging_dir: Path) -> np.ndarray:
    label = sitk.Cast(read_image(case.label_file), sitk.sitkUInt8)
    # validated to agree within GEOMETRY_TOLERANCE; copying makes image and label grids identical bit for bit
    label.CopyInformation(reference)
    write_image(label, staging_dir / "labelsTr" / f"{case.case_id}{FILE_ENDING}")
    label_array = sitk.GetArrayFromImage(label)
    if not label_array.any():
        logger.warning("%s: label has only background (0)", case.label_file)
    return label_array


def _align_phase(case: CaseFiles, index: int, phase: str, reference: sitk.Image, moving: sitk.Image,
                 registration: str) -> tuple[sitk.Transform | None, sitk.Image, sitk.Image | None]:
    """(transform or None, plain resampling, registered resampling or None) of one phase onto the reference."""
    transform = None
    if registration != "none":
        try:
            transform = register_images(reference, moving, mode=registration, seed=1, initialization="physical")
        except RuntimeError as error:
            raise RuntimeError(f"{case.phase_files[index]}: registering phase '{phase}' to {case.phase_files[0]} "
                               f"failed: {error}") from error
    resampled = resample_to_reference(moving, reference)
    registered = None if transform is None else resample_to_reference(moving, reference, transform=transform)
    return transform, resampled, registered


def _write_coverage_mask(covered: np.ndarray, reference: sitk.Image, staging_dir: Path, name: str) -> None:
    mask = sitk.GetImageFromArray(covered.astype(np.uint8))
    mask.CopyInformation(reference)
    write_image(mask, staging_dir / QA_FOLDER / name)


def convert_case(case: CaseFiles, *, staging_dir: Path, phase_names: Sequence[str], label_names: Sequence[str],
                 registration: str, qa_figures: bool) -> CaseResult:
    """Write the channels (and label) of one validated case into ``staging_dir``; see the module docstring.

    Voxels of the reference grid outside a phase's field of view are filled with the reference phase's values
    (:func:`nnunet_mm.conversion.coverage.fill_uncovered`), and the coverage is recorded (the warnings are logged
    by :func:`convert_with_summary`, in the main process)."""
    images_dir = staging_dir / ("imagesTr" if case.is_training else "imagesTs")
    labels = label_dict(label_names)
    reference = read_image(case.phase_files[0])
    write_image(reference, images_dir / f"{case.case_id}_0000{FILE_ENDING}")
    label_array = counts = None
    if case.label_file is not None:
        label_array = _write_label(case, reference, staging_dir)
        counts = tuple(int(c) for c in np.bincount(label_array.ravel(), minlength=len(label_names) + 1))
    qa = _CaseQa(reference, label_array) if qa_figures else None

    coverage: dict[str, PhaseCoverageRecord] = {}
    for index in range(1, len(case.phase_files)):
        phase = phase_names[index]
        moving = read_image(case.phase_files[index])
        transform, resampled, registered = _align_phase(case, index, phase, reference, moving, registration)
        covered = field_of_view(moving, reference, transform)
        write_image(fill_uncovered(resampled if registered is None else registered, reference, covered),
                    images_dir / f"{case.case_id}_{index:04d}{FILE_ENDING}")
        mask_name = None
        if not covered.all():
            mask_name = f"{COVERAGE_MASK_FOLDER}/{case.case_id}_{index:04d}{FILE_ENDING}"
            _write_coverage_mask(covered, reference, staging_dir, mask_name)
        coverage[phase] = PhaseCoverageRecord(index, str(case.phase_files[index]),
                                              measure_coverage(covered, label_array, labels), mask_name)
        if transform is not None:
            transform_file = staging_dir / QA_FOLDER / "transforms" / f"{case.case_id}_{phase}.tfm"
            transform_file.parent.mkdir(parents=True, exist_ok=True)
            sitk.WriteTransform(transform, str(transform_file))
        if qa is not None:
            qa.add_phase(phase, case.phase_files[index], moving, resampled, registered, transform, covered)

    qa_entry = None if qa is None else qa.finish(staging_dir / QA_FOLDER / f"{case.case_id}.png", case=case,
                                                 phase_names=phase_names, registered=registration != "none")
    return CaseResult(case.case_id, case.is_training, tuple(reference.GetSpacing()), counts, qa_entry, coverage)


# ----------------------------------------------------------------------------------------------------------------
# the whole dataset

def _check_arguments(source_dir: Path, *, phases: Sequence[str], label_name: str, label_names: Sequence[str],
                     register: str, num_processes: int) -> None:
    """The checks of this converter's own arguments (the shared ones are :func:`prepare_output`'s)."""
    if not source_dir.exists():
        raise FileNotFoundError(f"{source_dir}: source folder not found.")
    if not (source_dir.is_dir() or is_archive(source_dir)):
        raise ValueError(f"{source_dir}: neither a folder nor an archive (.zip, .tar, .tar.gz, ...); expected a folder "
                         f"with one sub-folder per case, or an archive of it.")
    names = [*phases, label_name]
    if not phases or any(not n or "/" in n or "\\" in n for n in names):
        raise ValueError(f"phases and label_name must be non-empty file stems, got phases {list(phases)} and "
                         f"label_name {label_name!r}.")
    lowered = [n.lower() for n in names]
    if len(set(lowered)) != len(lowered):
        raise ValueError(f"phase names and the label name must differ (ignoring case), got phases {list(phases)} "
                         f"and label_name {label_name!r}.")
    if not label_names or len({n.lower() for n in label_names}) != len(label_names) or \
            any(not n or n.lower() == "background" for n in label_names):
        raise ValueError(f"label_names must be distinct, non-empty foreground names (background is implicit), got "
                         f"{list(label_names)}.")
    if len(label_names) > 255:
        raise ValueError(f"at most 255 foreground labels are supported, got {len(label_names)}.")
    if register not in REGISTRATION_CHOICES:
        raise ValueError(f"register must be one of {list(REGISTRATION_CHOICES)}, got {register!r}.")
    if num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}.")


def _summarize(results: Sequence[CaseResult], *, output_dir: Path, phase_names: Sequence[str],
               label_names: Sequence[str], registration: str, qa_dir: Path | None) -> ConversionSummary:
    labels = label_dict(label_names)
    totals = np.zeros(len(labels), dtype=np.int64)
    for result in results:
        if result.label_voxel_counts is not None:
            totals += np.asarray(result.label_voxel_counts[:len(labels)], dtype=np.int64)
    spacings = np.array([result.spacing_xyz_mm for result in results])
    return ConversionSummary(
        output_dir=output_dir,
        num_training=sum(result.is_training for result in results),
        num_test=sum(not result.is_training for result in results),
        phase_names=tuple(phase_names),
        channel_names={str(i): CHANNEL_NAME for i in range(len(phase_names))},
        labels=labels,
        label_voxel_counts={name: int(totals[value]) for name, value in labels.items()},
        spacing_min_xyz_mm=tuple(float(v) for v in spacings.min(axis=0)),
        spacing_max_xyz_mm=tuple(float(v) for v in spacings.max(axis=0)),
        registration=registration,
        qa_dir=qa_dir,
        coverage=_coverage_summary(results, phase_names[1:]),
        coverage_file=output_dir / QA_FOLDER / COVERAGE_FILE,
    )


def _coverage_summary(results: Sequence[CaseResult], phase_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per non-reference phase, the lowest coverage over the cases (see :attr:`ConversionSummary.coverage`)."""
    summary = {}
    for phase in phase_names:
        coverages = [result.coverage[phase].coverage for result in results if phase in result.coverage]
        labelled = [c.labels[FOREGROUND] for c in coverages
                    if c.labels is not None and c.labels[FOREGROUND] is not None]
        summary[phase] = {"grid": min((c.grid for c in coverages), default=None),
                          "labelled": min(labelled, default=None),
                          "cases_not_covering_label": sum(bool(c.uncovered_labels) for c in coverages)}
    return summary


def _write_coverage_record(path: Path, results: Sequence[CaseResult], *, phase_names: Sequence[str],
                           registration: str) -> None:
    record = {
        "description": {
            "grid": "fraction of the reference grid inside the phase's field of view (after registration, if any)",
            "labels": "fraction of the reference label inside it: 'foreground' = label > 0, then each label by "
                      "name; null for a label without voxels in the case; labels is null for test cases",
            "mask": f"uint8 mask on the reference grid (1 = the phase's own voxel, 0 = filled), relative to "
                    f"{QA_FOLDER}/; null when the phase covers the whole grid",
            "fill": f"voxels outside a phase's field of view hold the reference phase '{phase_names[0]}' (its "
                    f"values at those voxels, as modality dropout's 'duplicate' mode fills a missing phase), not an "
                    f"invented value, so they add no air inside the body to nnU-Net's normalisation statistics",
            "warning": f"logged per case and phase when a label region is covered below "
                       f"{LABEL_COVERAGE_WARNING_BELOW:g} or the grid below {GRID_COVERAGE_WARNING_BELOW:g}",
        },
        "reference_phase": phase_names[0],
        "registration": registration,
        "cases": {result.case_id: {"training": result.is_training,
                                   "phases": {phase: entry.to_dict() for phase, entry in result.coverage.items()}}
                  for result in results},
    }
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _with_source_names(result: CaseResult, root: Path, source_dir: Path) -> CaseResult:
    """``result`` naming files of an archive as ``<archive>:<member>`` (the extracted copies are temporary)."""
    for entry in (result.qa or {}).get("phases", {}).values():
        entry["file"] = source_path_name(Path(entry["file"]), root, source_dir)
    coverage = {phase: dataclasses.replace(entry, file=source_path_name(Path(entry.file), root, source_dir))
                for phase, entry in result.coverage.items()}
    return dataclasses.replace(result, coverage=coverage)


def _warn_about_coverage(results: Sequence[CaseResult], *, reference_phase: str) -> None:
    """One warning line per case and phase whose field of view misses labelled voxels or most of the grid."""
    for result in results:
        for phase, entry in result.coverage.items():
            message = coverage_warning(entry.coverage, file=entry.file, case_id=result.case_id, phase=phase,
                                       reference_phase=reference_phase)
            if message is not None:
                logger.warning("%s", message)


def _write_qa_summary(path: Path, results: Sequence[CaseResult], summary: ConversionSummary) -> None:
    qa = {
        "metrics": {
            "ncc": "Pearson correlation of reference-phase and phase intensities on the reference grid "
                   "(1 = identical up to a linear intensity map)",
            "nmi": f"normalized mutual information (H(ref) + H(phase)) / H(ref, phase), {QA_HISTOGRAM_BINS}-bin "
                   f"joint histogram (1 = independent, 2 = one determines the other)",
            "region": f"label_bbox+{QA_MARGIN_MM:g}mm: bounding box of the reference label (> 0) grown by "
                      f"{QA_MARGIN_MM:g} mm per side; whole_image for cases without a label or with an empty one. "
                      f"Only voxels of the region inside the phase's field of view both before and after "
                      f"registration are compared, so that both numbers use the same voxels",
            "before": "phase resampled onto the reference grid as stored (scanner coordinates)",
            "after": "phase resampled after registration to the reference phase (null without registration)",
            "coverage": "fraction of reference voxels inside the phase's field of view (after registration, if any)",
        },
        "registration": summary.registration,
        "reference_phase": summary.phase_names[0],
        "cases": {result.case_id: result.qa for result in results},
        "conversion": {k: v for k, v in summary.to_dict().items() if k != "qa_dir"},
    }
    path.write_text(json.dumps(qa, indent=2) + "\n", encoding="utf-8")


def convert_with_summary(source_dir: Path, *, dataset_id: int = DATASET_ID, dataset_name: str = DATASET_NAME,
                         output_root: Path | None = None, phases: Sequence[str] = DEFAULT_PHASES,
                         label_name: str = DEFAULT_LABEL_NAME, label_names: Sequence[str] = DEFAULT_LABEL_NAMES,
                         register: Literal["none", "rigid", "affine"] = "none", qa_figures: bool = True,
                         overwrite: bool = False, num_processes: int = 1) -> ConversionSummary:
    """:func:`convert`, returning the :class:`ConversionSummary` instead of only the output folder."""
    source_dir = Path(source_dir)
    phases = [p.strip() for p in phases]
    label_names = [n.strip() for n in label_names]
    _check_arguments(source_dir, phases=phases, label_name=label_name, label_names=label_names, register=register,
                     num_processes=num_processes)
    final_dir = prepare_output(source_dir, dataset_id=dataset_id, dataset_name=dataset_name, output_root=output_root,
                               overwrite=overwrite)

    with source_folder(source_dir) as root:
        cases, problems = find_cases(root, phases=phases, label_name=label_name)
        case_problems = map_cases(partial(validate_case, label_names=label_names), cases, num_processes=num_processes,
                                  description=f"Dataset{dataset_id:03d} check")
        raise_if_problems(problems + [problem for per_case in case_problems for problem in per_case], source_dir)

        num_training = sum(case.is_training for case in cases)
        qa_dir = final_dir / QA_FOLDER if qa_figures else None
        with staged_dataset(final_dir, overwrite=overwrite) as staging:
            for sub_folder in ("imagesTr", "labelsTr", "imagesTs"):
                (staging / sub_folder).mkdir()
            (staging / QA_FOLDER).mkdir()  # the coverage record is written even without the QA figures
            results = map_cases(partial(convert_case, staging_dir=staging, phase_names=phases,
                                        label_names=label_names, registration=register, qa_figures=qa_figures),
                                cases, num_processes=num_processes, description=f"Dataset{dataset_id:03d} convert")
            results = [_with_source_names(result, root, source_dir) for result in results]
            _warn_about_coverage(results, reference_phase=phases[0])
            _write_coverage_record(staging / QA_FOLDER / COVERAGE_FILE, results, phase_names=phases,
                                   registration=register)
            summary = _summarize(results, output_dir=final_dir, phase_names=phases, label_names=label_names,
                                 registration=register, qa_dir=qa_dir)
            write_dataset_json(
                staging, channel_names=summary.channel_names, labels=summary.labels, num_training=num_training,
                file_ending=FILE_ENDING, dataset_name=final_dir.name,
                nnunet_mm_block={"reference_channel": 0, "phase_names": list(phases),
                                 "source": str(source_dir.resolve()), "registration": register,
                                 "converter": Path(__file__).stem,
                                 # phases of separate breath-holds stay misregistered after resampling
                                 **({"channel_acquisition": "separate"} if len(phases) > 1 else {})},
                description=f"Multi-phase liver CT ({', '.join(phases)}); every phase resampled onto the "
                            f"'{phases[0]}' grid (registration: {register}). All channels are named 'CT' for CT "
                            f"normalisation; the phases are listed in nnunet_mm.phase_names.",
            )
            if qa_figures:
                _write_qa_summary(staging / QA_FOLDER / "summary.json", results, summary)
    logger.info("converted %d training and %d test case(s) into %s", summary.num_training, summary.num_test,
                final_dir)
    return summary


def convert(source_dir: Path, *, dataset_id: int = DATASET_ID, dataset_name: str = DATASET_NAME,
            output_root: Path | None = None, phases: Sequence[str] = DEFAULT_PHASES,
            label_name: str = DEFAULT_LABEL_NAME, label_names: Sequence[str] = DEFAULT_LABEL_NAMES,
            register: Literal["none", "rigid", "affine"] = "none", qa_figures: bool = True, overwrite: bool = False,
            num_processes: int = 1) -> Path:
    """Convert a folder of multi-phase liver cases into ``<output_root>/Dataset<id>_<name>`` and return that folder;
    the other arguments and the errors are those of every converter (:mod:`nnunet_mm.dataset_conversion`).

    Args:
        source_dir: folder with one sub-folder per case (see the module docstring), or a ``.zip``/``.tar``/
            ``.tar.gz`` archive of it; only read, never modified. Symbolic links leading outside it are refused.
        phases: file stems of the phases; the first is the reference (channel 0, the grid of every channel and of
            the label).
        label_name: file stem of the label image; cases without it are test cases (``imagesTs``).
        label_names: names of the foreground label values 1, 2, ...
        register: ``"none"`` (resample in scanner coordinates), ``"rigid"`` or ``"affine"`` (register each phase
            to the reference phase with Mattes mutual information first, starting from scanner coordinates; the
            label is not used, so test cases are treated exactly like training cases).
        qa_figures: write ``nnunet_mm_qa/``: ``<case>.png``, one row per phase (reference first) with an axial and
            a coronal slice through the centre of the reference label (the centre of the image for test cases),
            the reference label contour overlaid in every panel, showing the phase after plain resampling and,
            when registering, after registration; ``summary.json`` with, per case and phase, the similarity to the
            reference phase (``ncc``: Pearson correlation, ``nmi``: normalized mutual information) inside the
            reference label's bounding box grown by 10 mm (the whole image for test cases), before and after
            registration, and the fraction of the reference grid the phase covers. The figures show each phase
            as resampled, before the fill of the voxels outside its field of view. The registration transforms
            are saved as ``nnunet_mm_qa/transforms/<case>_<phase>.tfm`` whenever registering, and the coverage
            record ``nnunet_mm_qa/coverage.json`` (see the module docstring) always, even without ``qa_figures``.
    """
    return convert_with_summary(source_dir, dataset_id=dataset_id, dataset_name=dataset_name,
                                output_root=output_root, phases=phases, label_name=label_name,
                                label_names=label_names, register=register, qa_figures=qa_figures,
                                overwrite=overwrite, num_processes=num_processes).output_dir


# ----------------------------------------------------------------------------------------------------------------
# command line

def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Convert multi-phase liver CT (one folder per case, labels on the reference phase) "
                               "into an nnU-Net raw dataset.")
    parser.add_argument("source_dir", type=Path,
                        help="folder (or .zip/.tar/.tar.gz archive of it) with one sub-folder per case")
    parser.add_argument("--phases", type=comma_list, default=list(DEFAULT_PHASES),
                        help="phase file stems, reference first (default: %(default)s)")
    parser.add_argument("--label-name", default=DEFAULT_LABEL_NAME, help="label file stem (default: %(default)s)")
    parser.add_argument("--labels", dest="label_names", metavar="LABELS", type=comma_list,
                        default=list(DEFAULT_LABEL_NAMES),
                        help="names of the foreground label values 1, 2, ... (default: %(default)s)")
    parser.add_argument("--register", choices=REGISTRATION_CHOICES, default="none",
                        help="register each phase to the reference before resampling (default: %(default)s)")
    parser.add_argument("--no-qa", dest="qa_figures", action="store_false",
                        help="skip the QA figures and summary.json")
    add_common_arguments(parser, dataset_id=DATASET_ID, dataset_name=DATASET_NAME)
    return parser


main = converter_main(convert_with_summary, build_parser)


if __name__ == "__main__":
    sys.exit(main())
