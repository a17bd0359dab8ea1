"""Checkpoints that survive a kill: written to a temporary file and renamed into place, read without running code,
and, when the one nnU-Net asks for cannot be read, replaced by the newest readable checkpoint of the same run.

nnU-Net writes ``checkpoint_latest.pth`` / ``checkpoint_best.pth`` / ``checkpoint_final.pth`` with ``torch.save``
straight to the final name, so a kill during the write leaves a 0-byte or partial file that ``--c`` then fails on
(without naming it). :class:`~nnunet_mm.training.multimodal_trainer.MultiModalTrainer` writes every checkpoint
through :func:`staged_checkpoint` and reads it through :func:`read_checkpoint`. Extra modules a trainer keeps (a
mean teacher) are saved beside the checkpoint as ``<checkpoint>.<name>.safetensors``, also atomically, with the
epoch in their metadata.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nnunet_mm.io.safe_load import UnreadableFileError, load_torch_file
from nnunet_mm.io.staging import atomic_file

#: the checkpoints of one nnU-Net training run, in the order nnU-Net's ``--c`` looks for them
CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint read by :func:`read_checkpoint`: its content, the file it came from and, when that is not the
    file asked for, why (otherwise ``""``)."""

    content: dict
    file: Path
    fallback_reason: str = ""


@contextlib.contextmanager
def staged_checkpoint(filename: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``filename`` to ``torch.save`` to; on success it is flushed to disk and renamed
    over ``filename`` (readers see the old checkpoint or the new one, never half of one); on an error it is removed
    and ``filename`` is unchanged."""
    with atomic_file(Path(filename)) as partial:
        yield partial
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())


def read_checkpoint(requested: Path, map_location: torch.device | str = "cpu") -> LoadedCheckpoint:
    """Read ``requested`` (``weights_only``, see :func:`nnunet_mm.io.safe_load.load_torch_file`); if it is empty,
    cut or corrupt, read the newest readable other checkpoint of the same run folder (:data:`CHECKPOINT_NAMES`)
    instead.

    Raises:
        UnreadableFileError: neither ``requested`` nor any other checkpoint of its folder can be read; the message
            names every file tried and why.
        UntrustedContentError: ``requested`` holds objects other than data (no fallback: someone put it there).
    """
    requested = Path(requested)
    try:
        return LoadedCheckpoint(load_torch_file(requested, map_location=map_location), requested)
    except UnreadableFileError as error:
        problems = [str(error)]
    others = [requested.parent / name for name in CHECKPOINT_NAMES if name != requested.name]
    others = sorted((path for path in others if path.is_file()), key=lambda path: path.stat().st_mtime, reverse=True)
    for other in others:
        try:
            content = load_torch_file(other, map_location=map_location)
        except UnreadableFileError as error:
            problems.append(str(error))
            continue
        return LoadedCheckpoint(content, other, problems[0])
    tried = "; ".join(problems)
    raise UnreadableFileError(f"no readable checkpoint in {requested.parent}: {tried}. Delete the broken file(s) to "
                              f"start the training afresh.")


def companion_file(checkpoint: Path, name: str) -> Path:
    """``<checkpoint>.<name>.safetensors``: where an extra module of a trainer is saved beside ``checkpoint``."""
    return Path(f"{checkpoint}.{name}.safetensors")


def save_companions(checkpoint: Path, modules: Mapping[str, nn.Module], *, epoch: int) -> None:
    """Save each module as :func:`companion_file` (safetensors, atomically), with ``epoch`` in its metadata."""
    from safetensors.torch import save_model

    for name, module in modules.items():
        with atomic_file(companion_file(checkpoint, name)) as partial:
            save_model(module, str(partial), metadata={"epoch": str(epoch)})  # save_model handles shared tensors


def load_companion(checkpoint: Path, name: str, module: nn.Module, *, epoch: int, device: torch.device | str
                   ) -> str | None:
    """Load ``module`` from :func:`companion_file`; returns a note when its epoch differs from ``epoch`` (a kill
    between the two writes), ``""`` when it matches, None when there is no such file (``module`` unchanged).

    Raises:
        UnreadableFileError: the file exists but cannot be read (named).
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_model

    file = companion_file(checkpoint, name)
    if not file.is_file():
        return None
    try:
        with safe_open(str(file), framework="pt") as handle:
            saved_epoch = (handle.metadata() or {}).get("epoch")
        load_model(module, str(file), device=str(device))
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise UnreadableFileError(f"{file}: cannot be read ({error}).") from None
    if saved_epoch is not None and int(saved_epoch) != int(epoch):
        return f"{file} is from epoch {saved_epoch}, the checkpoint from epoch {epoch}"
    return ""
