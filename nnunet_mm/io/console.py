"""Text for outputs whose encoding may not hold it (an ASCII console or log file on a cluster node)."""
from __future__ import annotations

import sys


def encodable(text: str, encoding: str | None = None) -> str:
    """``text`` with every character that ``encoding`` (default: stdout's, else UTF-8) cannot hold written as a
    backslash escape (``Δ`` → ``\\u0394``), so printing or logging it never raises ``UnicodeEncodeError``."""
    encoding = encoding or getattr(sys.stdout, "encoding", None) or "utf-8"
    return text.encode(encoding, "backslashreplace").decode(encoding)
