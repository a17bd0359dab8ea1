"""synth-preview's grid of real and synthetic tumours: rows name case and slice, the legend names the outlines, and
the case loops show a progress bar."""
from __future__ import annotations

import numpy as np
import torch

from nnunet_mm.synthesis.figures import (TumourExample, real_tumour_examples, save_synthesis_grid,
                                         synthesis_grid_figure, synthetic_tumour_examples)
from nnunet_mm.synthesis.masks import TumourMaskSettings
from figure_checks import figure_texts, png_contrast


def _cases(count: int = 3) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(case_id, images (2, 8, 40, 40), label) with a liver (1) on slices 2-6 and a tumour (2) largest on slice 4."""
    rng = np.random.default_rng(0)
    cases = []
    for index in range(count):
        label = np.zeros((8, 40, 40), np.int16)
        label[2:7, 6:34, 6:34] = 1
        label[3:6, 18:22, 18:22] = 2
        label[4, 16:24, 16:24] = 2
        images = rng.normal(0.0, 0.2, (2, 8, 40, 40)).astype(np.float32) + (label > 0)
        cases.append((f"case{index}", images, label))
    return cases


class RecordingBar:
    """Stands in for tqdm: records its description and the last postfix, passes the cases through."""

    made: list["RecordingBar"] = []

    def __init__(self, iterable, **kwargs):
        self.iterable, self.kwargs, self.postfix = iterable, kwargs, kwargs.get("postfix")
        RecordingBar.made.append(self)

    def __iter__(self):
        return iter(self.iterable)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix = text


def test_the_case_loops_show_a_progress_bar_and_rows_name_the_slice(monkeypatch):
    monkeypatch.setattr("tqdm.tqdm", RecordingBar)
    RecordingBar.made = []
    real = real_tumour_examples(_cases(), tumour_label=2, count=2)
    synthetic = synthetic_tumour_examples(_cases(), lambda images, masks, generator: images + masks.float(),
                                          TumourMaskSettings(), (3.0, 1.5, 1.5), liver_label=1, count=2,
                                          generator=torch.Generator().manual_seed(0))
    assert [e.title for e in real] == ["real case0 z4", "real case1 z4"]
    assert all(e.title.startswith(f"synthetic in case{i} z") for i, e in enumerate(synthetic))
    assert [bar.kwargs["desc"] for bar in RecordingBar.made] == ["synth-preview: real tumours",
                                                                 "synth-preview: synthetic tumours"]
    assert all(bar.kwargs["disable"] is None and bar.postfix == "found 2/2" for bar in RecordingBar.made)


def test_the_grid_has_phase_titles_row_titles_and_a_legend_for_both_outlines(tmp_path):
    mask = np.zeros((16, 16), bool)
    mask[5:10, 5:10] = True
    images = np.stack([np.where(mask, 2.0, 0.5), np.where(mask, -1.0, 0.5)]).astype(np.float32)
    real = [TumourExample(images, mask, "real case0 z4")]
    synthetic = [TumourExample(images * 0.9, mask, "synthetic in case1 z3")]
    figure = synthesis_grid_figure(real, synthetic, ["pv", "art"])
    texts = figure_texts(figure)
    assert {"pv", "art", "real case0 z4", "synthetic in case1 z3", "real tumour (1)", "synthetic tumour (1)"} \
        <= set(texts)
    assert "real and synthetic tumours per phase" in figure.get_suptitle()
    assert all(len(axis.collections) == 1 for axis in figure.axes)  # every panel outlines its tumour
    assert png_contrast(save_synthesis_grid(real, synthetic, ["pv", "art"], tmp_path / "grid.png")) > 0.1
