"""How a trainer refuses to start: one ``error:`` line naming the file and the problem, exit status 1, no
traceback -- also under ``nnUNetv2_train``, whose code the plugin does not control.

:class:`TrainingRefused` is a ``SystemExit`` (Python prints its message and exits 1 without a traceback) and a
``ValueError`` (code that catches the plugin's user errors, and tests, still see one).
"""
from __future__ import annotations

from nnunet_mm.io.console import error_text


class TrainingRefused(SystemExit, ValueError):
    """Raised from a trainer for a problem with the user's files (settings, checkpoints, preprocessed data)."""

    def __init__(self, problem: BaseException | str):
        if isinstance(problem, KeyError) and problem.args:
            message = str(problem.args[0])  # str(KeyError) adds quotes
        else:
            message = problem if isinstance(problem, str) else error_text(problem)
        super().__init__(f"error: {message}")

    def __str__(self) -> str:
        return str(self.code)
