"""Pieces shared by the sub-commands of ``nnunet_mm`` (the method packages register their own commands): running a
command's handler with its user errors turned into one ``error:`` line, the option groups several commands have
(dataset + configuration + plans, a trained model folder, a new dataset, the torch device), and old option spellings
that keep working for one release with a deprecation warning.

The grammar (README, "Commands") follows nnU-Net's where nnU-Net has one: ``-d`` dataset, ``-c`` configuration, ``-p``
plans, ``-tr`` trainer, ``-m`` model folder, ``-f`` folds, ``-chk`` checkpoint, ``-i``/``-o`` input and output,
``--target-id``/``--target-name``/``--output-root`` for a new dataset, ``-np`` processes, ``-device {cuda,cpu,mps}``
(default cuda, as in nnU-Net). Long options are spelled with dashes; an option that mirrors one of nnU-Net's
(``--disable_tta``) is also accepted with nnU-Net's underscores.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from nnunet_mm.io.console import error_text

if TYPE_CHECKING:
    import torch

Handler = Callable[[argparse.Namespace], int]

#: what a command reports as ``nnunet_mm <command>: error: <message>`` (exit status 1) instead of a traceback: the
#: errors a user can cause (a bad value or key in their data or options) and those of the file system (a missing or
#: existing file, permission denied, a full disk), each naming the file
USER_ERRORS: tuple[type[Exception], ...] = (ValueError, OSError, KeyError)
DEVICES = ("cuda", "cpu", "mps")
DEFAULT_DEVICE = "cuda"  # nnUNetv2_train's and nnUNetv2_predict's default


def set_handler(parser: argparse.ArgumentParser, handler: Handler, *,
                also_reports: tuple[type[Exception], ...] = ()) -> None:
    """Make ``handler(args) -> exit status`` run for the sub-command ``parser`` (through :func:`run_handler`).

    Args:
        parser: the sub-command's parser.
        handler: does the work and prints what the command was asked for; raises on errors.
        also_reports: exception types reported like :data:`USER_ERRORS` for this command (e.g. ``RuntimeError`` of a
            SimpleITK registration that failed on the user's images).
    """
    parser.set_defaults(handler=handler, reported_errors=USER_ERRORS + also_reports)


def run_handler(args: argparse.Namespace) -> int:
    """Run the handler :func:`set_handler` gave the parsed sub-command ``args.command``, after checking that its
    ``-d`` names a dataset nnU-Net finds; an error it reports is printed as ``nnunet_mm <command>: error: <message>``
    on stderr and gives exit status 1."""
    try:
        dataset = getattr(args, "d", None)
        if dataset is not None and not _names_a_folder(str(dataset)):
            dataset_name(dataset)
        return args.handler(args)
    except args.reported_errors as error:
        print(f"nnunet_mm {args.command}: error: {error_text(error)}", file=sys.stderr)
        return 1


def _names_a_folder(text: str) -> bool:
    """Whether a ``-d`` value is a folder (commands that accept one, like ``mas``) rather than an id or name."""
    return "/" in text or os.sep in text or (not text.isdigit() and Path(text).is_dir())


def dataset_name(dataset: int | str, option: str = "-d") -> str:
    """nnU-Net's name (``DatasetNNN_Name``) of the dataset id or name ``dataset``, found in nnU-Net's folders.

    Raises:
        ValueError: no dataset or several datasets have this id, or the text is neither an id nor a name; the
            message gives the option and the nnU-Net folders searched.
    """
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    text = str(dataset)
    if not text.isdigit() and not text.startswith("Dataset"):
        raise ValueError(f"{option} {text}: expected a dataset id (e.g. 511) or name (e.g. Dataset511_Liver).")
    try:
        return maybe_convert_to_dataset_name(text)
    except RuntimeError as error:
        folders = ", ".join(f"{name}={os.environ.get(name, '(unset)')}"
                            for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"))
        what = "several datasets have" if "More than one" in str(error) else "no dataset has"
        raise ValueError(f"{option} {text}: {what} this id in nnU-Net's folders ({folders}); check the id and the "
                         f"nnU-Net path variables.") from None


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """``-d -c -p``: a dataset and the configuration and plans of its preprocessed data."""
    parser.add_argument("-d", required=True, help="dataset name or id")
    _add_configuration_arguments(parser)


def add_preprocessing_arguments(parser: argparse.ArgumentParser) -> None:
    """``-d -c -p -np`` of the plugin's post-preprocessing steps."""
    add_dataset_arguments(parser)
    parser.add_argument("-np", type=int, default=1, help="processes [default: 1]")


def _add_configuration_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", default="3d_fullres", help="configuration [default: %(default)s]")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier [default: %(default)s]")


def add_target_dataset_arguments(parser: argparse.ArgumentParser, *, default_name: str) -> None:
    """``--target-id`` (required), ``--target-name``, ``--output-root``: the new raw dataset a command writes.

    Args:
        parser: the sub-command's parser.
        default_name: what ``--target-name`` defaults to, for the help.
    """
    parser.add_argument("--target-id", type=int, required=True, help="id of the new dataset (1..999)")
    parser.add_argument("--target-name", default=None,
                        help=f"name after DatasetNNN_ of the new dataset [default: {default_name}]")
    parser.add_argument("--output-root", default=None, help="folder the new dataset goes into [default: $nnUNet_raw]")


def add_model_arguments(parser: argparse.ArgumentParser, *, trainer: str, several_folds: bool) -> None:
    """A trained model as nnU-Net's commands name it: ``-d`` (with ``-tr -c -p``) or ``-m`` (the folder), ``-f`` and
    ``-chk``; :func:`model_folder` finds the folder.

    Args:
        parser: the sub-command's parser.
        trainer: the default of ``-tr``.
        several_folds: ``-f`` takes several folds (a list, default ``["0"]``) instead of one (default ``"0"``).
    """
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("-d", help="dataset name or id (with -tr, -p, -c: the model folder in nnUNet_results)")
    model.add_argument("-m", "--model-folder", dest="model_folder", help="model folder (instead of -d/-tr/-p/-c)")
    add_deprecated_alias(parser, "--model_folder", "--model-folder")
    parser.add_argument("-tr", default=trainer, help="trainer name [default: %(default)s]")
    _add_configuration_arguments(parser)
    if several_folds:
        parser.add_argument("-f", nargs="+", default=["0"], help="folds [default: 0]; 'all' for fold_all")
    else:
        parser.add_argument("-f", default="0", help="fold [default: 0]; 'all' for fold_all")
    parser.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint file [default: %(default)s]")


def model_folder(args: argparse.Namespace) -> Path:
    """The model folder that :func:`add_model_arguments`' options name: ``-m``, or
    ``nnUNet_results/<dataset>/<tr>__<p>__<c>``.

    Raises:
        FileNotFoundError: the folder does not exist.
    """
    if args.model_folder is not None:
        folder = Path(args.model_folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"-m {folder}: model folder not found.")
        return folder
    from nnunetv2.utilities.file_path_utilities import get_output_folder

    folder = Path(get_output_folder(args.d, args.tr, args.p, args.c))
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist (train first, or check -d/-tr/-p/-c).")
    return folder


def parse_fold(text: str) -> int | str:
    """A ``-f`` value: a fold number, or ``"all"`` (``fold_all``).

    Raises:
        ValueError: neither.
    """
    if text == "all":
        return text
    if not text.isdigit():
        raise ValueError(f"-f expects fold numbers or 'all', got {text!r}.")
    return int(text)


def check_checkpoints(folder: Path, folds: Iterable[int | str], checkpoint_name: str) -> None:
    """Every ``fold_<f>/<checkpoint_name>`` of a model folder exists (before anything is loaded).

    Raises:
        FileNotFoundError: the first missing checkpoint, with the folds the folder has.
    """
    for fold in folds:
        checkpoint = folder / f"fold_{fold}" / checkpoint_name
        if not checkpoint.is_file():
            trained = sorted(p.name for p in folder.glob("fold_*") if p.is_dir())
            raise FileNotFoundError(f"{checkpoint}: no such checkpoint (-f {fold}, -chk {checkpoint_name}); the model "
                                    f"folder has {trained or 'no fold_* folder'}.")


def add_device_argument(parser: argparse.ArgumentParser, *, what: str = "") -> None:
    """``-device`` (:data:`DEVICES`, default :data:`DEFAULT_DEVICE`, as in nnU-Net); :func:`torch_device` refuses a
    device torch cannot use.

    Args:
        parser: the sub-command's parser.
        what: what runs on the device, for the help (e.g. ``"the learned networks"``).
    """
    parser.add_argument("-device", default=DEFAULT_DEVICE, choices=DEVICES,
                        help=f"torch device{' of ' + what if what else ''}, as in nnUNetv2_train "
                             f"[default: %(default)s]")


def torch_device(name: str) -> torch.device:
    """The torch device ``name`` (one of :data:`DEVICES`).

    Raises:
        ValueError: torch cannot use it here (no CUDA GPU, a CPU-only build of torch, no MPS), saying what to pass.
    """
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ValueError(f"-device cuda: torch {torch.__version__} ({build}) sees no CUDA GPU; pass -device cpu "
                         f"(or -device mps on Apple silicon).")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"-device mps: torch {torch.__version__} has no MPS device here; pass -device cpu or "
                         f"-device cuda.")
    if name not in DEVICES:
        raise ValueError(f"-device {name}: unknown device; choose from {list(DEVICES)}.")
    return torch.device(name)


class _DeprecatedSpellings:
    """Mixed into an option's action by :func:`add_deprecated_alias`: a deprecated spelling stores into the same
    ``dest`` (so ``required`` and mutual exclusion hold for either spelling) and warns once per command line."""

    deprecated_spellings: dict[str, str]

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values, option_string=None):
        new = self.deprecated_spellings.get(option_string)
        if new is not None:
            warned = namespace.__dict__.setdefault("_deprecation_warned", set())
            if option_string not in warned:
                warned.add(option_string)
                print(f"{parser.prog}: warning: '{option_string}' is deprecated, use '{new}'", file=sys.stderr)
        super().__call__(parser, namespace, values, option_string)


@functools.cache
def _with_deprecated_spellings(action_class: type[argparse.Action]) -> type[argparse.Action]:
    return type(action_class.__name__.lstrip("_"), (_DeprecatedSpellings, action_class), {})


def add_deprecated_alias(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Keep the option spelling ``old`` working for one release as a hidden spelling of the option ``new``: it sets
    the same destination and prints ``<prog>: warning: '<old>' is deprecated, use '<new>'`` on stderr (once).

    Args:
        parser: the sub-command's parser, which has ``new`` already.
        old: the spelling to keep (``"--output-id"``); it does not show in ``--help``.
        new: a spelling of the option that replaces it (``"--target-id"``).
    """
    action = parser._option_string_actions[new]
    if old in parser._option_string_actions:
        raise ValueError(f"{parser.prog}: {old} is already an option; it cannot also be a spelling of {new}.")
    if not isinstance(action, _DeprecatedSpellings):
        action.__class__ = _with_deprecated_spellings(type(action))
        action.deprecated_spellings = {}
    action.deprecated_spellings[old] = new
    parser._option_string_actions[old] = action  # not in action.option_strings: hidden from --help


def deprecated_spellings(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{old: new}`` of every spelling :func:`add_deprecated_alias` kept in ``parser``."""
    return {old: new for action in parser._actions if isinstance(action, _DeprecatedSpellings)
            for old, new in action.deprecated_spellings.items()}
