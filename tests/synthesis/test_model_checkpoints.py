"""The loss PNG of the synthesis models' training loops (autoencoder, diffusion, inpainter)."""
from __future__ import annotations

from nnunet_mm.synthesis.model_checkpoints import plot_losses
from figure_checks import capture_saved_figures, figure_texts, png_contrast


def test_a_two_step_run_draws_every_step_and_says_how_many(tmp_path, monkeypatch):
    figures = capture_saved_figures(monkeypatch)
    png = plot_losses({"reconstruction": [0.5, 0.25], "adversarial": [0.0, -0.5]}, tmp_path / "losses.png",
                      "autoencoder")
    (figure,) = figures
    reconstruction, adversarial = figure.axes
    assert [len(line.get_xdata()) for line in reconstruction.get_lines()] == [2]
    assert reconstruction.get_lines()[0].get_marker() == "o"
    assert {"autoencoder", "reconstruction (2 steps)", "adversarial (2 steps)"} <= set(figure_texts(figure))
    assert reconstruction.get_yscale() == "log" and adversarial.get_yscale() == "linear"
    assert png_contrast(png) > 0.05


def test_an_empty_history_says_so(tmp_path, monkeypatch):
    figures = capture_saved_figures(monkeypatch)
    plot_losses({}, tmp_path / "losses.png", "inpainter")
    assert "no steps yet" in figure_texts(figures[0])
