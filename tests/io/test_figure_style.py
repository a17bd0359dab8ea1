"""Figures keep matplotlib's defaults even after nnU-Net's progress plot restyled the process."""
import matplotlib
import pytest

from nnunet_mm.io.figure_style import figure_style

matplotlib.use("Agg")


def test_figures_ignore_and_restore_a_global_seaborn_style():
    seaborn = pytest.importorskip("seaborn")
    before = dict(matplotlib.rcParams)
    try:
        seaborn.set(font_scale=2.5)  # what nnU-Net's logger does before every progress.png
        styled_font = matplotlib.rcParams["font.size"]
        assert styled_font > 12

        @figure_style()
        def font_size_inside() -> float:
            return matplotlib.rcParams["font.size"]

        assert font_size_inside() == matplotlib.rcParamsDefault["font.size"] == 10
        assert matplotlib.rcParams["font.size"] == styled_font  # the caller's style is back
    finally:
        matplotlib.rcParams.update(before)


def test_works_in_a_fresh_interpreter_without_pyplot():
    """``import matplotlib`` alone does not load ``matplotlib.style``; the helper must not rely on pyplot."""
    import subprocess
    import sys

    code = ("import sys\nfrom nnunet_mm.io.figure_style import figure_style\n"
            "with figure_style():\n    pass\nprint('matplotlib.pyplot' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
