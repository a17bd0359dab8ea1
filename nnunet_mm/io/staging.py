"""All-or-nothing creation of an output folder: write into a hidden staging folder, then rename it into place."""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


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
def staged_dataset(final_dir: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes ``final_dir``, on any exception it is deleted.

    ``final_dir`` is created by one rename at the end, so readers never see a half-written folder. With
    ``overwrite=True`` an existing ``final_dir`` is renamed aside, the staging folder is renamed into place, and only
    then is the old folder deleted. If the block raises (including KeyboardInterrupt), the staging folder is removed
    and an existing ``final_dir`` is left exactly as it was. Nothing outside ``final_dir``'s parent is touched.

    Args:
        final_dir: the folder to create, e.g. ``$nnUNet_raw/Dataset511_MultiPhaseLiver``. Its parent is created if
            missing.
        overwrite: replace an existing, non-empty ``final_dir``.

    Raises:
        FileExistsError: ``final_dir`` exists and is not empty and ``overwrite`` is False, or it exists and is not a
            folder. Raised before anything is created.
    """
    final_dir = Path(final_dir).absolute()
    if final_dir.exists() or final_dir.is_symlink():
        if not final_dir.is_dir() or final_dir.is_symlink():
            raise FileExistsError(f"{final_dir} exists and is not a folder; remove it or choose another output.")
        if not overwrite and any(final_dir.iterdir()):
            raise FileExistsError(f"{final_dir} already exists and is not empty; pass overwrite=True (--overwrite) "
                                  f"to replace it, or remove it first.")
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(final_dir, "staging")
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

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
