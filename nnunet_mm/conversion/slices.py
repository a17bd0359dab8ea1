"""2D slice files (PNG, JPEG, serialised arrays with a ``.png`` name) and 3D images built from slice arrays."""
from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_mm.io.safe_load import torch_error_line, numpy_allowed_in_torch_load

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
_NUMPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save (zip format) and np.savez
_NUMBER = re.compile(r"(\d+)")


def natural_key(path: Path | str) -> tuple:
    """Sort key that orders embedded numbers numerically: ``2.png`` before ``10.png``, ``IMG-0004-00002`` before
    ``IMG-0004-00010``."""
    name = Path(path).name
    return tuple(int(part) if part.isdigit() else part.lower() for part in _NUMBER.split(name))


def numeric_sorted(paths: Sequence[Path]) -> list[Path]:
    """``paths`` sorted by :func:`natural_key` (slice numbers, not lexical order)."""
    return sorted(paths, key=natural_key)


def sniff_format(path: Path) -> str:
    """``"png"``, ``"jpeg"``, ``"npy"``, ``"torch"`` (zip-based ``torch.save``) or ``"unknown"``, from the first bytes,
    whatever the file is called."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head.startswith(_PNG_MAGIC):
        return "png"
    if head.startswith(_JPEG_MAGIC):
        return "jpeg"
    if head.startswith(_NUMPY_MAGIC):
        return "npy"
    if head.startswith(_ZIP_MAGIC):
        return "torch"
    return "unknown"


def _read_raster(path: Path) -> np.ndarray:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise ValueError(f"{path}: cannot read image: {lines[-1] if lines else error}") from None
    return sitk.GetArrayFromImage(image)


def read_slice(path: Path, *, grayscale: bool = True) -> np.ndarray:
    """Read one 2D slice as a numpy array.

    PNG (8/16-bit) and JPEG go through SimpleITK; ``.npy`` through ``numpy.load(allow_pickle=False)``; ``torch.save``
    files (the MPTH loader reads its ``.png`` slices with ``torch.load``) through ``torch.load(weights_only=True)``
    with numeric numpy arrays allow-listed: tensors, numeric arrays and plain containers load, pickled code never
    runs.

    Args:
        path: the slice file.
        grayscale: RGB(A) rasters are refused unless their colour channels are equal (then the first is kept);
            with False, colour rasters come back as ``(H, W, C)``.

    Raises:
        ValueError: unknown format, unreadable file, not 2D. The message names ``path``.
    """
    path = Path(path)
    kind = sniff_format(path)
    if kind in ("png", "jpeg"):
        array = _read_raster(path)
    elif kind == "npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise ValueError(f"{path}: cannot read numpy array: {error}") from None
    elif kind == "torch":
        import torch

        try:
            with numpy_allowed_in_torch_load():
                loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - torch raises many types for bad files
            raise ValueError(f"{path}: cannot read serialised array (torch.load with weights_only=True): "
                             f"{torch_error_line(error)}") from None
        if isinstance(loaded, torch.Tensor):
            array = loaded.numpy()
        elif isinstance(loaded, np.ndarray):
            array = loaded
        else:
            raise ValueError(f"{path}: serialised object is a {type(loaded).__name__}, not an array or tensor.")
    else:
        raise ValueError(f"{path}: unknown slice format (not PNG, JPEG, .npy or torch.save data; first bytes "
                         f"{open(path, 'rb').read(8)!r}).")
    array = np.squeeze(np.asarray(array))
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        if grayscale:
            if not (np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2])):
                raise ValueError(f"{path}: expected a grey-level slice, got a colour image of shape {array.shape}.")
            array = array[..., 0]
    elif array.ndim != 2:
        raise ValueError(f"{path}: expected a 2D slice, got an array of shape {array.shape}.")
    return array


def image_from_array(array_zyx: np.ndarray, spacing_xyz: Sequence[float], *, reference: sitk.Image | None = None,
                     origin: Sequence[float] | None = None, direction: Sequence[float] | None = None) -> sitk.Image:
    """A SimpleITK image from a ``(z, y, x)`` array, taking geometry from ``reference`` if given, else from
    ``spacing_xyz`` / ``origin`` / ``direction``."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
    if reference is not None:
        if tuple(reversed(array_zyx.shape)) != reference.GetSize():
            raise ValueError(f"array of shape {array_zyx.shape} (z, y, x) does not match the reference grid of size "
                             f"{reference.GetSize()} (x, y, z).")
        image.CopyInformation(reference)
        return image
    image.SetSpacing(tuple(float(s) for s in spacing_xyz))
    if origin is not None:
        image.SetOrigin(tuple(float(v) for v in origin))
    if direction is not None:
        image.SetDirection(tuple(float(v) for v in direction))
    return image
