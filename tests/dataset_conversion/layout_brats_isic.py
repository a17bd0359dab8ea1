"""Tiny fixtures in the official BraTS 2018/2019 and ISIC 2018 Task 1 layouts, and the arrangement of the real
sample data (``../shared/realdata``) into those layouts.

Built directly with numpy and SimpleITK: the phantom generator renders abdominal CT, not brains or skin.

BraTS: ``MICCAI_BraTS_<year>_Data_Training/{HGG,LGG}/<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` plus the csv
files of the training root, flat ``MICCAI_BraTS_<year>_Data_Validation/<case>/`` without ``_seg``. Images int16 and
segmentations uint8 with 0/1/2/4 (from memory of the archives); the grid follows the real BRATS 2015 files as
SimpleITK reads them (confirmed): 1 mm, identity direction, origin (0, -(ny - 1), 0).

ISIC 2018: ``ISIC2018_Task1-2_Training_Input/ISIC_XXXXXXX.jpg`` (RGB JPEG),
``ISIC2018_Task1_Training_GroundTruth/ISIC_XXXXXXX_segmentation.png`` (8-bit grey, 0/255; confirmed on the ISIC 2017
samples, same naming), ``ISIC2018_Task1-2_{Validation,Test}_Input/``; every folder also holds ``ATTRIBUTION.txt``
and ``LICENSE.txt`` (from memory).
"""
from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REAL_DATA = Path(__file__).resolve().parents[3] / "shared" / "realdata"
REAL_BRATS = REAL_DATA / "brats2015-deepmedic"
REAL_ISIC = REAL_DATA / "isic2017-samples"

# ------------------------------------------------------------------------------------------------------------------
# BraTS

BRATS_SEQUENCES = ("t1", "t1ce", "t2", "flair")
BRATS_SIZE_XYZ = (40, 48, 24)
BRATS_NAMING = {  # year → (case prefix, training folder, validation folder, csv files of the training root)
    2018: ("Brats18_", "MICCAI_BraTS_2018_Data_Training", "MICCAI_BraTS_2018_Data_Validation",
           {"survival_data.csv": "BraTS18ID,Age,Survival,ResectionStatus\n"}),
    2019: ("BraTS19_", "MICCAI_BraTS_2019_Data_Training", "MICCAI_BraTS_2019_Data_Validation",
           {"survival_data.csv": "BraTS19ID,Age,Survival,ResectionStatus\n",
            "name_mapping.csv": "Grade,BraTS_2017_subject_ID,BraTS_2018_subject_ID,TCGA_TCIA_subject_ID,"
                                "BraTS_2019_subject_ID\n"}),
}
# grey value per tissue (background, brain, edema, NCR/NET, enhancing, non-enhancing) and sequence
_TISSUE_INTENSITY = {
    "t1": (0, 400, 330, 200, 380, 300),
    "t1ce": (0, 420, 360, 250, 900, 380),
    "t2": (0, 300, 600, 800, 500, 650),
    "flair": (0, 250, 550, 300, 450, 500),
}
_TISSUE_OF_BRATS_LABEL = {0: 1, 2: 2, 1: 3, 4: 4, 3: 5}  # brain voxels: label → tissue index


def brats_grid(size_xyz: Sequence[int] = BRATS_SIZE_XYZ) -> sitk.Image:
    """An empty uint8 image on a BraTS-like grid."""
    image = sitk.Image([int(s) for s in size_xyz], sitk.sitkUInt8)
    image.SetOrigin((0.0, -(size_xyz[1] - 1.0), 0.0))
    return image


def brats_segmentation(seed: int, *, legacy_label: bool = False) -> np.ndarray:
    """(z, y, x) uint8 BraTS labels: edema 2 around enhancing 4 around necrosis 1, and with ``legacy_label`` a
    blob of label 3 (BRATS 2015 non-enhancing tumour) in the edema."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = BRATS_SIZE_XYZ
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    centre = np.array([nz / 2, ny / 2, nx / 2]) + rng.uniform(-2, 2, 3)
    distance = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    segmentation = np.zeros((nz, ny, nx), dtype=np.uint8)
    segmentation[distance <= 9] = 2
    segmentation[distance <= 6] = 4
    segmentation[distance <= 3] = 1
    if legacy_label:
        segmentation[(np.abs(z - centre[0]) <= 1) & (np.abs(y - centre[1]) <= 1) & (x - centre[2] >= 7)
                     & (distance <= 9)] = 3
    return segmentation


def brats_sequences(segmentation: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """int16 (z, y, x) images per sequence: an ellipsoidal brain with the tumour tissues of ``segmentation``."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = segmentation.shape
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in (nz, ny, nx)), indexing="ij")
    brain = (z / 0.95) ** 2 + (y / 0.9) ** 2 + (x / 0.85) ** 2 <= 1
    tissue = np.where(brain | (segmentation > 0), np.vectorize(_TISSUE_OF_BRATS_LABEL.get)(segmentation), 0)
    images = {}
    for sequence in BRATS_SEQUENCES:
        values = np.array(_TISSUE_INTENSITY[sequence], dtype=np.float32)[tissue]
        values += rng.normal(0, 15, values.shape).astype(np.float32) * (tissue > 0)
        images[sequence] = np.round(values).astype(np.int16)
    return images


def _write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(brats_grid())
    sitk.WriteImage(image, str(path), useCompression=path.name.endswith(".gz"))


def write_brats_case(folder: Path, *, seed: int, labelled: bool = True, ending: str = ".nii.gz",
                     legacy_label: bool = False) -> Path:
    """Write ``folder/<folder name>_{t1,t1ce,t2,flair,seg}<ending>`` (``_seg`` only when ``labelled``)."""
    folder.mkdir(parents=True, exist_ok=True)
    segmentation = brats_segmentation(seed, legacy_label=legacy_label)
    for sequence, array in brats_sequences(segmentation, seed).items():
        _write(array, folder / f"{folder.name}_{sequence}{ending}")
    if labelled:
        _write(segmentation, folder / f"{folder.name}_seg{ending}")
    return folder


def write_brats_training(parent: Path, year: int, cases: dict[str, Sequence[str]], *,
                         ending: str = ".nii.gz") -> Path:
    """``parent/MICCAI_BraTS_<year>_Data_Training`` with ``cases`` = ``{"HGG": [suffix, ...], "LGG": [...]}``;
    each case folder is ``<prefix><suffix>``, e.g. ``Brats18_2013_2_1``."""
    prefix, training_folder, _, csv_files = BRATS_NAMING[year]
    root = parent / training_folder
    root.mkdir(parents=True)
    for name, text in csv_files.items():
        (root / name).write_text(text, encoding="utf-8")
    seed = 0
    for grade, suffixes in cases.items():
        for suffix in suffixes:
            write_brats_case(root / grade / f"{prefix}{suffix}", seed=seed, ending=ending)
            seed += 1
    return root


def write_brats_validation(parent: Path, year: int, suffixes: Iterable[str]) -> Path:
    """``parent/MICCAI_BraTS_<year>_Data_Validation/<prefix><suffix>/`` without segmentations."""
    prefix, _, validation_folder, _ = BRATS_NAMING[year]
    root = parent / validation_folder
    for seed, suffix in enumerate(suffixes, start=100):
        write_brats_case(root / f"{prefix}{suffix}", seed=seed, labelled=False)
    return root


def arrange_real_brats(parent: Path, case_folders: Sequence[Path]) -> Path:
    """The real BRATS 2015 cases ``case_folders`` (``brats_2013_pat000N_1``) as BraTS 2018 HGG cases
    ``Brats18_2013_N_1`` in ``parent/MICCAI_BraTS_2018_Data_Training``.

    Only FLAIR and T1c exist there: they become ``_flair``/``_t1ce``, and copies of T1c and FLAIR stand in for the
    missing ``_t1``/``_t2``; ``OTMultiClass`` becomes ``_seg``. The files are copied, because the converter refuses
    symbolic links that lead out of its input folder.
    """
    root = parent / BRATS_NAMING[2018][1]
    for folder in case_folders:
        number = int(folder.name.split("_")[2].removeprefix("pat"))
        case = f"Brats18_2013_{number}_1"
        target = root / "HGG" / case
        target.mkdir(parents=True)
        for source, sequence in (("Flair", "flair"), ("T1c", "t1ce"), ("T1c", "t1"), ("Flair", "t2")):
            shutil.copyfile(folder / f"{source}_subtrMeanDivStd.nii.gz", target / f"{case}_{sequence}.nii.gz")
        shutil.copyfile(folder / "OTMultiClass.nii.gz", target / f"{case}_seg.nii.gz")
    return root


# ------------------------------------------------------------------------------------------------------------------
# ISIC 2018 Task 1

ISIC_TRAINING_INPUT = "ISIC2018_Task1-2_Training_Input"
ISIC_TRAINING_GROUND_TRUTH = "ISIC2018_Task1_Training_GroundTruth"
ISIC_VALIDATION_INPUT = "ISIC2018_Task1-2_Validation_Input"
ISIC_TEST_INPUT = "ISIC2018_Task1-2_Test_Input"
ISIC_SIZE_HW = (48, 64)
ISIC_LESION_CENTRE_YX, ISIC_LESION_RADIUS = (24.0, 18.0), 10.0
_SKIN_RGB, _LESION_RGB = (205, 150, 130), (110, 70, 50)


def isic_case(seed: int, size_hw: Sequence[int] = ISIC_SIZE_HW) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb, mask)``: an (H, W, 3) uint8 skin image with a dark round lesion on the left, and its (H, W) uint8
    mask with 0/255."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size_hw[0], :size_hw[1]]
    lesion = (y - ISIC_LESION_CENTRE_YX[0]) ** 2 + (x - ISIC_LESION_CENTRE_YX[1]) ** 2 <= ISIC_LESION_RADIUS ** 2
    rgb = np.where(lesion[..., None], _LESION_RGB, _SKIN_RGB).astype(np.float32)
    rgb += rng.normal(0, 8, rgb.shape)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8), np.where(lesion, 255, 0).astype(np.uint8)


def write_jpeg(rgb: np.ndarray, path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=rgb.ndim == 3), str(path))


def write_png(array: np.ndarray, path: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=array.ndim == 3), str(path))


def _isic_folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ATTRIBUTION.txt").write_text("ISIC archive attribution\n", encoding="utf-8")
    (folder / "LICENSE.txt").write_text("ISIC archive terms of use\n", encoding="utf-8")
    return folder


def isic_id(number: int) -> str:
    return f"ISIC_{number:07d}"


def write_isic2018(root: Path, *, training: Sequence[int], validation: Sequence[int] = (),
                   test: Sequence[int] = (), size_hw: Sequence[int] = ISIC_SIZE_HW) -> Path:
    """The ISIC 2018 Task 1 folders under ``root`` for the given image numbers (``ISIC_<number:07d>``)."""
    images = _isic_folder(root, ISIC_TRAINING_INPUT)
    masks = _isic_folder(root, ISIC_TRAINING_GROUND_TRUTH)
    for number in training:
        rgb, mask = isic_case(number, size_hw)
        write_jpeg(rgb, images / f"{isic_id(number)}.jpg")
        write_png(mask, masks / f"{isic_id(number)}_segmentation.png")
    for folder_name, numbers in ((ISIC_VALIDATION_INPUT, validation), (ISIC_TEST_INPUT, test)):
        if numbers:
            folder = _isic_folder(root, folder_name)
            for number in numbers:
                write_jpeg(isic_case(number, size_hw)[0], folder / f"{isic_id(number)}.jpg")
    return root


def arrange_real_isic(root: Path, *, training: int, validation: int) -> tuple[list[str], list[str]]:
    """Copy the real ISIC 2017 samples into the ISIC 2018 folders under ``root``: the first ``training`` images with
    their masks as training data, the next ``validation`` images as validation input. Returns both id lists."""
    images = sorted(p for p in REAL_ISIC.glob("ISIC_*.jpg"))
    train_ids = [p.stem for p in images[:training]]
    validation_ids = [p.stem for p in images[training:training + validation]]
    for case in train_ids:
        shutil.copyfile(REAL_ISIC / f"{case}.jpg", _isic_folder(root, ISIC_TRAINING_INPUT) / f"{case}.jpg")
        shutil.copyfile(REAL_ISIC / f"{case}_segmentation.png",
                        _isic_folder(root, ISIC_TRAINING_GROUND_TRUTH) / f"{case}_segmentation.png")
    for case in validation_ids:
        shutil.copyfile(REAL_ISIC / f"{case}.jpg", _isic_folder(root, ISIC_VALIDATION_INPUT) / f"{case}.jpg")
    return train_ids, validation_ids
