"""The package layout's import rules (architecture.md): method packages never import each other, the core never
imports a method package, and only the settings reader touches the dataset.json block key."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "nnunet_mm"
METHODS = ("cmg", "cmc", "synthesis", "weak", "atlas")
# entry points may import every method: the command line registers their commands
ENTRY_POINTS = (LIBRARY / "cli" / "main.py", LIBRARY / "demo.py")


def _imported_modules(file: Path) -> set[str]:
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def _method_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "nnunet_mm" and parts[1] in METHODS else None


@pytest.mark.parametrize("method", METHODS)
def test_a_method_package_imports_no_other_method_package(method):
    offending = {}
    for file in sorted((LIBRARY / method).rglob("*.py")):
        others = {m for m in _imported_modules(file) if _method_of(m) not in (None, method)}
        if others:
            offending[str(file.relative_to(ROOT))] = sorted(others)
    assert not offending, f"method package {method} imports other method packages: {offending}"


def test_the_core_imports_no_method_package():
    offending = {}
    for file in sorted(LIBRARY.rglob("*.py")):
        relative = file.relative_to(LIBRARY)
        if relative.parts[0] in METHODS or file in ENTRY_POINTS:
            continue
        methods = {m for m in _imported_modules(file) if _method_of(m) is not None}
        if methods:
            offending[str(relative)] = sorted(methods)
    assert not offending, f"core modules import method packages: {offending}"


def test_the_block_key_is_spelled_out_in_one_module_only():
    spelled = sorted(str(f.relative_to(ROOT)) for folder in ("nnunet_mm", "trainers", "planners", "dataset_conversion")
                     for f in (ROOT / folder).rglob("*.py") if '"nnunet_mm"' in f.read_text(encoding="utf-8"))
    assert spelled == ["nnunet_mm/settings/block.py"], spelled


def test_the_import_rules_catch_a_sibling_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from nnunet_mm.cmg.network import CMGUNet\nimport nnunet_mm.settings\n", encoding="utf-8")
    assert {_method_of(m) for m in _imported_modules(probe)} == {"cmg", None}
