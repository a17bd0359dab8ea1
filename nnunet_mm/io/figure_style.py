"""One look for every figure the plugin writes, independent of what ran before in the process.

nnU-Net's progress plot calls ``seaborn.set(font_scale=2.5)``, which changes matplotlib's settings for the whole
process: a figure drawn after training in the same process (benchmarks, ``--npz`` exports, QA PNGs) would get
2.5× fonts and a grey grid. :func:`figure_style` draws with matplotlib's defaults and restores the caller's settings.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def figure_style() -> Iterator[None]:
    """Matplotlib's default style for the figures drawn inside; usable as ``with`` block or decorator."""
    import matplotlib
    import matplotlib.style  # a submodule: not loaded by 'import matplotlib' alone

    with matplotlib.style.context("default"), matplotlib.rc_context({"savefig.facecolor": "white"}):
        yield
