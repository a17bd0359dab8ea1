"""Loss curves that stay readable for any run length, for the PNGs of the plugin's own training loops (the CLTN GAN,
the synthesis models, the learned multi-atlas networks).

A moving average alone draws nothing for a short run (three iterations averaged over 50 give one point, and a line
through one point is invisible), so every value is drawn as a marker while there are few, and the panel title says
how many iterations it shows. Draw inside :func:`nnunet_mm.io.figure_style.figure_style`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

MARKER_LIMIT = 200  # up to this many values each one is drawn as a marker; beyond, a thin line


def plot_loss_curve(axis: Axes, values: Sequence[float], *, label: str | None = None,
                    smoothing_window: int = 50) -> int:
    """Draw one loss curve on a matplotlib axis: every value against its iteration (counted from 1), as markers up
    to :data:`MARKER_LIMIT` values, and its moving average over ``smoothing_window`` iterations (> 1) once the run
    is at least two windows long.

    Non-finite values (a diverged step) are left out of the curve.

    Args:
        axis: where to draw.
        values: the loss of every iteration, in order.
        label: legend entry (the moving average gets ``"<label> (mean of N)"``).
        smoothing_window: iterations per moving-average window.

    Returns:
        How many values were drawn.
    """
    values = np.asarray(values, dtype=float)
    iterations = np.arange(1, len(values) + 1)
    finite = np.isfinite(values)
    if not finite.any():
        return 0
    short = len(values) <= MARKER_LIMIT
    smoothed = smoothing_window > 1 and len(values) >= 2 * smoothing_window and finite.all()
    raw = axis.plot(iterations[finite], values[finite], marker="o" if short else None, markersize=3,
                    linewidth=0.8, alpha=0.35 if smoothed else 1.0, label=None if smoothed else label)
    if smoothed:  # the legend names the moving average; the raw values are its faint background
        smooth = np.convolve(values, np.ones(smoothing_window) / smoothing_window, mode="valid")
        axis.plot(iterations[smoothing_window - 1:], smooth, linewidth=1.6, color=raw[0].get_color(),
                  label=None if label is None else f"{label} (mean of {smoothing_window})")
    return int(finite.sum())


def finish_loss_axis(axis: Axes, *, title: str, num_iterations: int, xlabel: str = "iteration") -> None:
    """Title (with the number of iterations), axis labels, a log scale when every drawn value is positive, the
    legend when curves are labelled, and a note instead of an empty panel when nothing was drawn."""
    from matplotlib.ticker import MaxNLocator

    axis.set_title(f"{title} ({num_iterations} {xlabel}{'' if num_iterations == 1 else 's'})")
    axis.set_xlabel(xlabel)
    axis.set_ylabel("loss")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    drawn = [np.asarray(line.get_ydata(), dtype=float) for line in axis.get_lines()]
    if not drawn or not any(d.size for d in drawn):
        axis.text(0.5, 0.5, f"no {xlabel}s yet", ha="center", va="center", transform=axis.transAxes)
        return
    if all(np.all(d > 0) for d in drawn):
        axis.set_yscale("log")
    if any(not line.get_label().startswith("_") for line in axis.get_lines()):
        axis.legend(fontsize=8)
