"""The package layout the README draws: dependencies point one way, and modules share public names.

core <- mapping <- nightly; core <- matching; cli on top (migrate/__init__.py, README "Layout")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "migrate"
# what each subpackage may import from taxmig's own packages (errors and the version are everyone's)
ALLOWED = {
    "core": {"core"},
    "mapping": {"core", "mapping"},
    "nightly": {"core", "mapping", "nightly"},
    "matching": {"core", "matching"},
}


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every ``from migrate... import`` / ``import migrate...``, nested ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "migrate":
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "migrate"]
    return found


def _modules(package: str) -> list[Path]:
    return sorted((PACKAGE / package).glob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_dependencies_point_one_way(package):
    wrong = []
    for path in _modules(package):
        for line, module, names in _imports(path):
            if module == "migrate.errors" or (module == "migrate" and names == ["__version__"]):
                continue
            parts = module.split(".")
            if len(parts) < 2 or parts[1] not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_every_module_lives_in_a_subpackage():
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "cli.py", "errors.py"], flat


def test_no_module_imports_another_modules_private_names():
    """What modules share has a public name (issue 16: review used reconcile's ``_publish``)."""
    private = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, module, names in _imports(path):
            private += [f"{path.relative_to(PACKAGE.parent)}:{line} {module}.{n}" for n in names
                        if n.startswith("_") and not n.startswith("__")]
    assert not private, "\n".join(private)
