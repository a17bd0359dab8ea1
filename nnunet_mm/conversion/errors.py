"""The one error type every converter raises for problems in the user's source data, and how checks collect them."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


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


def attempt(problems: list[str], function: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """``function(*args, **kwargs)``, or None with the message of the ValueError or FileNotFoundError it raised
    appended to ``problems``: how a check reads a source's files and goes on to collect every problem.

    Example: ``image = attempt(problems, read_image, file)``.
    """
    try:
        return function(*args, **kwargs)
    except (ValueError, FileNotFoundError) as error:
        problems.append(str(error))
        return None
