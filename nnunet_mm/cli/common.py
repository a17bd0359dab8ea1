"""Pieces shared by the sub-commands of ``nnunet_mm`` (the method packages register their own commands)."""
from __future__ import annotations

import argparse


def add_preprocessing_arguments(parser: argparse.ArgumentParser) -> None:
    """``-d -c -p -np`` of the plugin's post-preprocessing steps."""
    parser.add_argument("-d", required=True, help="dataset name or id")
    parser.add_argument("-c", default="3d_fullres", help="configuration [default: %(default)s]")
    parser.add_argument("-p", default="nnUNetPlans", help="plans identifier [default: %(default)s]")
    parser.add_argument("-np", type=int, default=1, help="processes [default: 1]")


def default_device() -> str:
    """``cuda`` when torch sees a GPU, else ``cpu``."""
    try:
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu"
