"""``nnunet_mm env``: what this environment gives nnU-Net and the plugin: the nnU-Net path variables, the start-up hook
that lists the trainer folder in ``nnUNet_extTrainer``, the versions of the packages the plugin runs on (with torch's
CUDA build and the GPUs it sees), and every plugin trainer as nnU-Net's own lookup finds it."""
from __future__ import annotations

import argparse
import ast
import contextlib
import io
import os
from importlib import metadata
from pathlib import Path

import nnunet_mm

LABEL_WIDTH = 30
NNUNET_PATHS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
#: (distribution, shown name) of the packages whose version ``env`` prints; a missing one reads "not installed"
PACKAGES = ((nnunet_mm.__name__, nnunet_mm.__name__), ("nnunetv2", "nnunetv2"), ("torch", "torch"),
            ("dynamic_network_architectures", "dynamic_network_architectures"),
            ("batchgeneratorsv2", "batchgeneratorsv2"), ("SimpleITK", "SimpleITK"), ("monai", "MONAI"))
SHIM_MODULE = "nnunet_mm_trainers.py"


def _line(label: str, value: object) -> None:
    print(f"{label:<{LABEL_WIDTH}}: {value}")


def package_versions() -> dict[str, str]:
    """``{shown name: version or "not installed"}`` of :data:`PACKAGES`, from the installed distributions."""
    versions = {}
    for distribution, shown in PACKAGES:
        try:
            versions[shown] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            versions[shown] = "not installed"
    return versions


def cuda_summary() -> dict[str, str]:
    """torch's CUDA build, whether it sees a GPU, and the GPUs' names."""
    import torch

    available = torch.cuda.is_available()
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if available else []
    return {"CUDA (torch build)": torch.version.cuda or "none (CPU-only build of torch)",
            "CUDA available": f"yes, {len(devices)} device(s)" if available else "no",
            **{f"cuda:{i}": name for i, name in enumerate(devices)},
            "MPS available": "yes" if torch.backends.mps.is_available() else "no"}


def plugin_trainer_names(shim_folder: str | None) -> list[str]:
    """The trainer names the shim module of ``shim_folder`` exports (read without importing it)."""
    if shim_folder is None:
        return []
    tree = ast.parse((Path(shim_folder) / SHIM_MODULE).read_text(encoding="utf-8"))
    return sorted(alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                  for alias in node.names)


def nnunet_trainer_class(name: str) -> type:
    """The trainer class nnU-Net's ``recursive_find_trainer_class_by_name`` finds for ``name``: nnU-Net's own
    trainers first, then every folder of ``nnUNet_extTrainer``, as ``nnUNetv2_train -tr`` does.

    Raises:
        ValueError: nnU-Net finds no such trainer, or its module does not import (the first line of the reason).
    """
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints every folder and module it searches
            return recursive_find_trainer_class_by_name(name)
    except (RuntimeError, ImportError, AssertionError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise ValueError(f"nnU-Net finds no trainer {name!r}: {reason}") from None


def find_trainer(name: str) -> tuple[bool, str]:
    """(found, where) for the plugin trainer ``name`` as nnU-Net finds it (:func:`nnunet_trainer_class`); a
    trainer of nnU-Net's own with the same name counts as not found, since it shadows the plugin's."""
    try:
        trainer = nnunet_trainer_class(name)
    except ValueError as error:
        return False, str(error)
    if trainer.__module__.startswith("nnunetv2."):
        return False, f"nnU-Net's own {trainer.__module__}.{name} shadows the plugin's trainer of this name"
    return True, f"{trainer.__module__}.{trainer.__name__}"


def run_env(args: argparse.Namespace) -> int:
    """Print the report; exit status 1 when nnU-Net would not find every plugin trainer."""
    import _nnunet_mm_ext

    print("nnU-Net paths")
    for name in NNUNET_PATHS:
        _line(name, os.environ.get(name, "(unset)"))
    folder = _nnunet_mm_ext.trainer_shim_folder()
    value = os.environ.get("nnUNet_extTrainer", "")
    listed = folder is not None and any(os.path.normpath(p) == os.path.normpath(folder)
                                        for p in value.split(os.pathsep) if p)
    print("\ntrainer discovery")
    _line("trainer shim folder", folder)
    _line("nnUNet_extTrainer", value or "(unset)")
    _line("hook active", "yes" if listed else "NO")
    print("\nversions")
    for shown, version in package_versions().items():
        _line(shown, version)
    for label, text in cuda_summary().items():
        _line(label, text)
    names = plugin_trainer_names(folder)
    print(f"\nplugin trainers nnU-Net finds ({len(names)}; nnUNetv2_train ... -tr NAME)")
    missing = []
    for name in names:
        found, where = find_trainer(name)
        _line(name, where if found else f"NOT FOUND ({where})")
        if not found:
            missing.append(name)
    if not listed:
        print("\nnnU-Net will not find the nnunet_mm trainers in this environment (the start-up hook did not run, "
              "e.g. an install with --target or python -S). Set it yourself:\n"
              f"  export nnUNet_extTrainer={value + os.pathsep if value else ''}{folder}")
    elif missing:
        print(f"\nnnU-Net does not find {missing}; see the reason next to each.")
    return 0 if listed and not missing else 1
