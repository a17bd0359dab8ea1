"""Tiny multi-phase liver cases in the mmLiTs-style layout, built directly with SimpleITK, and the checks every
converter test shares (input untouched, nothing written, nnU-Net's dataset integrity check), all handed to the
tests through the ``kit`` fixture.

The anatomy is defined in physical (scanner) coordinates, so every phase, whatever its grid, shows the same
patient: a body ellipsoid, a spine cylinder, a liver ellipsoid and one tumour sphere, with phase-specific HU.
"""
from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_mm.conversion import ConversionError
from nnunet_mm.io import write_dicom_series

PHASES = ("pv", "art", "del", "nc")
# (liver, tumour) HU per phase, roughly the table of docs/datasets.md §4
PHASE_HU = {"pv": (115, 70), "art": (80, 140), "del": (95, 80), "nc": (55, 40)}

# Reference (pv) grid: 24 x 24 x 12 voxels (x, y, z) of 1.5 x 1.5 x 3 mm, centred on the origin.
REFERENCE_GRID = {"size": (24, 24, 12), "spacing": (1.5, 1.5, 3.0), "origin": (-17.25, -17.25, -16.5),
                  "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)}
# Every other phase on a grid of its own: coarser, finer, and one with a flipped x axis.
PHASE_GRIDS = {
    "pv": REFERENCE_GRID,
    "art": {"size": (18, 18, 10), "spacing": (2.0, 2.0, 4.0), "origin": (-17.0, -17.0, -18.0),
            "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)},
    "del": {"size": (30, 30, 14), "spacing": (1.2, 1.2, 2.5), "origin": (-17.4, -17.4, -16.25),
            "direction": (1, 0, 0, 0, 1, 0, 0, 0, 1)},
    "nc": {"size": (20, 20, 9), "spacing": (1.8, 1.8, 4.0), "origin": (17.1, -17.1, -16.0),
           "direction": (-1, 0, 0, 0, 1, 0, 0, 0, 1)},
}

LIVER_CENTRE_MM, LIVER_SEMI_AXES_MM = np.array([-3.0, 0.0, 0.0]), np.array([10.0, 9.0, 11.0])
TUMOUR_CENTRE_MM, TUMOUR_RADIUS_MM = np.array([-4.0, 2.0, 1.0]), 4.0


def make_grid(grid: dict) -> sitk.Image:
    image = sitk.Image([int(s) for s in grid["size"]], sitk.sitkUInt8)
    image.SetSpacing([float(v) for v in grid["spacing"]])
    image.SetOrigin([float(v) for v in grid["origin"]])
    image.SetDirection([float(v) for v in grid["direction"]])
    return image


def physical_points(grid_image: sitk.Image) -> np.ndarray:
    """(Z, Y, X, 3) physical x, y, z coordinates of every voxel centre."""
    size = grid_image.GetSize()
    k, j, i = np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij")
    index = np.stack([i, j, k], axis=-1).astype(np.float64)
    direction = np.array(grid_image.GetDirection()).reshape(3, 3)
    return (index * np.array(grid_image.GetSpacing())) @ direction.T + np.array(grid_image.GetOrigin())


def tissue_map(points: np.ndarray, shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """0 air, 1 body, 2 spine, 3 liver, 4 tumour at the given physical points (anatomy moved by ``shift_mm``)."""
    p = points - np.asarray(shift_mm)
    tissue = np.zeros(points.shape[:-1], dtype=np.uint8)
    tissue[(((p - [0.0, 0.0, 0.0]) / [16.0, 14.0, 30.0]) ** 2).sum(-1) <= 1] = 1
    tissue[((p[..., 0]) ** 2 + (p[..., 1] - 10.0) ** 2) <= 2.5 ** 2] = 2
    tissue[(((p - LIVER_CENTRE_MM) / LIVER_SEMI_AXES_MM) ** 2).sum(-1) <= 1] = 3
    tissue[((p - TUMOUR_CENTRE_MM) ** 2).sum(-1) <= TUMOUR_RADIUS_MM ** 2] = 4
    return tissue


def render_phase(phase: str, grid: dict | None = None, *, shift_mm=(0.0, 0.0, 0.0), seed: int = 0) -> sitk.Image:
    """int16 HU image of ``phase`` on ``grid`` (default: the phase's own grid)."""
    grid_image = make_grid(grid or PHASE_GRIDS[phase])
    tissue = tissue_map(physical_points(grid_image), shift_mm)
    liver_hu, tumour_hu = PHASE_HU[phase]
    hu = np.array([-1000, 50, 700, liver_hu, tumour_hu], dtype=np.float32)[tissue]
    hu += np.random.default_rng(seed).normal(0.0, 5.0, hu.shape).astype(np.float32)
    image = sitk.GetImageFromArray(np.round(hu).astype(np.int16))
    image.CopyInformation(grid_image)
    return image


def render_label(grid: dict | None = None) -> sitk.Image:
    """uint8 label (1 liver, 2 tumour) on the reference grid."""
    grid_image = make_grid(grid or REFERENCE_GRID)
    tissue = tissue_map(physical_points(grid_image))
    label = np.select([tissue == 3, tissue == 4], [1, 2], 0).astype(np.uint8)
    image = sitk.GetImageFromArray(label)
    image.CopyInformation(grid_image)
    return image


def write_case(source: Path, case_folder: str, *, labelled: bool = True, phases=PHASES,
               dicom_phases: tuple[str, ...] = (), shifts: dict | None = None, seed: int = 0) -> Path:
    """Write one case folder; phases in ``dicom_phases`` become DICOM series folders, the rest ``.nii.gz``."""
    folder = source / case_folder
    folder.mkdir(parents=True, exist_ok=True)
    for index, phase in enumerate(phases):
        image = render_phase(phase, shift_mm=(shifts or {}).get(phase, (0.0, 0.0, 0.0)), seed=seed + index)
        if phase in dicom_phases:
            uid = f"1.2.826.0.1.3680043.2.1125.511.{seed}{index}"
            write_dicom_series(image, folder / phase, series_instance_uid=uid)
        else:
            sitk.WriteImage(image, str(folder / f"{phase}.nii.gz"), useCompression=True)
    if labelled:
        sitk.WriteImage(render_label(), str(folder / "label.nii.gz"), useCompression=True)
    return folder


def tree_state(folder: Path) -> dict[str, tuple[str, int]]:
    """``{relative path: (sha256, mtime_ns)}`` of every file under ``folder``, to show that input is untouched."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_nothing_written(output_root: Path) -> None:
    """The output root is missing or empty: no dataset and no staging folder were left behind."""
    assert not output_root.exists() or list(output_root.iterdir()) == []


@contextlib.contextmanager
def refused(source: Path, output_root: Path, match: str | None = None) -> Iterator[pytest.ExceptionInfo]:
    """``pytest.raises(ConversionError, match=match)`` around the block; then nothing was written under
    ``output_root`` and no file under ``source`` changed."""
    before = tree_state(source)
    with pytest.raises(ConversionError, match=match) as caught:
        yield caught
    assert_nothing_written(output_root)
    assert tree_state(source) == before


class _SequentialPool:
    """Stands in for the ``multiprocessing`` pool of nnU-Net's verify_dataset_integrity: runs ``starmap`` here."""

    def __init__(self, *args: object) -> None:
        pass

    def __enter__(self) -> "_SequentialPool":
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def starmap(self, function, arguments):  # noqa: ANN001, ANN201 - multiprocessing.Pool's signature
        return [function(*args) for args in arguments]


def verify_dataset_integrity_in_process(dataset: Path) -> None:
    """nnU-Net's ``verify_dataset_integrity(dataset, num_processes=1)`` with its spawned worker pool replaced by a
    loop in this process: the same checks, without the seconds a spawned worker spends importing torch."""
    import nnunetv2.experiment_planning.verify_dataset_integrity as verify_module

    original = verify_module.multiprocessing
    verify_module.multiprocessing = SimpleNamespace(get_context=lambda method: SimpleNamespace(Pool=_SequentialPool))
    try:
        verify_module.verify_dataset_integrity(str(dataset), num_processes=1)
    finally:
        verify_module.multiprocessing = original


@pytest.fixture
def kit() -> SimpleNamespace:
    """The helpers of this module, for test files (importing ``conftest`` by name is fragile under pytest)."""
    return SimpleNamespace(PHASES=PHASES, PHASE_HU=PHASE_HU, REFERENCE_GRID=REFERENCE_GRID, make_grid=make_grid,
                           render_phase=render_phase, render_label=render_label, write_case=write_case,
                           tree_state=tree_state, assert_nothing_written=assert_nothing_written, refused=refused,
                           verify_dataset_integrity=verify_dataset_integrity_in_process)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """Two labelled cases and one unlabelled (test) case, every phase on its own grid."""
    root = tmp_path / "source"
    write_case(root, "case_01", seed=0)
    write_case(root, "case_02", seed=10)
    write_case(root, "case_03", labelled=False, seed=20)
    return root


@pytest.fixture
def output_root(tmp_path: Path) -> Path:
    return tmp_path / "nnUNet_raw"
