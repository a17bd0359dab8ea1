"""Loading serialised Python objects without running code from them: checkpoints (``torch.save``) and nnU-Net's
``.pkl`` files.

A pickle can name any importable function and call it while loading, so a checkpoint or ``.pkl`` someone hands over
(a downloaded model folder, a shared preprocessed dataset) can run code the moment it is loaded. Here both kinds of
file are read by restricted unpicklers that rebuild only data: tensors, numeric numpy arrays and scalars, numbers,
strings, containers, ``torch.device``. A file that names anything else is refused with an error naming it; a file
that is cut or empty is refused as unreadable (not as untrusted).

Trust model (README "Trust model"): the plugin never unpickles arbitrary objects from model folders or preprocessed
folders. nnU-Net itself loads its checkpoints with ``weights_only=False`` and its ``.pkl`` files with ``pickle``;
before the plugin lets nnU-Net load a model folder (``predict``, ``cmg-maps``) or a preprocessed folder, it reads
the same files here, so a crafted file is refused before nnU-Net sees it. Folders listed in the environment
variable ``NNUNET_MM_TRUSTED_FOLDERS`` (separated by ``os.pathsep``) are the escape hatch: files below them are
loaded without the restriction (for checkpoints of other trainers that store custom objects, when you made them).
"""
from __future__ import annotations

import contextlib
import io
import os
import pickle
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

TRUSTED_FOLDERS_VARIABLE = "NNUNET_MM_TRUSTED_FOLDERS"


class UnreadableFileError(ValueError):
    """The file is empty, cut short or not the expected format."""


class UntrustedContentError(ValueError):
    """The file asks to rebuild an object other than plain data (it could run code); refused."""


def trusted_folders() -> list[Path]:
    """The folders listed in ``$NNUNET_MM_TRUSTED_FOLDERS`` (resolved); files below them load unrestricted."""
    listed = os.environ.get(TRUSTED_FOLDERS_VARIABLE, "")
    return [Path(entry).expanduser().resolve() for entry in listed.split(os.pathsep) if entry.strip()]


def is_trusted(path: Path) -> bool:
    """True if ``path`` lies below a folder of :func:`trusted_folders`."""
    resolved = Path(path).resolve()
    return any(resolved.is_relative_to(folder) for folder in trusted_folders())


def _reconstruct_functions() -> list:
    from numpy._core import multiarray as multiarray_2  # numpy >= 2

    return [multiarray_2._reconstruct, multiarray_2.scalar]


def _numeric_dtype_classes() -> list[type]:
    return sorted({type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"}, key=str)


def numpy_safe_globals() -> list:
    """What ``torch.load(weights_only=True)`` must additionally allow to rebuild numeric numpy arrays and scalars:
    numpy's ``_reconstruct`` and ``scalar`` under their numpy 1 and numpy 2 module names, ``ndarray``, ``dtype`` and
    the numeric dtype classes (no object dtype, so an array cannot carry other objects)."""
    reconstruct, scalar = _reconstruct_functions()
    return [(reconstruct, "numpy.core.multiarray._reconstruct"), (reconstruct, "numpy._core.multiarray._reconstruct"),
            (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            np.ndarray, np.dtype, *_numeric_dtype_classes()]


@contextlib.contextmanager
def numpy_allowed_in_torch_load() -> Iterator[None]:
    """Within the block, ``torch.load(weights_only=True)`` also rebuilds numeric numpy arrays and scalars."""
    import torch

    with torch.serialization.safe_globals(numpy_safe_globals()):
        yield


def torch_error_line(error: BaseException) -> str:
    """The informative line of a torch.load error (the WeightsUnpickler line if there is one), without ANSI codes."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(error).splitlines()]
    lines = [line for line in lines if line]
    for line in lines:
        if "WeightsUnpickler error" in line or line.startswith("Trying to load unsupported"):
            return line.split("Please use", 1)[0].strip()
    return lines[0].split(". This is an internal")[0] if lines else type(error).__name__


def load_torch_file(path: Path, *, map_location: Any = "cpu") -> Any:
    """``torch.load`` of ``path`` that never runs code from it (``weights_only=True`` + numeric numpy), unless
    ``path`` lies in a trusted folder (:func:`is_trusted`).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnreadableFileError: empty, cut short (e.g. a kill during the write) or not a ``torch.save`` file.
        UntrustedContentError: the file holds objects other than data. Both messages name ``path``.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    if path.stat().st_size == 0:
        raise UnreadableFileError(f"{path}: the file is empty (0 bytes; a write was interrupted?).")
    if is_trusted(path):
        return torch.load(path, map_location=map_location, weights_only=False)
    try:
        with numpy_allowed_in_torch_load():
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        line = torch_error_line(error)
        if "Weights only load failed" in str(error):  # the restricted unpickler refused a global or an opcode
            raise UntrustedContentError(
                f"{path}: refused to load: it holds objects other than tensors, numbers and containers "
                f"({line}); loading it could run code. If you created this file yourself, add its folder to "
                f"{TRUSTED_FOLDERS_VARIABLE}.") from None
        raise UnreadableFileError(f"{path}: cannot be read as a checkpoint ({line}).") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError) as error:
        raise UnreadableFileError(f"{path}: cannot be read as a checkpoint (cut short or corrupt: "
                                  f"{torch_error_line(error)}).") from None


_PICKLE_ALLOWED = {
    ("builtins", name) for name in ("set", "frozenset", "tuple", "list", "dict", "complex", "slice", "bytearray",
                                    "range", "int", "float", "bool", "str", "bytes")
} | {("collections", "OrderedDict"), ("numpy", "ndarray"), ("numpy", "dtype")} | {
    (module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct",
                                                                                                   "scalar")}


class _DataUnpickler(pickle.Unpickler):
    """Rebuilds containers, numbers, strings and numeric numpy arrays/scalars; any other class or function is
    refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PICKLE_ALLOWED:
            return super().find_class(module, name)
        if module in ("numpy.dtypes",) and any(cls.__name__ == name for cls in _numeric_dtype_classes()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def load_pickle_file(path: Path) -> Any:
    """The object in the ``.pkl`` file ``path``, rebuilt by an unpickler that allows only data (see
    :class:`_DataUnpickler`), unless ``path`` lies in a trusted folder.

    Raises:
        FileNotFoundError, UnreadableFileError, UntrustedContentError: as :func:`load_torch_file`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    content = path.read_bytes()
    if is_trusted(path):
        return pickle.loads(content)  # noqa: S301 - the user declared this folder trusted
    try:
        return _DataUnpickler(io.BytesIO(content)).load()
    except pickle.UnpicklingError as error:
        if "is not allowed" in str(error):
            raise UntrustedContentError(f"{path}: refused to load: it asks to rebuild {str(error).split(' is ')[0]}"
                                        f", not plain data; loading it could run code. If you created this file "
                                        f"yourself, add its folder to {TRUSTED_FOLDERS_VARIABLE}.") from None
        raise UnreadableFileError(f"{path}: cannot be read as a pickle ({error}).") from None
    except (EOFError, ValueError, TypeError, IndexError, AttributeError) as error:
        raise UnreadableFileError(f"{path}: cannot be read as a pickle (cut short or corrupt: {error}).") from None


def verify_pickles(files: Iterable[Path]) -> int:
    """Load every file with :func:`load_pickle_file` (raising on the first that is refused); returns how many."""
    count = 0
    for file in files:
        load_pickle_file(file)
        count += 1
    return count


def verify_preprocessed_folder(folder: Path) -> int:
    """Check every ``.pkl`` of an nnU-Net preprocessed data folder (the case properties nnU-Net loads with
    ``pickle``) before nnU-Net reads them; returns how many were checked. Raises as :func:`load_pickle_file`."""
    return verify_pickles(sorted(Path(folder).glob("*.pkl")))


def verify_model_folder(model_folder: Path, folds: Iterable[str | int], checkpoint_name: str) -> None:
    """Check the checkpoints nnU-Net's predictor will load from ``model_folder`` (``fold_<f>/<checkpoint_name>``)
    with :func:`load_torch_file` before it loads them with ``weights_only=False``.

    Raises:
        FileNotFoundError: a fold's checkpoint is missing (named).
        UnreadableFileError, UntrustedContentError: as :func:`load_torch_file`.
    """
    for fold in folds:
        fold_folder = Path(model_folder) / (f"fold_{fold}" if str(fold) != "all" else "fold_all")
        checkpoint = fold_folder / checkpoint_name
        if not checkpoint.is_file():
            raise FileNotFoundError(f"{checkpoint}: no such checkpoint (fold {fold}, -chk {checkpoint_name}).")
        load_torch_file(checkpoint)
