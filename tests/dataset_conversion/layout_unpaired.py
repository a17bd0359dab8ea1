"""Tiny AMOS 2022 and MM-WHS 2017 source trees built from the phantom, with the official names and encodings.

Anatomy comes from :func:`nnunet_mm.phantom.make_case` (its tissue map), on a 12 x 32 x 32 (z, y, x) grid. Organ
ids are painted into labels in each challenge's encoding; CT images are the phantom's HU, MR images a tissue →
intensity table (uint16). Everything is ``.nii.gz`` written by SimpleITK.

* AMOS (Zenodo 7262581): ``amos22/{imagesTr,labelsTr,imagesVa,labelsVa,imagesTs}/amos_XXXX.nii.gz`` and the
  challenge's MSD-style ``dataset.json`` with its ``"licence"`` key and its label spellings ("gall bladder",
  "arota", "postcava"); ids > 500 are MRI. Labels uint8, values 0..15.
* MM-WHS: ``MM-WHS 2017 Dataset/{ct_train,mr_train,ct_test,mr_test}/{ct,mr}_{train,test}_NNNN_{image,label}.nii.gz``
  (test folders hold images only). Labels carry the raw values 205/420/500/550/600/820/850; ``mr_train_1010`` has
  stray 421 voxels, as in the real release.

MR scans listed in ``coronal`` are stored as a coronal acquisition: the same voxels in physical space, but array
axes permuted and flipped (direction (1, 0, 0, 0, 0, 1, 0, -1, 0), i.e. "LIP").
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_mm import phantom

SHAPE_ZYX = (12, 32, 32)
SPACING_ZYX_MM = (3.0, 2.5, 2.5)
CORONAL_DIRECTION = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0)  # columns: i → +x, j → -z, k → +y

AMOS_LABEL_SPELLINGS = ("background", "spleen", "right kidney", "left kidney", "gall bladder", "esophagus", "liver",
                        "stomach", "arota", "postcava", "pancreas", "right adrenal gland", "left adrenal gland",
                        "duodenum", "bladder", "prostate/uterus")
# phantom tissue → AMOS organ id; kidneys are split into right (x < 0, LPS) = 2 and left = 3 afterwards
AMOS_ORGAN_OF_TISSUE = {"spleen": 1, "kidney": 2, "liver": 6, "portal_vein": 6, "hcc": 6, "metastasis": 6, "cyst": 6,
                        "aorta": 8, "ivc": 9}
# phantom tissue → MM-WHS raw label value (any map does; these give all seven structures)
MMWHS_VALUE_OF_TISSUE = {"liver": 500, "portal_vein": 205, "hcc": 205, "metastasis": 205, "cyst": 205, "spleen": 600,
                         "kidney": 550, "aorta": 820, "ivc": 850}
MMWHS_RAW_TO_NNUNET = {0: 0, 205: 1, 420: 2, 500: 3, 550: 4, 600: 5, 820: 6, 850: 7}
MR_INTENSITY_OF_TISSUE = {"air": 0, "fat": 900, "muscle": 300, "bone": 150, "aorta": 600, "ivc": 650,
                          "portal_vein": 650, "liver": 420, "spleen": 520, "kidney": 560, "hcc": 480,
                          "metastasis": 380, "cyst": 1000}
NUM_STRAY_421 = 5


@functools.lru_cache(maxsize=None)
def _anatomy(seed: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(tissue map, CT HU image), both (Z, Y, X), and the tissue names, of phantom ``seed``."""
    case = phantom.make_case(seed, shape_zyx=SHAPE_ZYX, spacing_zyx_mm=SPACING_ZYX_MM, phases=("pv",),
                             num_lesions=(1, 1))
    return case.tissue_map, case.images["pv"], case.tissue_names


def axial_image(array_zyx: np.ndarray) -> sitk.Image:
    """``array_zyx`` on the fixture grid: identity direction, centred on the origin."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
    image.SetSpacing(tuple(float(s) for s in SPACING_ZYX_MM[::-1]))
    image.SetOrigin(tuple(-(n - 1) * s / 2 for n, s in zip(SHAPE_ZYX[::-1], SPACING_ZYX_MM[::-1])))
    return image


def to_coronal(image: sitk.Image) -> sitk.Image:
    """The same voxels stored as a coronal acquisition: slices along y, rows running from head to feet."""
    array = sitk.GetArrayFromImage(image)  # (z, y, x)
    coronal = np.ascontiguousarray(array.transpose(1, 0, 2)[:, ::-1, :])  # (k = y, j = z reversed, i = x)
    result = sitk.GetImageFromArray(coronal)
    sx, sy, sz = image.GetSpacing()
    result.SetSpacing((sx, sz, sy))
    result.SetOrigin(image.TransformIndexToPhysicalPoint((0, 0, image.GetSize()[2] - 1)))
    result.SetDirection(CORONAL_DIRECTION)
    return result


def tissue_labels(seed: int, value_of_tissue: dict[str, int]) -> np.ndarray:
    """(Z, Y, X) int array: ``value_of_tissue`` painted from the phantom's tissue map (others 0)."""
    tissue, _, names = _anatomy(seed)
    lookup = np.array([value_of_tissue.get(name, 0) for name in names], dtype=np.int32)
    return lookup[tissue]


def amos_label(seed: int) -> np.ndarray:
    """uint8 AMOS organ ids: spleen 1, right kidney 2, left kidney 3, liver 6, aorta 8, IVC 9."""
    label = tissue_labels(seed, AMOS_ORGAN_OF_TISSUE)
    left = np.arange(SHAPE_ZYX[2]) > (SHAPE_ZYX[2] - 1) / 2  # +x is the patient's left in LPS
    label[(label == 2) & left[None, None, :]] = 3
    return label.astype(np.uint8)


def ct_image(seed: int) -> np.ndarray:
    """int16 HU of phantom ``seed``."""
    return _anatomy(seed)[1]


def mr_image(seed: int) -> np.ndarray:
    """uint16 MR-like intensities of phantom ``seed``."""
    values = tissue_labels(seed, MR_INTENSITY_OF_TISSUE).astype(np.float64)
    values += np.random.default_rng(seed).normal(0.0, 20.0, values.shape)
    return np.clip(np.round(values), 0, 65535).astype(np.uint16)


def _write(image: sitk.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)


def _stored(array_zyx: np.ndarray, coronal: bool) -> sitk.Image:
    image = axial_image(array_zyx)
    return to_coronal(image) if coronal else image


def write_amos(root: Path, *, training: tuple[int, ...] = (1, 2, 507), validation: tuple[int, ...] = (8, 508),
               test: tuple[int, ...] = (3, 509), coronal: tuple[int, ...] = (507,)) -> Path:
    """Write ``root/amos22/`` with the given case numbers; returns ``root/amos22``.

    Case ``N`` uses phantom seed ``N``; numbers > 500 are MRI. Cases in ``coronal`` are stored coronally (image and
    label alike).
    """
    release = Path(root) / "amos22"
    splits = (("imagesTr", "labelsTr", training), ("imagesVa", "labelsVa", validation), ("imagesTs", None, test))
    for images_name, labels_name, numbers in splits:
        (release / images_name).mkdir(parents=True, exist_ok=True)
        for number in numbers:
            name = f"amos_{number:04d}.nii.gz"
            image = mr_image(number) if number > 500 else ct_image(number)
            _write(_stored(image, number in coronal), release / images_name / name)
            if labels_name is not None:
                _write(_stored(amos_label(number), number in coronal), release / labels_name / name)

    def entry(folder: str, number: int, labelled: bool) -> dict[str, str] | str:
        image = f"./{folder}/amos_{number:04d}.nii.gz"
        return {"image": image, "label": image.replace("images", "labels")} if labelled else image

    challenge = {
        "name": "AMOS", "description": "MICCAI2022 Multi-Modality Abdominal Multi-Organ Segmentation Challenge",
        "tensorImageSize": "3D", "reference": "SRIDB x CUHKSZ x HKU x LGCHSZ x LGPHSZ", "licence": "CC-BY-SA 4.0",
        "release": "1.0 01/05/2022", "modality": {"0": "CT"},
        "labels": {str(value): name for value, name in enumerate(AMOS_LABEL_SPELLINGS)},
        "numTraining": len(training), "numValidation": len(validation), "numTest": len(test),
        "training": [entry("imagesTr", n, True) for n in training],
        "validation": [entry("imagesVa", n, True) for n in validation],
        "test": [entry("imagesTs", n, False) for n in test],
    }
    (release / "dataset.json").write_text(json.dumps(challenge, indent=4), encoding="utf-8")
    return release


def mmwhs_label(seed: int, *, stray_421: bool = False) -> np.ndarray:
    """uint16 raw MM-WHS values; the right half of the kidneys becomes LA (420); ``stray_421`` turns the first
    :data:`NUM_STRAY_421` LA voxels into 421."""
    label = tissue_labels(seed, MMWHS_VALUE_OF_TISSUE)
    left = np.arange(SHAPE_ZYX[2]) > (SHAPE_ZYX[2] - 1) / 2
    label[(label == 550) & ~left[None, None, :]] = 420
    if stray_421:
        flat = label.reshape(-1)
        flat[np.flatnonzero(flat == 420)[:NUM_STRAY_421]] = 421
    return label.astype(np.uint16)


def write_mmwhs(root: Path, *, training: tuple[str, ...] = ("ct_1001", "ct_1002", "mr_1001", "mr_1010"),
                test: tuple[str, ...] = ("ct_2001", "mr_2001"), coronal: tuple[str, ...] = ("mr_1010",),
                float_labels: tuple[str, ...] = ("ct_1002",), subfolders: bool = True) -> Path:
    """Write ``root/MM-WHS 2017 Dataset/`` (sub-folders per modality and split unless ``subfolders`` is False);
    returns that folder. Case ``"mr_1010"`` gets the stray 421 voxels; ``float_labels`` are stored as float32."""
    top = Path(root) / "MM-WHS 2017 Dataset"
    for split, cases, labelled in (("train", training, True), ("test", test, False)):
        for case in cases:
            modality, number = case.split("_")
            folder = top / f"{modality}_{split}" if subfolders else top
            seed = mmwhs_seed(case)
            image = ct_image(seed) if modality == "ct" else mr_image(seed)
            _write(_stored(image, case in coronal), folder / f"{modality}_{split}_{number}_image.nii.gz")
            if labelled:
                label = mmwhs_label(seed, stray_421=case == "mr_1010")
                if case in float_labels:
                    label = label.astype(np.float32)
                _write(_stored(label, case in coronal), folder / f"{modality}_{split}_{number}_label.nii.gz")
    return top


def mmwhs_seed(case: str) -> int:
    """The phantom seed of an MM-WHS fixture case (``"mr_1010"`` → 6010)."""
    modality, number = case.split("_")
    return int(number) + (0 if modality == "ct" else 5000)
