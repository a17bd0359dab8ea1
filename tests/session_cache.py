"""Fixtures built once per test session and shared by every pytest-xdist worker."""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock


def build_once_per_session(tmp_path_factory: pytest.TempPathFactory, name: str,
                           build: Callable[[Path], None]) -> Path:
    """The folder ``name``, filled by ``build(folder)`` by the first pytest-xdist worker of the session that asks for
    it (the others wait under a file lock and reuse it). Users must treat it as read-only (copy before writing)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared" / name
    root.parent.mkdir(parents=True, exist_ok=True)
    done = root.with_name(f"{name}.complete")
    with FileLock(f"{root}.lock"):
        if not done.is_file():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            build(root)
            done.touch()
    return root
