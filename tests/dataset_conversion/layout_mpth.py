"""MPTH source folders with the naming and encodings of the seed repository (lzhLab/cross-modal-guidance), built from
:func:`nnunet_mm.phantom.make_case` anatomy.

What :func:`nnunet_mm.phantom.write_mpth` does not cover and this module does:

* the seed README's naming: case folders ``1, 2, ...`` and 1-based slice files ``1.png, 2.png, ...``;
* image slices as ``torch.save``-d plain tensors (the form the shared ``read_slice`` loads), as ``torch.save``-d
  numpy arrays (what the seed loader's ``Image.fromarray(torch.load(path))`` implies), also with the global name
  numpy 1.x pickles use (``numpy.core.multiarray._reconstruct``; the seed code names numpy 1.19), as 16-bit PNG
  (HU + 1024) or as 8-bit windowed PNG;
* unlabelled cases (no mask folders) and an ART phase moved by a known in-plane shift (for registration tests).

Masks are 8-bit PNGs: liver 0/1 (the seed code multiplies images by it), tumour 0/255.
"""
from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from nnunet_mm.phantom import make_case

PHASES = ("pv", "art")
IMAGE_FORMATS = ("numpy", "numpy1", "tensor", "png16", "png8")
PNG16_OFFSET = 1024
PNG8_WINDOW_HU = (-160.0, 240.0)  # abdominal window mapped onto 0..255


@dataclass(frozen=True)
class WrittenCase:
    """What was written for one case: per phase, the (Z, Y, X) image values the converter should read back (HU, or
    the 8-bit grey values for ``png8``) and the uint8 0/1/2 labels drawn from that phase's masks."""

    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]


def _shift_yx(array: np.ndarray, shift_yx: tuple[int, int], fill: float) -> np.ndarray:
    """``array`` moved by whole voxels in y and x, uncovered voxels set to ``fill``."""
    out = np.full_like(array, fill)
    (dy, dx), (_, ny, nx) = shift_yx, array.shape
    out[:, max(dy, 0):ny + min(dy, 0), max(dx, 0):nx + min(dx, 0)] = \
        array[:, max(-dy, 0):ny - max(dy, 0), max(-dx, 0):nx - max(dx, 0)]
    return out


def _window(hu: np.ndarray) -> np.ndarray:
    low, high = PNG8_WINDOW_HU
    return np.round(np.clip((hu - low) / (high - low), 0.0, 1.0) * 255).astype(np.uint8)


def _save_as_numpy1(array: np.ndarray, path: Path) -> None:
    """``torch.save(array)`` as written under numpy 1.x: the pickle names ``numpy.core.multiarray._reconstruct``."""
    buffer = io.BytesIO()
    torch.save(array, buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("/data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            target.writestr(info.filename, data)


def _save_image_slice(values: np.ndarray, path: Path, image_format: str) -> None:
    if image_format == "numpy":
        torch.save(values.astype(np.float32), path)
    elif image_format == "numpy1":
        _save_as_numpy1(values.astype(np.float32), path)
    elif image_format == "tensor":
        torch.save(torch.from_numpy(values.astype(np.float32)), path)
    elif image_format == "png16":
        Image.fromarray((values.astype(np.int32) + PNG16_OFFSET).astype(np.uint16)).save(path)
    else:
        Image.fromarray(values.astype(np.uint8)).save(path)


def write_mpth_layout(root: Path, *, case_names: Sequence[str] = ("1", "2"), unlabelled: Sequence[str] = (),
                      image_format: str = "numpy", shape_zyx: Sequence[int] = (12, 48, 48),
                      art_shift_yx: tuple[int, int] | None = None, seed: int = 0) -> dict[str, WrittenCase]:
    """Write ``root/{train_img,liver_mask,tumor_mask}/{pv,art}/<case>/<k>.png``, k = 1 … Z.

    Args:
        root: the MPTH folder (created).
        case_names: case folder names; case ``i`` uses phantom seed ``seed + i``.
        unlabelled: names (also listed in ``case_names``) written without mask folders.
        image_format: one of :data:`IMAGE_FORMATS`.
        shape_zyx: slices × rows × columns.
        art_shift_yx: None = the phantom's own per-phase misregistration; else no misregistration except the ART
            image and masks moved by these whole voxels (y, x).
        seed: base seed.

    Returns:
        ``{case name: WrittenCase}``.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {list(IMAGE_FORMATS)}, got {image_format!r}.")
    written = {}
    for index, name in enumerate(case_names):
        case = make_case(seed + index, shape_zyx=shape_zyx, phases=PHASES, misregistration=art_shift_yx is None)
        images = {phase: case.image_on_reference_grid(phase) for phase in PHASES}
        labels = {phase: case.label_on_reference_grid(phase) for phase in PHASES}
        if art_shift_yx is not None:
            images["art"] = _shift_yx(images["art"], art_shift_yx, -1000)
            labels["art"] = _shift_yx(labels["art"], art_shift_yx, 0)
        if image_format == "png8":
            images = {phase: _window(hu) for phase, hu in images.items()}
        for phase in PHASES:
            folders = {kind: root / kind / phase / name for kind in ("train_img", "liver_mask", "tumor_mask")}
            if name in unlabelled:
                folders = {"train_img": folders["train_img"]}
            for folder in folders.values():
                folder.mkdir(parents=True)
            for k in range(images[phase].shape[0]):
                file_name = f"{k + 1}.png"
                _save_image_slice(images[phase][k], folders["train_img"] / file_name, image_format)
                if name in unlabelled:
                    continue
                Image.fromarray((labels[phase][k] >= 1).astype(np.uint8)).save(folders["liver_mask"] / file_name)
                tumour = np.where(labels[phase][k] == 2, 255, 0).astype(np.uint8)
                Image.fromarray(tumour).save(folders["tumor_mask"] / file_name)
        written[name] = WrittenCase(images=images, labels=labels)
    return written
