"""Tiny MS-CMRSeg 2019 source trees: the official folder and file names, label values 200/500/600, and the three
sequences of a patient on grids of their own, each slightly displaced (paired, not co-registered).

The anatomy is a short-axis heart defined in physical coordinates: an LV blood pool (500) inside an LV myocardium
ring (200), an RV blood pool (600) beside it, a chest-wall fat ring and a spine, with sequence-specific intensities
(bright-blood bSSFP "C0", dark-myocardium LGE, dark-blood T2). Every sequence's label is drawn on its own image, as
in the challenge. All grids share one oblique short-axis orientation.

Layout written by :func:`write_mscmr` (``release=True`` adds the later ground-truth release)::

    C0LET2_nii45_for_challenge19/c0t2lge/patient{N}_{C0,LGE,T2}.nii.gz
    C0LET2_nii45_for_challenge19/c0gt/patient{N}_C0_manual.nii.gz      (some copies .nii, see PATIENTS)
    C0LET2_nii45_for_challenge19/t2gt/patient{N}_T2_manual.nii.gz
    C0LET2_nii45_for_challenge19/lgegt/patient{N}_LGE_manual.nii.gz
    C0LET2_gt_for_challenge19/{C0_manual_10,T2_manual_10,LGE_manual_35_TestData}/patient{N}_{SEQ}_manual.nii.gz
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

SEQUENCES = ("C0", "LGE", "T2")
MYO, LV, RV = 200, 500, 600  # the challenge's label values
TRAINING_FOLDER = "C0LET2_nii45_for_challenge19"
RELEASE_FOLDER = "C0LET2_gt_for_challenge19"
# where each sequence's labels live in the original download and in the later release
ORIGINAL_LABEL_FOLDER = {"C0": "c0gt", "T2": "t2gt", "LGE": "lgegt"}
RELEASE_LABEL_FOLDER = {"C0": "C0_manual_10", "T2": "T2_manual_10", "LGE": "LGE_manual_35_TestData"}


@dataclass(frozen=True)
class SequenceGrid:
    size_xyz: tuple[int, int, int]
    spacing_xyz_mm: tuple[float, float, float]
    shift_xyz_mm: tuple[float, float, float]  # displacement of the anatomy seen by this sequence (breath-hold)


# Sizes are tiny (<= 48 x 48 x 24); slice spacing and thickness differ per sequence as in the challenge description.
GRIDS = {
    "C0": SequenceGrid((40, 40, 8), (1.5, 1.5, 8.0), (0.0, 0.0, 0.0)),
    "LGE": SequenceGrid((48, 48, 10), (1.25, 1.25, 5.0), (3.0, -2.5, 0.0)),
    "T2": SequenceGrid((36, 36, 4), (1.75, 1.75, 12.0), (-2.0, 2.0, 0.0)),
}
# (fat, tissue, myocardium, blood, spine) intensities per sequence
INTENSITIES = {"C0": (500, 250, 120, 650, 350), "LGE": (320, 180, 60, 380, 260), "T2": (420, 200, 320, 90, 150)}
# short-axis planes are oblique to the scanner axes: 25 degrees about a tilted axis
_AXIS, _ANGLE = np.array([0.3, 1.0, 0.2]) / np.linalg.norm([0.3, 1.0, 0.2]), np.deg2rad(25.0)
HEART_CENTRE_MM = np.array([12.0, -30.0, 40.0])

# (original label sequences, released label sequences, sequences stored as .nii instead of .nii.gz) per patient
PATIENTS = {
    1: ({"C0", "T2", "LGE"}, set(), set()),
    12: ({"C0", "T2"}, {"LGE"}, {"C0_manual", "LGE"}),
    40: (set(), {"C0", "T2", "LGE"}, set()),
}


def direction_matrix() -> np.ndarray:
    """The 3 x 3 direction cosines (columns = image axes in scanner coordinates) shared by every sequence."""
    k = np.array([[0.0, -_AXIS[2], _AXIS[1]], [_AXIS[2], 0.0, -_AXIS[0]], [-_AXIS[1], _AXIS[0], 0.0]])
    return np.eye(3) + np.sin(_ANGLE) * k + (1.0 - np.cos(_ANGLE)) * k @ k


def grid_image(sequence: str) -> sitk.Image:
    """An empty image on ``sequence``'s grid, centred on the heart (before the sequence's shift)."""
    grid = GRIDS[sequence]
    direction = direction_matrix()
    extent = (np.array(grid.size_xyz) - 1) * np.array(grid.spacing_xyz_mm)
    origin = HEART_CENTRE_MM - direction @ (extent / 2)
    image = sitk.Image(list(grid.size_xyz), sitk.sitkUInt8)
    image.SetSpacing(grid.spacing_xyz_mm)
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    return image


def _local_points(image: sitk.Image, shift_xyz_mm) -> np.ndarray:
    """(Z, Y, X, 3) coordinates of every voxel centre in the heart's short-axis frame, anatomy moved by the shift."""
    size = image.GetSize()
    k, j, i = np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij")
    index = np.stack([i, j, k], axis=-1).astype(np.float64)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    physical = (index * np.array(image.GetSpacing())) @ direction.T + np.array(image.GetOrigin())
    return (physical - HEART_CENTRE_MM) @ direction - np.asarray(shift_xyz_mm)


def tissue_map(points: np.ndarray) -> np.ndarray:
    """0 air, 1 fat, 2 tissue, 3 LV myocardium, 4 LV blood, 5 RV blood, 6 spine at short-axis-frame points."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    radius = np.hypot(x - 4.0, y)
    long_axis = np.abs(z) <= 26.0
    tissue = np.zeros(points.shape[:-1], dtype=np.uint8)
    tissue[((x / 34.0) ** 2 + (y / 30.0) ** 2) <= 1] = 1
    tissue[((x / 29.0) ** 2 + (y / 25.0) ** 2) <= 1] = 2
    tissue[(np.hypot(x, y - 19.0) <= 4.0)] = 6
    rv = ((x + 12.0) / 7.0) ** 2 + (y / 11.0) ** 2 <= 1
    tissue[rv & long_axis & (np.abs(z) <= 20.0)] = 5
    tissue[(radius <= 11.0) & long_axis] = 3
    tissue[(radius <= 7.0) & long_axis & (np.abs(z) <= 22.0)] = 4
    return tissue


def render(sequence: str, *, shifted: bool = True, seed: int = 0,
           on: sitk.Image | None = None) -> tuple[sitk.Image, sitk.Image]:
    """int16 image and uint16 label (0/200/500/600) of ``sequence`` on its grid (or on the grid of ``on``)."""
    grid = on if on is not None else grid_image(sequence)
    shift = GRIDS[sequence].shift_xyz_mm if shifted else (0.0, 0.0, 0.0)
    tissue = tissue_map(_local_points(grid, shift))
    fat, soft, myo, blood, spine = INTENSITIES[sequence]
    values = np.array([0, fat, soft, myo, blood, blood, spine], dtype=np.float32)[tissue]
    values += np.random.default_rng(seed).normal(0.0, 8.0, values.shape).astype(np.float32)
    image = sitk.GetImageFromArray(np.clip(np.round(values), 0, None).astype(np.int16))
    image.CopyInformation(grid)
    label = sitk.GetImageFromArray(np.array([0, 0, 0, MYO, LV, RV, 0], dtype=np.uint16)[tissue])
    label.CopyInformation(grid)
    return image, label


def _ending(stem: str, nii_stems: set[str]) -> str:
    return ".nii" if stem in nii_stems else ".nii.gz"


def write_patient(root: Path, patient: int, *, release: bool = True, seed: int = 0) -> None:
    """Write the three sequences of ``patient`` and the labels :data:`PATIENTS` lists for it."""
    original, released, nii_stems = PATIENTS[patient]
    images_folder = root / TRAINING_FOLDER / "c0t2lge"
    for index, sequence in enumerate(SEQUENCES):
        image, label = render(sequence, seed=seed + 100 * patient + index)
        images_folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(images_folder / f"patient{patient}_{sequence}{_ending(sequence, nii_stems)}"))
        if sequence in original:
            folder = root / TRAINING_FOLDER / ORIGINAL_LABEL_FOLDER[sequence]
        elif sequence in released and release:
            folder = root / RELEASE_FOLDER / RELEASE_LABEL_FOLDER[sequence]
        else:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{sequence}_manual"
        sitk.WriteImage(label, str(folder / f"patient{patient}_{stem}{_ending(stem, nii_stems)}"))


def write_mscmr(root: Path, *, patients=tuple(PATIENTS), release: bool = True) -> Path:
    """Write the MS-CMRSeg layout for ``patients`` under ``root``; ``release`` adds ``C0LET2_gt_for_challenge19``."""
    for patient in patients:
        write_patient(root, patient, release=release)
    return root


def label_file(root: Path, patient: int, sequence: str) -> Path:
    """Where :func:`write_patient` put the label of ``sequence`` of ``patient`` (it must have one)."""
    original, released, nii_stems = PATIENTS[patient]
    stem = f"{sequence}_manual"
    folder = (root / TRAINING_FOLDER / ORIGINAL_LABEL_FOLDER[sequence] if sequence in original
              else root / RELEASE_FOLDER / RELEASE_LABEL_FOLDER[sequence])
    return folder / f"patient{patient}_{stem}{_ending(stem, nii_stems)}"


def image_file(root: Path, patient: int, sequence: str) -> Path:
    """Where :func:`write_patient` put the image of ``sequence`` of ``patient``."""
    nii_stems = PATIENTS[patient][2]
    return root / TRAINING_FOLDER / "c0t2lge" / f"patient{patient}_{sequence}{_ending(sequence, nii_stems)}"
