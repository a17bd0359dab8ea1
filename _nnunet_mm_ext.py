"""Start-up hook: lets nnU-Net's own commands find the nnunet_mm trainers.

nnU-Net 2.8 looks for trainers outside its package only in the folders listed in the environment variable
``nnUNet_extTrainer`` (``os.pathsep``-separated). The install places ``nnunet_mm_ext.pth`` in site-packages, and
Python runs ``import _nnunet_mm_ext`` from it when any interpreter of this environment starts (including the
spawned data-augmentation and DDP workers). This module then *appends* our shim folder to the variable, so a value
the user set keeps working and keeps precedence. It imports nothing but ``os`` and never raises.

Set ``NNUNET_MM_NO_EXT_HOOK=1`` to switch the hook off.
"""
import os


def trainer_shim_folder() -> "str | None":
    """Folder holding the trainer shim modules: ``trainers/`` in a source checkout, ``nnunet_mm/trainers`` installed."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.join(here, "trainers"), os.path.join(here, "nnunet_mm", "trainers")):
        if os.path.isfile(os.path.join(candidate, "nnunet_mm_trainers.py")):
            return candidate
    return None


def extend_ext_trainer_variable(environ: "os._Environ | dict" = os.environ) -> None:
    """Append the shim folder to ``environ['nnUNet_extTrainer']`` unless it is listed already."""
    folder = trainer_shim_folder()
    if folder is None:
        return
    current = [p for p in environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if any(os.path.normpath(p) == os.path.normpath(folder) for p in current):
        return
    environ["nnUNet_extTrainer"] = os.pathsep.join(current + [folder])


if os.environ.get("NNUNET_MM_NO_EXT_HOOK", "") not in ("1", "true", "True"):
    try:
        extend_ext_trainer_variable()
    except Exception:  # a start-up hook must never break the interpreter
        pass
