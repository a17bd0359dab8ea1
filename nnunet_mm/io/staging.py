"""Where outputs go and how they appear: the one place that names a new raw dataset folder, refuses to replace an
existing output without ``--overwrite`` or to touch an input, and writes a folder through a hidden staging folder that
is renamed into place at the end.

Every command that writes a dataset, a model folder or a results folder goes through :func:`staged_dataset`; commands
that do long work first (training, reading every case) call :func:`check_output` up front so that they fail before
that work, with the same message.
"""
from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

_DATASET_NAME = re.compile(r"[A-Za-z0-9_-]+")
_DATASET_FOLDER = re.compile(r"(Dataset\d{3})_")


def new_dataset_folder(dataset_id: int, dataset_name: str, *, output_root: Path | None = None) -> Path:
    """``<output_root>/DatasetNNN_<dataset_name>``, the folder of a new nnU-Net raw dataset (not created here).

    Args:
        dataset_id: nnU-Net dataset id, 1..999.
        dataset_name: the part after ``DatasetNNN_``: letters, digits, ``_`` and ``-``.
        output_root: the folder holding the datasets; None = ``$nnUNet_raw``.

    Raises:
        ValueError: a bad id or name; no ``output_root`` and ``nnUNet_raw`` unset; ``output_root`` already holds
            another dataset with the same id (nnU-Net finds datasets by id, so it would pick one of them).
    """
    if not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"dataset_id must be in 1..999, got {dataset_id}.")
    if not _DATASET_NAME.fullmatch(dataset_name):
        raise ValueError(f"dataset_name may hold only letters, digits, '_' and '-', got {dataset_name!r}.")
    if output_root is None:
        from nnunetv2.paths import nnUNet_raw

        if not nnUNet_raw:
            raise ValueError("no output folder: output_root (--output-root) was not given and the environment "
                             "variable nnUNet_raw is not set. Pass one, or export nnUNet_raw=/path/to/nnUNet_raw (see "
                             "nnU-Net's documentation/setting_up_paths.md).")
        output_root = Path(nnUNet_raw)
    folder = Path(output_root) / f"Dataset{int(dataset_id):03d}_{dataset_name}"
    if folder.parent.is_dir():
        prefix = f"Dataset{int(dataset_id):03d}_"
        clashes = sorted(p.name for p in folder.parent.iterdir()
                         if p.is_dir() and p.name.startswith(prefix) and p.name != folder.name)
        if clashes:
            raise ValueError(f"{folder.parent} already holds {clashes} with the same dataset id; nnU-Net finds "
                             f"datasets by id, so remove it or choose another dataset id.")
    return folder


def check_output(target: Path, *, overwrite: bool, sources: Sequence[Path] = ()) -> Path:
    """The one check before an output (a folder, or a single file) is written; returns ``target``.

    An existing file or non-empty folder is refused unless ``overwrite``; an output that is, contains or lies
    inside one of ``sources`` is always refused, since replacing it (or writing into it) would change the input.

    Args:
        target: the folder or file about to be written.
        overwrite: replace an existing ``target`` (the commands' ``--overwrite``).
        sources: the inputs the output is made from (folders or files); they are never modified.

    Raises:
        ValueError: ``target`` overlaps one of ``sources``.
        FileExistsError: ``target`` exists (a folder: and is not empty) and ``overwrite`` is False.
    """
    target = Path(target)
    resolved = target.resolve()
    for source in sources:
        source_resolved = Path(source).resolve()
        if resolved == source_resolved or source_resolved.is_relative_to(resolved):
            raise ValueError(f"the output {target} contains the source {source}; choose another output (replacing "
                             f"the output would delete the input).")
        if resolved.is_relative_to(source_resolved):
            raise ValueError(f"the output {target} lies inside the source folder {source}; choose an output outside "
                             f"the input.")
    if overwrite or not (target.exists() or target.is_symlink()):
        return target
    is_folder = target.is_dir() and not target.is_symlink()
    if is_folder and not any(target.iterdir()):  # an empty folder holds nothing to lose
        return target
    raise FileExistsError(f"{target} already exists{' and is not empty' if is_folder else ''}; pass --overwrite to "
                          f"replace it, or remove it first.")


def _sibling(final_dir: Path, tag: str) -> Path:
    """A new, empty folder ``.<name>.<tag>-<random>`` next to ``final_dir`` (same file system, so renames are
    atomic)."""
    while True:
        candidate = final_dir.parent / f".{final_dir.name}.{tag}-{secrets.token_hex(4)}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue


@contextlib.contextmanager
def _target_lock(final_dir: Path) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``final_dir`` for the block (an advisory ``flock``, released by the kernel
    when the process dies, so a killed writer never blocks the next one); a second writer of the same target is
    refused at once."""
    if fcntl is None:  # no flock (Windows): writers of one target are not serialised
        yield
        return
    dataset = _DATASET_FOLDER.match(final_dir.name)  # datasets are found by id: one writer per id, whatever the name
    lock_path = final_dir.parent / f".{dataset.group(1) if dataset else final_dir.name}.lock"
    while True:
        descriptor = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise FileExistsError(f"{final_dir} is being written by another process right now (it holds "
                                  f"{lock_path}); wait for it to finish or choose another output.") from None
        try:  # the holder before us may have removed the file after we opened it: lock the file at the name
            same = os.stat(lock_path).st_ino == os.fstat(descriptor).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(descriptor)
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        yield
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(descriptor)


def _leftovers(final_dir: Path, tag: str) -> list[Path]:
    return sorted(final_dir.parent.glob(f".{glob.escape(final_dir.name)}.{tag}-*"), key=lambda p: p.stat().st_mtime)


def recover_interrupted_write(final_dir: Path) -> list[str]:
    """Undo what a killed :func:`staged_dataset` left beside ``final_dir``; returns one line per action (also
    logged as warnings). Call it only while holding the target's lock (:func:`staged_dataset` does).

    * ``final_dir`` missing but a ``.<name>.old-*`` folder present (killed between moving the old dataset aside
      and renaming the new one in): the newest old folder is renamed back to ``final_dir``.
    * ``.<name>.old-*`` folders beside an existing ``final_dir`` (killed while deleting the replaced dataset):
      deleted.
    * ``.<name>.staging-*`` folders (a killed write; never complete, since completion is the rename): deleted.
    """
    final_dir = Path(final_dir)
    actions = []
    olds = _leftovers(final_dir, "old")
    if olds and not (final_dir.exists() or final_dir.is_symlink()):
        os.rename(olds[-1], final_dir)
        actions.append(f"restored {final_dir} from {olds[-1].name}, left by an interrupted --overwrite")
        olds = olds[:-1]
    for leftover in olds + _leftovers(final_dir, "staging"):
        shutil.rmtree(leftover, ignore_errors=True)
        actions.append(f"deleted {leftover}, left by an interrupted write of {final_dir.name}")
    for action in actions:
        logger.warning(action)
    return actions


@contextlib.contextmanager
def staged_dataset(final_dir: Path, *, overwrite: bool = False, sources: Sequence[Path] = ()) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes ``final_dir``, on any exception it is deleted.

    ``final_dir`` is created by one rename at the end, so readers never see a half-written folder. With
    ``overwrite=True`` an existing ``final_dir`` is renamed aside, the staging folder is renamed into place, and only
    then is the old folder deleted. If the block raises (including KeyboardInterrupt), the staging folder is removed
    and an existing ``final_dir`` is left exactly as it was. Nothing outside ``final_dir``'s parent is touched.

    One writer per target: the whole block holds a lock beside ``final_dir`` (a second command writing the same
    folder is refused at once), and ``final_dir`` is checked again just before the rename, so two commands started
    together without ``overwrite`` never replace each other's output. What a killed earlier write left behind
    (:func:`recover_interrupted_write`) is repaired first: an old dataset half-way through ``--overwrite`` is put
    back, stale staging folders are deleted.

    Args:
        final_dir: the folder to create, e.g. ``$nnUNet_raw/Dataset511_MultiPhaseLiver``. Its parent is created if
            missing.
        overwrite: replace an existing, non-empty ``final_dir``.
        sources: the inputs the output is made from; ``final_dir`` must not be, contain or lie inside one of them
            (see :func:`check_output`).

    Raises:
        FileExistsError: ``final_dir`` exists and is not empty and ``overwrite`` is False (checked before anything is
            created, and again before the rename), it exists and is not a folder, or another process is writing it.
        ValueError: ``final_dir`` overlaps one of ``sources``. Raised before anything is created.
    """
    final_dir = Path(final_dir).absolute()
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    with _target_lock(final_dir):
        recover_interrupted_write(final_dir)
        if (final_dir.exists() or final_dir.is_symlink()) and (not final_dir.is_dir() or final_dir.is_symlink()):
            raise FileExistsError(f"{final_dir} exists and is not a folder; remove it or choose another output.")
        check_output(final_dir, overwrite=overwrite, sources=sources)
        staging = _sibling(final_dir, "staging")
        try:
            yield staging
            if not overwrite:
                check_output(final_dir, overwrite=False)  # someone created it meanwhile: keep theirs
            _refuse_id_clash(final_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _move_into_place(staging, final_dir)


def _refuse_id_clash(final_dir: Path) -> None:
    """Refuse a dataset folder whose id another dataset beside it took meanwhile (nnU-Net finds datasets by id)."""
    dataset = _DATASET_FOLDER.match(final_dir.name)
    if dataset:
        clashes = sorted(p.name for p in final_dir.parent.glob(f"{dataset.group(1)}_*")
                         if p.is_dir() and p.name != final_dir.name)
        if clashes:
            raise FileExistsError(f"{final_dir.parent} now holds {clashes} with the same dataset id (written while "
                                  f"this command ran); nnU-Net finds datasets by id, so {final_dir.name} was not "
                                  f"written.")


def _move_into_place(staging: Path, final_dir: Path) -> None:
    """Rename ``staging`` to ``final_dir``, replacing an existing ``final_dir`` (moved aside first, deleted last;
    put back if the rename fails)."""
    if not final_dir.exists():
        try:
            os.rename(staging, final_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return
    old = _sibling(final_dir, "old")
    try:
        os.replace(final_dir, old)  # `old` is an empty folder, which rename may replace
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        old.rmdir()
        raise
    try:
        os.rename(staging, final_dir)
    except BaseException:
        os.rename(old, final_dir)  # put the previous dataset back
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("replaced %s (previous content deleted)", final_dir)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(target: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``target`` to write one file to; on success it replaces ``target`` in one
    rename (readers see the old file or the new one, never half of one), on an error it is removed."""
    temporary = target.parent / f".{target.name}.{secrets.token_hex(4)}.partial"  # same file system: atomic rename
    try:
        yield temporary
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
