"""Text for outputs whose encoding may not hold it (an ASCII console or log file on a cluster node)."""
from __future__ import annotations

import sys


def encodable(text: str, encoding: str | None = None) -> str:
    """``text`` with every character that ``encoding`` (default: stdout's, else UTF-8) cannot hold written as a
    backslash escape (``Δ`` → ``\\u0394``), so printing or logging it never raises ``UnicodeEncodeError``."""
    encoding = encoding or getattr(sys.stdout, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding)


def error_text(error: BaseException) -> str:
    """The one-line explanation a command prints after ``error:``: an operating-system error as ``<file>: <what>``
    (``[Errno 13] Permission denied: 'x'`` becomes ``x: Permission denied``), anything else as its message."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None:
        target = f" -> {error.filename2}" if error.filename2 is not None else ""
        return f"{error.filename}{target}: {error.strerror}"
    if isinstance(error, OSError) and error.strerror:
        return f"{error.strerror} (errno {error.errno})"
    return str(error)


def tolerate_unencodable_output() -> None:
    """Let standard output and error write any text: characters their encoding cannot hold (``Δ`` on an ASCII
    console, ``LC_ALL=C``) come out as backslash escapes instead of raising ``UnicodeEncodeError`` mid-run.
    Called once by the entry points (the ``nnunet_mm`` command, the ``bench/`` scripts)."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
