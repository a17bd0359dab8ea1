"""What the figure tests check on every PNG the plugin writes: the figures a function saves (captured as it saves
them, so titles, legends and drawn artists can be read instead of pixels), their text, and a PNG that is not blank."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def capture_saved_figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every matplotlib ``Figure`` saved from now on in this test, in order (pyplot's ``close`` leaves them
    readable)."""
    from matplotlib.figure import Figure

    saved: list = []
    original = Figure.savefig

    def record(figure, *args, **kwargs):
        saved.append(figure)
        return original(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", record)
    return saved


def figure_texts(figure) -> list[str]:
    """Every text of a figure: its title, axis titles and labels, legend entries and free texts."""
    texts = [t.get_text() for t in figure.texts]
    for legend in figure.legends:
        texts += [t.get_text() for t in legend.get_texts()]
    for axis in figure.axes:
        texts += [axis.get_title(), axis.get_xlabel(), axis.get_ylabel(), *(t.get_text() for t in axis.texts)]
        if axis.get_legend() is not None:
            texts += [t.get_text() for t in axis.get_legend().get_texts()]
    return [text for text in texts if text]


def png_contrast(png: Path) -> float:
    """Standard deviation of the PNG's RGB values in [0, 1] (a blank page is 0)."""
    from matplotlib.image import imread

    return float(np.asarray(imread(str(png)))[..., :3].std())
