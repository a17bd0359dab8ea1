"""PNG grid of synthetic tumours next to real ones, one column per phase.

Rows are tumours: first real tumours of the preprocessed training cases (an axial slice through the tumour's
centre), then synthetic ones painted by a synthesizer into the healthy liver of other samples. Each panel is a crop
around the tumour with its mask outlined; every phase column uses one grey window for all rows (1–99 % of the
shown liver and tumour voxels), so real and synthetic contrasts compare directly.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy import ndimage

from nnunet_mm.synthesis.base import TumorSynthesizer
from nnunet_mm.synthesis.masks import TumourMaskSettings, sample_tumour_masks
from nnunet_mm.io.figure_style import figure_style

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CROP_VOXELS = 48


@dataclass
class TumourExample:
    """One row of the grid: ``images`` (P, Y, X) normalised intensities, ``mask`` (Y, X) bool, and a title."""

    images: np.ndarray
    mask: np.ndarray
    title: str


def _crop_around(images: np.ndarray, mask: np.ndarray, size: int = CROP_VOXELS) -> tuple[np.ndarray, np.ndarray]:
    centre = [int(round(c)) for c in ndimage.center_of_mass(mask)]
    box = []
    for length, middle in zip(mask.shape, centre):
        start = int(min(max(middle - size // 2, 0), max(length - size, 0)))
        box.append(slice(start, start + min(size, length)))
    return images[(slice(None), *box)], mask[tuple(box)]


def _axial_slice_through(mask: np.ndarray) -> int:
    return int(np.argmax(mask.reshape(mask.shape[0], -1).sum(1)))


def _progress(cases: Iterable, description: str, count: int):
    """A progress bar over the cases read for the preview (each one is a whole preprocessed case, seconds for a
    large CT), hidden when stderr is not a terminal; :func:`_found` shows how many examples were found so far."""
    from tqdm import tqdm

    return tqdm(cases, desc=f"synth-preview: {description}", unit="case", disable=None, postfix=f"found 0/{count}")


def _found(progress, examples: list, count: int) -> None:
    progress.set_postfix_str(f"found {len(examples)}/{count}", refresh=False)


def real_tumour_examples(cases: Iterable[tuple[str, np.ndarray, np.ndarray]], tumour_label: int,
                         count: int) -> list[TumourExample]:
    """Up to ``count`` real tumours (largest component per case), from ``(case_id, images, label)`` triples; a 3D
    case is shown through the axial slice with most tumour, named in the row title (``real case z12``)."""
    examples: list[TumourExample] = []
    with _progress(cases, "real tumours", count) as progress:
        for case_id, images, label in progress:
            components, number = ndimage.label(label == tumour_label)
            if number == 0:
                continue
            sizes = ndimage.sum_labels(np.ones_like(components), components, range(1, number + 1))
            mask = components == 1 + int(np.argmax(sizes))
            where = ""
            if mask.ndim == 3:
                k = _axial_slice_through(mask)
                images, mask, where = images[:, k], mask[k], f" z{k}"
            crop_images, crop_mask = _crop_around(images, mask)
            examples.append(TumourExample(crop_images, crop_mask, f"real {case_id}{where}"))
            _found(progress, examples, count)
            if len(examples) == count:
                break
    return examples


def synthetic_tumour_examples(cases: Iterable[tuple[str, np.ndarray, np.ndarray]], synthesizer: TumorSynthesizer,
                              mask_settings: TumourMaskSettings, spacing_mm: Sequence[float], liver_label: int,
                              count: int, generator: torch.Generator) -> list[TumourExample]:
    """Up to ``count`` synthetic tumours, one per case, painted into the case's healthy liver.

    3D cases are synthesised in 3D (the whole preprocessed case) and shown through the slice with most tumour; with
    a 2D configuration (two spacing values) the axial slice with most liver is synthesised in 2D. The row title
    names the slice (``synthetic in case z12``).
    """
    examples: list[TumourExample] = []
    device = generator.device
    with _progress(cases, "synthetic tumours", count) as progress:
        for case_id, images, label in progress:
            where = ""
            if len(spacing_mm) == label.ndim - 1:
                k = _axial_slice_through(label == liver_label)
                images, label, where = images[:, k], label[k], f" z{k}"
            liver = torch.from_numpy(label == liver_label)[None, None].to(device)
            if liver.sum() < 16:
                continue
            mask = sample_tumour_masks(liver, spacing_mm, mask_settings, generator)
            if not mask.any():
                continue
            painted = synthesizer(torch.from_numpy(images)[None].float().to(device), mask, generator)[0].cpu().numpy()
            mask_np = mask[0, 0].cpu().numpy()
            if mask_np.ndim == 3:
                k = _axial_slice_through(mask_np)
                painted, mask_np, where = painted[:, k], mask_np[k], f" z{k}"
            crop_images, crop_mask = _crop_around(painted, mask_np)
            examples.append(TumourExample(crop_images, crop_mask, f"synthetic in {case_id}{where}"))
            _found(progress, examples, count)
            if len(examples) == count:
                break
    return examples


REAL_COLOUR, SYNTHETIC_COLOUR = "orange", "cyan"


@figure_style()
def save_synthesis_grid(real: Sequence[TumourExample], synthetic: Sequence[TumourExample],
                        phase_names: Sequence[str], png: Path) -> Path:
    """Write the grid (rows: real, then synthetic tumours; columns: phases) as a PNG (:func:`synthesis_grid_figure`).

    Raises:
        ValueError: no example at all, or examples whose phase count differs from ``phase_names``.
    """
    figure = synthesis_grid_figure(real, synthetic, phase_names)
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=110)
    return png


@figure_style()
def synthesis_grid_figure(real: Sequence[TumourExample], synthetic: Sequence[TumourExample],
                          phase_names: Sequence[str]) -> Figure:
    """The grid as a matplotlib ``Figure`` (not registered with pyplot): one column per phase (titled with its
    name), one row per tumour (titled with case and slice), tumour outlines in the colours the legend names.

    Raises:
        ValueError: no example at all, or examples whose phase count differs from ``phase_names``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    rows = list(real) + list(synthetic)
    if not rows:
        raise ValueError("no tumour to show: neither real tumours nor synthetic ones were found.")
    for row in rows:
        if row.images.shape[0] != len(phase_names):
            raise ValueError(f"{row.title}: {row.images.shape[0]} phases, but {len(phase_names)} phase names "
                             f"{list(phase_names)}.")
    windows = [np.percentile(np.concatenate([r.images[p].ravel() for r in rows]), (1, 99))
               for p in range(len(phase_names))]
    figure = Figure(figsize=(2.2 * len(phase_names) + 1.2, 2.2 * len(rows) + 0.6))
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(rows), len(phase_names), squeeze=False)
    for r, row in enumerate(rows):
        for p, name in enumerate(phase_names):
            axis = axes[r, p]
            axis.imshow(row.images[p], cmap="gray", vmin=windows[p][0], vmax=windows[p][1])
            if row.mask.any():
                axis.contour(row.mask.astype(float), levels=[0.5], linewidths=0.6,
                             colors=REAL_COLOUR if r < len(real) else SYNTHETIC_COLOUR)
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(name, fontsize=9)
            if p == 0:
                axis.set_ylabel(row.title, fontsize=7)
    handles = [Line2D([], [], color=REAL_COLOUR, label=f"real tumour ({len(real)})"),
               Line2D([], [], color=SYNTHETIC_COLOUR, label=f"synthetic tumour ({len(synthetic)})")]
    figure.legend(handles=handles, loc="upper right", fontsize=7)
    figure.suptitle("real and synthetic tumours per phase\n(axial crops; rows: case and slice z)", fontsize=9,
                    x=0.02, ha="left")
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    return figure
