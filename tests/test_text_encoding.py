"""Every text file the project reads or writes names its encoding.

Without ``encoding=`` Python uses the locale's, which is ASCII on many cluster nodes and CI machines
(``LC_ALL=C`` with UTF-8 mode off): a report holding "Δ" or "×" then fails to read back. This scans the source
of the library, the shims, the benchmarks and the tests for text-mode ``open``/``read_text``/``write_text`` calls
without an encoding; a binary mode or a mode the scan cannot see (a variable) is left alone.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("nnunet_mm", "trainers", "planners", "dataset_conversion", "bench", "tests")


def calls_without_encoding(source: str) -> list[tuple[int, str]]:
    """(line, call) for every text-mode file call in ``source`` that leaves the encoding to the locale."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        keywords = {keyword.arg for keyword in node.keywords}
        if "encoding" in keywords or None in keywords:
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "read_text" and not node.args:
            found.append((node.lineno, "read_text"))
        elif isinstance(func, ast.Attribute) and func.attr == "write_text" and len(node.args) == 1:
            found.append((node.lineno, "write_text"))
        elif isinstance(func, ast.Name) and func.id == "open" and len(node.args) <= 2:
            mode = node.args[1] if len(node.args) == 2 else next(
                (keyword.value for keyword in node.keywords if keyword.arg == "mode"), ast.Constant("r"))
            if isinstance(mode, ast.Constant) and "b" not in mode.value:
                found.append((node.lineno, f"open(mode={mode.value!r})"))
    return found


def test_scan_finds_a_call_without_encoding_and_accepts_explicit_or_binary_ones():
    source = ('from pathlib import Path\n'
              'Path("a").read_text()\n'
              'Path("a").write_text("x")\n'
              'open("a", "w")\n'
              'open("a")\n'
              'Path("a").read_text(encoding="utf-8")\n'
              'Path("a").write_text("x", encoding="utf-8")\n'
              'open("a", "rb")\n'
              'open("a", "w", encoding="utf-8")\n')
    assert [line for line, _ in calls_without_encoding(source)] == [2, 3, 4, 5]


def test_every_text_file_call_in_the_project_names_its_encoding():
    offenders = []
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            for line, call in calls_without_encoding(path.read_text(encoding="utf-8")):
                offenders.append(f"{path.relative_to(REPO)}:{line}: {call}")
    assert not offenders, "text file calls without encoding= (fail in an ASCII locale):\n" + "\n".join(offenders)
