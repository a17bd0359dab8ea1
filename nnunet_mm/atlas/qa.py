"""QA figure of one multi-atlas case: the target, every warped atlas with its warped label, the fused prior."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from nnunet_mm.io.figure_style import figure_style


def _middle_slice(volume: np.ndarray, index: int) -> np.ndarray:
    return volume[index] if volume.ndim == 3 else volume


@figure_style()
def save_mas_figure(path: Path, target: np.ndarray, warped_images: np.ndarray, warped_labels: np.ndarray,
                    prior: np.ndarray, *, title: str = "") -> Path:
    """Write a PNG: row 1 target and warped atlases (label contours), row 2 the prior per class and the fused label.

    Args:
        path: output PNG.
        target: (*spatial) target image.
        warped_images: (K, *spatial) warped atlas images.
        warped_labels: (K, *spatial) hard warped atlas labels.
        prior: (C, *spatial) fused class probabilities (class 0 = background).
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    foreground = prior[1:].sum(0)
    index = int(np.argmax(foreground.reshape(foreground.shape[0], -1).sum(1))) if foreground.ndim == 3 else 0
    num_atlases = warped_images.shape[0]
    columns = max(num_atlases + 1, prior.shape[0])
    figure, axes = plt.subplots(2, columns, figsize=(2.4 * columns, 5.0), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    fused = prior.argmax(0)
    axes[0, 0].imshow(_middle_slice(target, index), cmap="gray")
    axes[0, 0].contour(_middle_slice(fused, index), levels=np.arange(0.5, prior.shape[0]), colors="yellow",
                       linewidths=0.7)
    axes[0, 0].set_title("target + fused label", fontsize=8)
    for k in range(num_atlases):
        axes[0, k + 1].imshow(_middle_slice(warped_images[k], index), cmap="gray")
        axes[0, k + 1].contour(_middle_slice(warped_labels[k], index), levels=np.arange(0.5, prior.shape[0]),
                               colors="red", linewidths=0.7)
        axes[0, k + 1].set_title(f"atlas {k} warped", fontsize=8)
    for c in range(1, prior.shape[0]):
        shown = axes[1, c - 1].imshow(_middle_slice(prior[c], index), cmap="magma", vmin=0, vmax=1)
        axes[1, c - 1].set_title(f"prior class {c}", fontsize=8)
    if prior.shape[0] > 1:
        figure.colorbar(shown, ax=axes[1, prior.shape[0] - 2], fraction=0.046)
    figure.suptitle(f"{title} (slice {index})" if title else f"slice {index}", fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
