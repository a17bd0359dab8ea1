"""CHAOS-like fixtures: the official ``CHAOS_Train_Sets/Train_Sets/{CT,MR}`` layout, rendered from the phantom.

What is reproduced (docs/datasets.md §2.1):

* ``MR/<id>/T1DUAL/DICOM_anon/{InPhase,OutPhase}/IMG-0004-NNNNN.dcm``: one acquisition, both echoes on the same
  slices; out-phase files take the odd numbers and in-phase files the even ones (in-phase file ``2k+2`` lies on the
  slice of out-phase file ``2k+1``). ``T1DUAL/Ground/IMG-0004-NNNNN.png`` carries the in-phase names. Both as
  third-party scripts that read CHAOS MR use the names (not checked on the data). Echo times 2.3 ms (opposed) and
  4.6 ms (in phase), as at 1.5 T.
* ``MR/<id>/T2SPIR/DICOM_anon/IMG-0002-NNNNN.dcm`` and ``T2SPIR/Ground/IMG-0002-NNNNN.png``: its own grid and a
  breath-hold offset, i.e. paired with T1-DUAL but not co-registered.
* MR Ground PNGs: 8-bit grey levels 63 liver, 126 right kidney, 189 left kidney, 252 spleen; PNG k (natural sort)
  lies on the slice of DICOM file k (natural sort), whatever direction the file names run in space.
* ``CT/<id>/DICOM_anon/i0000,0000b.dcm`` ... and ``CT/<id>/Ground/liver_GT_000.png`` ...: liver only, 255 (or 1),
  and the Ground order reversed relative to the DICOM slices sorted by position (the "CT masks seem to be flipped"
  quirk).
* Anonymised DICOMs: every file has its own SeriesInstanceUID (and SOPInstanceUID), so GDCM's series grouping
  splits one volume into one "series" per file.

Volumes are tiny (12 slices of 48 x 48); the series numbers in the MR names (0004, 0002) are illustrative.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk
from PIL import Image

from nnunet_mm.phantom import GridGeometry, make_case

ECHO_TIME_OUT_PHASE_MS, ECHO_TIME_IN_PHASE_MS, ECHO_TIME_T2_MS = 2.3, 4.6, 70.0
GROUND_VALUES = {1: 63, 2: 126, 3: 189, 4: 252}  # liver, right kidney, left kidney, spleen
T1_SHAPE_ZYX, T1_SPACING_ZYX_MM = (12, 48, 48), (8.0, 7.0, 7.0)
T2_SHAPE_ZYX, T2_SPACING_ZYX_MM = (10, 44, 44), (9.0, 7.5, 7.5)
CT_SHAPE_ZYX, CT_SPACING_ZYX_MM = (12, 48, 48), (6.0, 7.0, 7.0)
DEFAULT_T2_SHIFT_ZYX_MM = (4.0, 14.0, -10.0)  # breath-hold offset of the anatomy in T2 relative to T1

# Signal per phantom tissue: (T1 in phase, T1 opposed phase, T2-SPIR); fat is suppressed in T2-SPIR.
MR_SIGNAL = {
    "air": (0, 0, 0), "fat": (800, 760, 120), "muscle": (300, 280, 150), "bone": (150, 150, 80),
    "aorta": (100, 100, 50), "ivc": (100, 100, 50), "portal_vein": (120, 120, 60), "liver": (500, 380, 250),
    "spleen": (380, 360, 600), "kidney": (420, 400, 700), "hcc": (350, 330, 500), "metastasis": (300, 290, 550),
    "cyst": (100, 100, 1200),
}
LIVER_TISSUES = ("liver", "portal_vein", "hcc", "metastasis", "cyst")

FileOrder = Literal["ascending", "descending"]


@dataclass(frozen=True)
class MrTruth:
    """What was written for one MR patient, on grids with slices in ascending position (z, y, x)."""

    t1_labels: np.ndarray  # 0..4 on the T1 grid
    t2_labels: np.ndarray  # 0..4 on the T2 grid
    t1_in: np.ndarray
    t1_out: np.ndarray
    t2: np.ndarray
    t2_on_t1: np.ndarray  # noise-free T2-SPIR signal of the T1 anatomy, i.e. T2 perfectly registered onto T1
    t1_geometry: GridGeometry
    t2_geometry: GridGeometry


@dataclass(frozen=True)
class CtTruth:
    """What was written for one CT patient, slices in ascending position (z, y, x)."""

    liver: np.ndarray  # 0/1
    hu: np.ndarray
    geometry: GridGeometry


def abdomen_labels(tissue_map: np.ndarray, tissue_names: Sequence[str]) -> np.ndarray:
    """0 background, 1 liver (with its vessels and lesions), 2 right kidney, 3 left kidney, 4 spleen.

    The phantom has one kidney tissue; the patient's right kidney is the one at smaller x (LPS: +x is left).
    """
    ids = {name: index for index, name in enumerate(tissue_names)}
    labels = np.zeros(tissue_map.shape, dtype=np.uint8)
    labels[np.isin(tissue_map, [ids[name] for name in LIVER_TISSUES])] = 1
    kidney = tissue_map == ids["kidney"]
    right_side = np.arange(tissue_map.shape[2])[None, None, :] < tissue_map.shape[2] / 2
    labels[kidney & right_side] = 2
    labels[kidney & ~right_side] = 3
    labels[tissue_map == ids["spleen"]] = 4
    return labels


def _render_mr(tissue_map: np.ndarray, tissue_names: Sequence[str], column: int, seed: int | None) -> np.ndarray:
    """uint16 signal of ``tissue_map`` in sequence ``column`` of :data:`MR_SIGNAL`, with noise unless ``seed`` is
    None."""
    table = np.array([MR_SIGNAL[name][column] for name in tissue_names], dtype=np.float32)
    signal = table[tissue_map]
    if seed is not None:
        signal = signal + np.random.default_rng(seed).normal(0.0, 8.0, tissue_map.shape)
    return np.clip(np.rint(signal), 0, 4095).astype(np.uint16)


def _uid(*parts: object) -> str:
    digits = int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:20], 16)
    return f"1.2.826.0.1.3680043.2.1125.9.{digits}"


def write_dicom_slices(volume_zyx: np.ndarray, geometry: GridGeometry, folder: Path,
                       files_by_z: Sequence[tuple[str, int]], *, modality: str, uid_seed: str,
                       echo_time_ms: float | None = None) -> None:
    """Write slice ``z`` (ascending position) of ``volume_zyx`` as ``folder/files_by_z[z][0]`` with instance number
    ``files_by_z[z][1]``, as an anonymised CHAOS file: its own SeriesInstanceUID and SOPInstanceUID, position,
    orientation, slice location, thickness, echo time."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    spacing_xyz = geometry.spacing_xyz_mm
    for z, (name, instance_number) in enumerate(files_by_z):
        image = sitk.GetImageFromArray(np.ascontiguousarray(volume_zyx[z]))
        image.SetSpacing(spacing_xyz[:2])
        position = (geometry.origin_xyz_mm[0], geometry.origin_xyz_mm[1],
                    geometry.origin_xyz_mm[2] + z * spacing_xyz[2])
        tags = {
            "0008|0060": modality,
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4" if modality == "MR" else "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": _uid(uid_seed, name, "sop"),
            "0020|000d": _uid(uid_seed, "study"),
            "0020|000e": _uid(uid_seed, name, "series"),  # per file, as in the anonymised CHAOS data
            "0020|0013": str(instance_number),
            "0020|0032": "\\".join(f"{v:.6g}" for v in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|1041": f"{position[2]:.6g}",
            "0018|0050": f"{spacing_xyz[2]:.6g}",
            "0018|0088": f"{spacing_xyz[2]:.6g}",
        }
        if echo_time_ms is not None:
            tags["0018|0081"] = f"{echo_time_ms:g}"
        for tag, value in tags.items():
            image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / name))
        writer.Execute(image)


def write_png_stack(stack_zyx: np.ndarray, folder: Path, names: Sequence[str]) -> None:
    """8-bit grey PNGs, ``stack_zyx[k]`` as ``folder/names[k]``."""
    folder.mkdir(parents=True, exist_ok=True)
    for plane, name in zip(stack_zyx, names):
        Image.fromarray(np.ascontiguousarray(plane.astype(np.uint8))).save(folder / name)


def _ground_grey(labels: np.ndarray) -> np.ndarray:
    grey = np.zeros(labels.shape, dtype=np.uint8)
    for value, level in GROUND_VALUES.items():
        grey[labels == value] = level
    return grey


def _file_rank(num_slices: int, file_order: FileOrder) -> list[int]:
    """z index (ascending position) of file k in natural name order."""
    ranks = list(range(num_slices))
    return ranks if file_order == "ascending" else ranks[::-1]


def _t2_tissue(tissue_map: np.ndarray, t1: GridGeometry, t2: GridGeometry, shift_zyx_mm: Sequence[float],
               air_id: int) -> np.ndarray:
    """The T1 tissue map seen on the T2 grid with the anatomy moved by ``shift_zyx_mm``."""
    moving = t1.to_sitk(tissue_map)
    reference = t2.to_sitk(np.zeros(t2.shape_zyx, dtype=np.uint8))
    # the T2 image at point p shows the anatomy at p - shift
    transform = sitk.TranslationTransform(3, tuple(-float(v) for v in shift_zyx_mm[::-1]))
    warped = sitk.Resample(moving, reference, transform, sitk.sitkNearestNeighbor, air_id, moving.GetPixelID())
    return sitk.GetArrayFromImage(warped)


def write_mr_patient(mr_dir: Path, patient: str, *, seed: int, with_ground: bool = True,
                     file_order: FileOrder = "ascending", phase_subfolders: bool = True,
                     t2_shift_zyx_mm: Sequence[float] = DEFAULT_T2_SHIFT_ZYX_MM) -> MrTruth:
    """Write ``mr_dir/<patient>/{T1DUAL,T2SPIR}`` (without ``Ground`` for a test-set patient).

    Args:
        file_order: ``"ascending"``: IMG numbers grow with the slice position; ``"descending"``: they fall.
        phase_subfolders: False puts in- and out-phase files together in ``T1DUAL/DICOM_anon`` (only the echo time
            tells them apart).
    """
    case = make_case(seed, shape_zyx=T1_SHAPE_ZYX, spacing_zyx_mm=T1_SPACING_ZYX_MM, phases=("pv",),
                     misregistration=False, num_lesions=(1, 1))
    t1_geometry = case.reference_geometry
    t2_origin = tuple(-(n - 1) * s / 2 + 2.0 for n, s in zip(T2_SHAPE_ZYX, T2_SPACING_ZYX_MM))
    t2_geometry = GridGeometry(T2_SHAPE_ZYX, T2_SPACING_ZYX_MM, t2_origin)
    names = case.tissue_names
    t2_tissue = _t2_tissue(case.tissue_map, t1_geometry, t2_geometry, t2_shift_zyx_mm, names.index("air"))
    truth = MrTruth(
        t1_labels=abdomen_labels(case.tissue_map, names), t2_labels=abdomen_labels(t2_tissue, names),
        t1_in=_render_mr(case.tissue_map, names, 0, seed), t1_out=_render_mr(case.tissue_map, names, 1, seed + 1),
        t2=_render_mr(t2_tissue, names, 2, seed + 2), t2_on_t1=_render_mr(case.tissue_map, names, 2, None),
        t1_geometry=t1_geometry, t2_geometry=t2_geometry)

    folder = mr_dir / patient
    num_t1 = T1_SHAPE_ZYX[0]
    rank = _file_rank(num_t1, file_order)
    in_names = [f"IMG-0004-{2 * k + 2:05d}" for k in range(num_t1)]
    out_names = [f"IMG-0004-{2 * k + 1:05d}" for k in range(num_t1)]
    by_z_in: list[tuple[str, int]] = [("", 0)] * num_t1
    by_z_out: list[tuple[str, int]] = [("", 0)] * num_t1
    for k, z in enumerate(rank):
        by_z_in[z], by_z_out[z] = (in_names[k] + ".dcm", 2 * k + 2), (out_names[k] + ".dcm", 2 * k + 1)
    dicom_anon = folder / "T1DUAL" / "DICOM_anon"
    in_folder = dicom_anon / "InPhase" if phase_subfolders else dicom_anon
    out_folder = dicom_anon / "OutPhase" if phase_subfolders else dicom_anon
    uid_seed = f"mr-{patient}-{seed}"
    write_dicom_slices(truth.t1_in, t1_geometry, in_folder, by_z_in, modality="MR", uid_seed=uid_seed + "-in",
                       echo_time_ms=ECHO_TIME_IN_PHASE_MS)
    write_dicom_slices(truth.t1_out, t1_geometry, out_folder, by_z_out, modality="MR", uid_seed=uid_seed + "-out",
                       echo_time_ms=ECHO_TIME_OUT_PHASE_MS)

    num_t2 = T2_SHAPE_ZYX[0]
    t2_rank = _file_rank(num_t2, file_order)
    t2_names = [f"IMG-0002-{k + 1:05d}" for k in range(num_t2)]
    by_z_t2: list[tuple[str, int]] = [("", 0)] * num_t2
    for k, z in enumerate(t2_rank):
        by_z_t2[z] = (t2_names[k] + ".dcm", k + 1)
    write_dicom_slices(truth.t2, t2_geometry, folder / "T2SPIR" / "DICOM_anon", by_z_t2, modality="MR",
                       uid_seed=uid_seed + "-t2", echo_time_ms=ECHO_TIME_T2_MS)

    if with_ground:
        t1_grey = _ground_grey(truth.t1_labels)
        write_png_stack(t1_grey[rank], folder / "T1DUAL" / "Ground", [n + ".png" for n in in_names])
        t2_grey = _ground_grey(truth.t2_labels)
        write_png_stack(t2_grey[t2_rank], folder / "T2SPIR" / "Ground", [n + ".png" for n in t2_names])
    return truth


def write_ct_patient(ct_dir: Path, patient: str, *, seed: int, with_ground: bool = True, liver_value: int = 255,
                     file_order: FileOrder = "descending") -> CtTruth:
    """Write ``ct_dir/<patient>/{DICOM_anon,Ground}`` (without ``Ground`` for a test-set patient).

    ``liver_GT_k.png`` holds the liver of the slice at position rank ``N-1-k`` (ascending), whatever the DICOM names:
    ``file_order="descending"`` names the files from the top slice down (``i0000,0000b.dcm`` is the most cranial),
    ``"ascending"`` from the bottom up.
    """
    case = make_case(seed, shape_zyx=CT_SHAPE_ZYX, spacing_zyx_mm=CT_SPACING_ZYX_MM, phases=("pv",),
                     misregistration=False, num_lesions=(1, 1))
    geometry = case.reference_geometry
    liver = (abdomen_labels(case.tissue_map, case.tissue_names) == 1).astype(np.uint8)
    truth = CtTruth(liver=liver, hu=case.images["pv"], geometry=geometry)
    folder = ct_dir / patient
    num_slices = CT_SHAPE_ZYX[0]
    by_z: list[tuple[str, int]] = [("", 0)] * num_slices
    for k, z in enumerate(_file_rank(num_slices, file_order)):
        by_z[z] = (f"i{k:04d},0000b.dcm", k + 1)
    write_dicom_slices(truth.hu, geometry, folder / "DICOM_anon", by_z, modality="CT", uid_seed=f"ct-{patient}-{seed}")
    if with_ground:
        reversed_stack = (liver * liver_value).astype(np.uint8)[::-1]
        write_png_stack(reversed_stack, folder / "Ground", [f"liver_GT_{k:03d}.png" for k in range(num_slices)])
    return truth


def train_sets_dir(root: Path) -> Path:
    """``root/CHAOS_Train_Sets/Train_Sets``, the folder that holds ``CT/`` and ``MR/``."""
    return root / "CHAOS_Train_Sets" / "Train_Sets"


def chaos_test_sets_dir(root: Path) -> Path:
    """``root/CHAOS_Test_Sets/Test_Sets``."""
    return root / "CHAOS_Test_Sets" / "Test_Sets"
