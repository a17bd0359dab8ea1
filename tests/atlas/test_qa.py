"""The multi-atlas QA figure: a readable window on every panel, the slice it shows, class names for the contours."""
from __future__ import annotations

import numpy as np
import pytest

from nnunet_mm.atlas.qa import display_window, mas_figure, save_mas_figure, shown_slice
from figure_checks import figure_texts, png_contrast


def _case(num_atlases: int = 2, shape=(6, 24, 24)) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A target with a bright square (the liver, largest on slice 3) and a small spot (the tumour), atlases alike."""
    rng = np.random.default_rng(0)
    target = rng.normal(100.0, 5.0, shape).astype(np.float32)
    label = np.zeros(shape, np.int64)
    label[2:5, 6:18, 6:18] = 1
    label[3, 4:20, 4:20] = 1  # the largest cross-section
    label[3, 10:13, 10:13] = 2
    target[label == 1] += 80.0
    prior = np.stack([(label == c).astype(np.float32) for c in range(3)])
    warped_images = np.stack([np.roll(target, k, axis=2) for k in range(num_atlases)])
    warped_labels = np.stack([np.roll(label, k, axis=2) for k in range(num_atlases)])
    return target, warped_images, warped_labels, prior


def test_an_outlier_voxel_does_not_turn_a_panel_black():
    """matplotlib's default window spans min to max: one metal-bright voxel left everything else black."""
    target, warped_images, warped_labels, prior = _case()
    target[3, 0, 0] = 1e6
    warped_images[1][warped_images[1] > 0] *= 0  # an atlas warped entirely outside its field of view: zeros
    figure = mas_figure(target, warped_images, warped_labels, prior)
    target_panel = figure.axes[0].images[0]
    assert target_panel.norm.vmax < 500 and target_panel.norm.vmin > 50
    shown = target_panel.norm(np.asarray(target_panel.get_array()))
    assert np.std(shown) > 0.1  # grey values spread over the window, not one black panel
    assert display_window(np.zeros((4, 4)), np.zeros((2, 4, 4))) == (0.0, 1.0)


def test_the_figure_names_the_slice_and_the_classes_of_every_contour(tmp_path):
    target, warped_images, warped_labels, prior = _case()
    figure = mas_figure(target, warped_images, warped_labels, prior, title="case_003: 2 atlases, local",
                        class_names=["background", "liver", "tumour"])
    texts = figure_texts(figure)
    assert "case_003: 2 atlases, local (axial slice 3 of 6)" in texts
    assert {"liver", "tumour", "prior: liver", "prior: tumour", "target + fused label"} <= set(texts)
    assert len(figure.axes[0].collections) == 2  # a contour per class on the target
    png = save_mas_figure(tmp_path / "qa" / "case_003.png", target, warped_images, warped_labels, prior)
    assert png_contrast(png) > 0.1


def test_a_prior_without_foreground_shows_the_middle_slice_not_the_first():
    target, warped_images, warped_labels, prior = _case()
    empty = np.concatenate([np.ones_like(prior[:1]), np.zeros_like(prior[1:])])
    assert shown_slice(prior) == 3 and shown_slice(empty) == 3
    with pytest.raises(ValueError, match="2 class names"):
        mas_figure(target, warped_images, warped_labels, prior, class_names=["background", "liver"])
