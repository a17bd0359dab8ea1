"""Pieces shared by the sub-commands of ``nnunet_mm`` (the method packages register their own commands): running a
command's handler with its user errors turned into one ``error:`` line, and the option groups several commands have
(dataset + configuration + plans, a trained model folder, the torch device)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
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
    """Run the handler :func:`set_handler` gave the parsed sub-command ``args.command``; an error it reports is
    printed as ``nnunet_mm <command>: error: <message>`` on stderr and gives exit status 1."""
    try:
        return args.handler(args)
    except args.reported_errors as error:
        print(f"nnunet_mm {args.command}: error: {error_text(error)}", file=sys.stderr)
        return 1


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
    model.add_argument("-m", "--model_folder", help="model folder (instead of -d/-tr/-p/-c)")
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
    else:
        from nnunetv2.utilities.file_path_utilities import get_output_folder
        folder = Path(get_output_folder(args.d, args.tr, args.p, args.c))
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {folder} does not exist (train first, or check -d/-tr/-p/-c).")
    return folder


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``-device`` (:data:`DEVICES`), default: cuda if torch sees a GPU, else cpu (:func:`torch_device`)."""
    parser.add_argument("-device", default=None, choices=DEVICES, help="device [default: cuda if available, else cpu]")


def torch_device(name: str | None) -> torch.device:
    """The torch device ``name``; None: ``cuda`` when torch sees a GPU, else ``cpu``."""
    import torch

    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
