"""The README stays true to the code: every import path it names exists and every command it shows is registered."""
from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
_DOTTED = re.compile(r"\bnnunet_mm(?:\.[A-Za-z_]\w*)+")
_COMMAND = re.compile(r"(?:^|[`\s(])nnunet_mm ([a-z][a-z-]+)\b", re.MULTILINE)
# words that follow "nnunet_mm " in prose, not commands
_PROSE = {"block", "command", "commands", "plugin", "is", "and", "the", "installs", "adds", "trainers"}


def _resolves(dotted: str) -> bool:
    """Whether ``dotted`` is a module, or an attribute chain of a module (``nnunet_mm.cmg.network.CMGUNet``)."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            if not hasattr(target, attribute):
                return False
            target = getattr(target, attribute)
        return True
    return False


def _dotted_paths() -> list[str]:
    paths = {match.group(0).rstrip(".") for match in _DOTTED.finditer(README.read_text(encoding="utf-8"))}
    return sorted(p for p in paths if not p.endswith(("DatasetNNN_Name", ".py")))


@pytest.mark.parametrize("dotted", _dotted_paths())
def test_every_import_path_in_the_readme_exists(dotted):
    assert _resolves(dotted), f"README.md names {dotted}, which does not import"


def test_every_command_in_the_readme_is_registered():
    from nnunet_mm.cli.main import build_parser

    subparsers = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    registered = set(subparsers.choices)
    named = {m.group(1) for m in _COMMAND.finditer(README.read_text(encoding="utf-8"))} - _PROSE
    assert named, "no 'nnunet_mm <command>' found in README.md; the pattern is wrong"
    assert named <= registered, f"README.md shows commands that do not exist: {sorted(named - registered)}"
