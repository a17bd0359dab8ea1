"""Cross-modality phantom pairs with a known deformation: CT phantoms → "MR-like" targets.

:func:`mr_like` maps CT Hounsfield units through a non-monotonic table (fat bright, water and bone dark, liver and
spleen in between, roughly a T1-weighted contrast) and adds a smooth multiplicative bias field and noise, so that
intensity-difference metrics fail and only modality-independent ones (mutual information, label-driven learning)
can align the images. :func:`deform` moves an image and its label with a known smooth displacement (a random affine
part plus a coarse random field, upsampled), and returns the field, so a registration's recovery can be measured.
Arrays are (z, y, x); spacing in mm.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

#: HU knots → MR-like signal (arbitrary units); non-monotonic on purpose.
MR_LIKE_HU_KNOTS = (-1000.0, -200.0, -100.0, 0.0, 30.0, 60.0, 100.0, 160.0, 300.0, 700.0, 3000.0)
MR_LIKE_SIGNAL = (0.02, 0.75, 0.95, 0.25, 0.35, 0.45, 0.60, 0.50, 0.30, 0.10, 0.05)


def mr_like(ct_hu: np.ndarray, *, rng: np.random.Generator, bias_strength: float = 0.2,
            noise_std: float = 0.02) -> np.ndarray:
    """An MR-like image of the same anatomy as a CT volume (float32, values about 0–1).

    Args:
        ct_hu: CT image in HU.
        rng: random generator for the bias field and the noise.
        bias_strength: amplitude of the smooth multiplicative bias field (0: none).
        noise_std: standard deviation of additive Gaussian noise.
    """
    signal = np.interp(ct_hu.astype(np.float64), MR_LIKE_HU_KNOTS, MR_LIKE_SIGNAL)
    if bias_strength > 0:
        signal = signal * (1.0 + bias_strength * _smooth_field(rng, ct_hu.shape, control_points=3))
    signal = signal + rng.normal(0.0, noise_std, size=ct_hu.shape)
    return signal.astype(np.float32)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], control_points: int) -> np.ndarray:
    """A smooth random field in about [-1, 1]: coarse normal values, cubic upsampling."""
    coarse = rng.normal(0.0, 0.5, size=(control_points,) * len(shape))
    zoom = [n / control_points for n in shape]
    field = ndimage.zoom(coarse, zoom, order=3, mode="nearest")
    return field[tuple(slice(0, n) for n in shape)]


@dataclass
class KnownDeformation:
    """A displacement field on a grid: output voxel x samples the input at ``x + displacement_voxels[:, x]``.

    Attributes:
        displacement_voxels: (D, *spatial) float32, in voxels of the grid, axis order (z, y, x).
    """

    displacement_voxels: np.ndarray

    def apply(self, array: np.ndarray, *, is_label: bool) -> np.ndarray:
        """Warp ``array`` (same grid): nearest neighbour for labels, linear for images (edges repeated)."""
        grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in array.shape], indexing="ij")
        coordinates = [g + d for g, d in zip(grid, self.displacement_voxels)]
        warped = ndimage.map_coordinates(array.astype(np.float32), coordinates, order=0 if is_label else 1,
                                         mode="nearest")
        return warped.astype(array.dtype)

    def magnitude_mm(self, spacing_zyx_mm: tuple[float, ...]) -> np.ndarray:
        """Displacement length per voxel in mm."""
        scaled = self.displacement_voxels * np.asarray(spacing_zyx_mm, dtype=np.float32).reshape(-1, *[1] * (
            self.displacement_voxels.ndim - 1))
        return np.sqrt((scaled ** 2).sum(0))


def random_deformation(shape: tuple[int, ...], spacing_zyx_mm: tuple[float, ...], *, rng: np.random.Generator,
                       max_translation_mm: float = 6.0, max_rotation_deg: float = 6.0, max_scaling: float = 0.08,
                       elastic_std_mm: float = 3.0, control_points: int = 4) -> KnownDeformation:
    """A smooth random deformation: rotation about the first axis, anisotropic scaling and translation about the
    grid centre, plus a smooth elastic field (per axis N(0, ``elastic_std_mm``) at control points, upsampled).

    Args:
        shape: grid size (z, y, x) or (y, x).
        spacing_zyx_mm: voxel size in mm, same length as ``shape``.
        rng: random generator.
        max_translation_mm / max_rotation_deg / max_scaling / elastic_std_mm: magnitudes (uniform in ±max for the
            linear part).
        control_points: control points per axis of the elastic part.
    """
    dims = len(shape)
    spacing = np.asarray(spacing_zyx_mm, dtype=np.float64)
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij"))
    points_mm = (grid - centre.reshape(-1, *[1] * dims)) * spacing.reshape(-1, *[1] * dims)
    angle = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg))
    matrix = np.eye(dims)
    a, b = dims - 2, dims - 1  # rotate in the (y, x) plane: axial rotation
    matrix[a, a], matrix[a, b], matrix[b, a], matrix[b, b] = np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)
    matrix = matrix @ np.diag(1.0 + rng.uniform(-max_scaling, max_scaling, size=dims))
    translation = rng.uniform(-max_translation_mm, max_translation_mm, size=dims)
    moved_mm = np.einsum("ij,j...->i...", matrix, points_mm) + translation.reshape(-1, *[1] * dims)
    displacement_mm = moved_mm - points_mm
    for axis in range(dims):
        displacement_mm[axis] += elastic_std_mm * 2 * _smooth_field(rng, tuple(shape), control_points)
    displacement_voxels = displacement_mm / spacing.reshape(-1, *[1] * dims)
    return KnownDeformation(displacement_voxels.astype(np.float32))


def write_cross_modality_datasets(root: Path, *, atlas_id: int, target_id: int, num_atlases: int,
                                  num_target_training: int, num_target_test: int = 0,
                                  shape_zyx: tuple[int, int, int] = (32, 64, 64),
                                  spacing_zyx_mm: tuple[float, float, float] = (3.0, 1.5, 1.5),
                                  seed: int = 0) -> tuple[Path, Path]:
    """Write two raw datasets: CT phantom atlases (``Dataset<atlas_id>_PhantomCTAtlas``, channel ``CT``) and
    MR-like targets (``Dataset<target_id>_PhantomMRTarget``, channel ``MR``), each target a different phantom moved
    by a known :func:`random_deformation` (stored in ``deformations.npz``, key = case id).

    Returns:
        (atlas dataset folder, target dataset folder).
    """
    import SimpleITK as sitk

    from nnunet_mm.io.dataset_json import write_dataset_json
    from nnunet_mm.io.images import write_image
    from nnunet_mm.phantom import LABELS, make_case

    root = Path(root)
    atlas_folder = root / f"Dataset{atlas_id:03d}_PhantomCTAtlas"
    target_folder = root / f"Dataset{target_id:03d}_PhantomMRTarget"
    for folder in (atlas_folder, target_folder):
        if folder.exists():
            raise FileExistsError(f"{folder} already exists; remove it or choose other ids.")
    rng = np.random.default_rng(seed)
    deformations = {}

    def write(array: np.ndarray, geometry, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(geometry.to_sitk(array), path)

    for index in range(num_atlases):
        case = make_case(seed * 1000 + index, shape_zyx=shape_zyx, spacing_zyx_mm=spacing_zyx_mm, phases=("pv",))
        identifier = f"atlas_{index:03d}"
        write(case.image_on_reference_grid("pv").astype(np.int16), case.reference_geometry,
              atlas_folder / "imagesTr" / f"{identifier}_0000.nii.gz")
        write(case.label.astype(np.uint8), case.reference_geometry, atlas_folder / "labelsTr" / f"{identifier}.nii.gz")
    for index in range(num_target_training + num_target_test):
        case = make_case(seed * 1000 + 500 + index, shape_zyx=shape_zyx, spacing_zyx_mm=spacing_zyx_mm,
                         phases=("pv",))
        split = "Tr" if index < num_target_training else "Ts"
        identifier = f"target_{index:03d}"
        deformation = random_deformation(tuple(shape_zyx), spacing_zyx_mm, rng=rng)
        deformations[identifier] = deformation.displacement_voxels
        image = mr_like(deformation.apply(case.image_on_reference_grid("pv").astype(np.float32), is_label=False),
                        rng=rng)
        write(image, case.reference_geometry, target_folder / f"images{split}" / f"{identifier}_0000.nii.gz")
        write(deformation.apply(case.label, is_label=True).astype(np.uint8), case.reference_geometry,
              target_folder / f"labels{split}" / f"{identifier}.nii.gz")
    write_dataset_json(atlas_folder, channel_names=["CT"], labels=dict(LABELS), num_training=num_atlases,
                       file_ending=".nii.gz", dataset_name=atlas_folder.name,
                       nnunet_mm_block={"modalities": {"0": "CT"}})
    write_dataset_json(target_folder, channel_names=["MR"], labels=dict(LABELS), num_training=num_target_training,
                       file_ending=".nii.gz", dataset_name=target_folder.name,
                       nnunet_mm_block={"modalities": {"0": "MR"}})
    np.savez_compressed(target_folder / "deformations.npz", **deformations)
    return atlas_folder, target_folder
