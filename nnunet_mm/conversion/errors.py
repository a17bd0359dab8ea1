"""The one error type every converter raises for problems in the user's source data."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class ConversionError(ValueError):
    """The source data has problems; ``problems`` holds one line per problem, each naming the offending file.

    Converters collect every problem they can find before writing anything and raise them together, so a user
    fixes a dataset in one round instead of one file per run.
    """

    def __init__(self, problems: Sequence[str], source_dir: Path | None = None):
        self.problems = list(problems)
        where = f"{source_dir}: " if source_dir is not None else ""
        super().__init__(f"{where}{len(self.problems)} problem(s) found; nothing was written. Fix them and run again:\n"
                         + "\n".join(f"  - {problem}" for problem in self.problems))


def raise_if_problems(problems: Sequence[str], source_dir: Path | None = None) -> None:
    """Raise :class:`ConversionError` when ``problems`` is not empty."""
    if problems:
        raise ConversionError(problems, source_dir)
