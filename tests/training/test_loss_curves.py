"""Loss curves for any run length: markers for short runs, a moving average for long ones, never an empty panel."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from nnunet_mm.training.loss_curves import MARKER_LIMIT, finish_loss_axis, plot_loss_curve


def _axis():
    return Figure().subplots()


def test_a_single_iteration_is_a_visible_marker():
    axis = _axis()
    assert plot_loss_curve(axis, [0.7], label="loss") == 1
    finish_loss_axis(axis, title="GAN", num_iterations=1)
    (line,) = axis.get_lines()
    assert line.get_marker() == "o" and list(line.get_ydata()) == [0.7]
    assert axis.get_title() == "GAN (1 iteration)" and axis.get_yscale() == "log"


def test_a_long_run_adds_its_moving_average_and_skips_diverged_values():
    axis = _axis()
    values = np.linspace(2.0, 1.0, 2 * MARKER_LIMIT)
    plot_loss_curve(axis, values, label="loss", smoothing_window=50)
    raw, mean = axis.get_lines()
    assert raw.get_marker() in (None, "None") and len(mean.get_xdata()) == len(values) - 49
    assert mean.get_label() == "loss (mean of 50)"
    other = _axis()
    assert plot_loss_curve(other, [1.0, float("nan"), 0.5]) == 2


def test_an_empty_or_non_positive_curve_keeps_a_readable_panel():
    empty = _axis()
    plot_loss_curve(empty, [])
    finish_loss_axis(empty, title="SimNet BCE", num_iterations=0)
    assert [t.get_text() for t in empty.texts] == ["no iterations yet"]
    signed = _axis()
    plot_loss_curve(signed, [0.5, -0.25])
    finish_loss_axis(signed, title="adversarial", num_iterations=2)
    assert signed.get_yscale() == "linear"
