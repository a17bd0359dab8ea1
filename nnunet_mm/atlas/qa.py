"""QA figure of one multi-atlas case: the target, every warped atlas with its warped label, the fused prior."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nnunet_mm.io.figure_style import figure_style

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _middle_slice(volume: np.ndarray, index: int) -> np.ndarray:
    return volume[index] if volume.ndim == 3 else volume


def shown_slice(prior: np.ndarray) -> int:
    """The axial slice the figure shows: the one with the most fused foreground probability, the middle slice when
    the prior has no foreground at all (slice 0, the first of the volume, usually shows only air); 0 for 2D.

    Args:
        prior: (C, *spatial) fused class probabilities (class 0 = background).
    """
    if prior.ndim != 4:
        return 0
    foreground = prior[1:].reshape(prior.shape[0] - 1, prior.shape[1], -1).sum((0, 2))
    return int(np.argmax(foreground)) if foreground.max(initial=0) > 0 else prior.shape[1] // 2


def display_window(image_slice: np.ndarray, volume: np.ndarray) -> tuple[float, float]:
    """Grey-value window of one panel: the 1st-99th percentile of the slice's non-zero values (zero is the fill
    outside a warped atlas's field of view, which would otherwise take the window), widened to the whole volume's
    when the slice is constant, so that one bright outlier or an empty slice never turns the panel black."""
    for values in (image_slice[image_slice != 0], image_slice, volume[volume != 0], volume):
        values = values[np.isfinite(values)]
        if values.size:
            low, high = (float(v) for v in np.percentile(values, [1, 99]))
            if high > low:
                return low, high
    return 0.0, 1.0


@figure_style()
def save_mas_figure(path: Path, target: np.ndarray, warped_images: np.ndarray, warped_labels: np.ndarray,
                    prior: np.ndarray, *, title: str = "", class_names: Sequence[str] | None = None) -> Path:
    """Write a PNG: row 1 target and warped atlases (label contours), row 2 the prior per class.

    Every label contour has its class's colour, named in the legend; the title gives the axial slice shown.

    Args:
        path: output PNG.
        target: (*spatial) target image.
        warped_images: (K, *spatial) warped atlas images.
        warped_labels: (K, *spatial) hard warped atlas labels.
        prior: (C, *spatial) fused class probabilities (class 0 = background).
        title: figure title.
        class_names: the name of every class, background first (default ``"class c"``).
    """
    figure = mas_figure(target, warped_images, warped_labels, prior, title=title, class_names=class_names)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    return path


@figure_style()
def mas_figure(target: np.ndarray, warped_images: np.ndarray, warped_labels: np.ndarray, prior: np.ndarray, *,
               title: str = "", class_names: Sequence[str] | None = None) -> Figure:
    """The figure :func:`save_mas_figure` writes, as a matplotlib ``Figure`` (not registered with pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    num_classes = prior.shape[0]
    names = list(class_names) if class_names is not None else [f"class {c}" for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names {names} for a prior with {num_classes} classes (background "
                         f"first).")
    colours = [f"C{(c - 1) % 10}" for c in range(num_classes)]  # class c's contour colour (c >= 1)
    index = shown_slice(prior)
    num_atlases = warped_images.shape[0]
    columns = max(num_atlases + 1, num_classes - 1, 1)
    figure = Figure(figsize=(2.4 * columns, 5.4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, columns, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")

    def image_panel(ax, volume: np.ndarray, label: np.ndarray, panel_title: str) -> None:
        image = _middle_slice(volume, index)
        low, high = display_window(image, volume)
        ax.imshow(image, cmap="gray", vmin=low, vmax=high)
        label_slice = _middle_slice(label, index)
        for c in range(1, num_classes):
            if (label_slice == c).any():
                ax.contour(label_slice == c, levels=[0.5], colors=colours[c], linewidths=0.8)
        ax.set_title(panel_title, fontsize=8)

    image_panel(axes[0, 0], target, prior.argmax(0), "target + fused label")
    for k in range(num_atlases):
        image_panel(axes[0, k + 1], warped_images[k], warped_labels[k], f"atlas {k} warped + its label")
    shown = None
    for c in range(1, num_classes):
        shown = axes[1, c - 1].imshow(_middle_slice(prior[c], index), cmap="magma", vmin=0, vmax=1)
        axes[1, c - 1].set_title(f"prior: {names[c]}", fontsize=8)
    if shown is not None:
        figure.colorbar(shown, ax=axes[1, num_classes - 2], fraction=0.046, label="probability")
    handles = [Line2D([], [], color=colours[c], label=names[c]) for c in range(1, num_classes)]
    if handles:
        figure.legend(handles=handles, loc="lower right", fontsize=8, title="label contours", title_fontsize=8)
    where = f"axial slice {index} of {target.shape[0]}" if target.ndim == 3 else "2D image"
    figure.suptitle(f"{title} ({where})" if title else where, fontsize=9)
    figure.tight_layout()
    return figure
