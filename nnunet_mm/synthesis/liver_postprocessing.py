"""Post-processing of a liver-tumour segmentation: keep only tumour components that lie in the liver.

Diff4MMLiTS evaluates intrahepatic tumours and removes tumour components outside the (predicted) liver. A tumour
component (26-/8-connected) is kept when it touches the liver, i.e. when at least one of its voxels is the liver or
is face-adjacent to a liver voxel (the tumour label overrides the liver, so a tumour inside the liver is surrounded
by liver, not overlapping it). Removed components become background.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def keep_tumours_in_liver(segmentation: np.ndarray, liver_label: int, tumour_label: int) -> tuple[np.ndarray, int]:
    """Remove tumour components that do not touch the liver.

    Args:
        segmentation: integer label map (2D or 3D).
        liver_label: label value of the liver.
        tumour_label: label value of the tumour.

    Returns:
        (the cleaned label map, a new array of the same dtype; the number of removed components).
    """
    segmentation = np.asarray(segmentation)
    tumour = segmentation == tumour_label
    near_liver = ndimage.binary_dilation(segmentation == liver_label)
    components, count = ndimage.label(tumour, structure=np.ones((3,) * segmentation.ndim, bool))
    if count == 0:
        return segmentation.copy(), 0
    touching = np.unique(components[near_liver & tumour])
    keep = np.zeros(count + 1, bool)
    keep[touching] = True
    keep[0] = True
    cleaned = segmentation.copy()
    cleaned[~keep[components]] = 0
    return cleaned, int(count - len(touching))  # touching holds component ids only (>= 1)
