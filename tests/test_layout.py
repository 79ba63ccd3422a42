"""The package layout the README draws: dependencies point one way, and modules share public names.

Layers, lowest first (README "Layout"): migrate.errors and the version (everyone's) <- models
(resolve, load and run encoders) <- migrate.core <- migrate.mapping / migrate.matching <-
migrate.nightly (uses mapping) <- train (makes model folders: fine-tune, distill, quantize; uses
every migrate layer) <- migrate.cli on top. Every import counts, at module level or inside a
function: a lazy import is still an arrow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("migrate", "models", "train")
PACKAGE = ROOT / "migrate"

BASE = "base"
"""migrate.errors (the one base exception and its kin) and ``migrate.__version__``: every layer's."""

USES = {
    "models": set(),
    "migrate.core": {"models"},
    "migrate.mapping": {"migrate.core"},
    "migrate.matching": {"migrate.core"},
    "migrate.nightly": {"migrate.mapping"},
    "train": {"migrate.nightly", "migrate.matching"},
    "migrate.cli": {"train"},
}
"""Each layer and the layers right below it; it may import those and whatever they may."""


def allowed(uses: dict[str, set[str]]) -> dict[str, set[str]]:
    """What each layer may import: itself, BASE and every layer below it (the closure of ``uses``)."""
    def below(layer: str, seen: frozenset[str] = frozenset()) -> set[str]:
        assert layer not in seen, f"USES draws a circle through {layer}"
        return set().union(*({lower} | below(lower, seen | {layer}) for lower in uses[layer]))

    return {BASE: {BASE}, **{layer: {layer, BASE} | below(layer) for layer in uses}}


ALLOWED = allowed(USES)


PUBLIC_API = "migrate (public API)"
"""What ``from migrate import NAME`` imports (any name but ``__version__``): the layer on top's."""


def layer_of(module: str) -> str | None:
    """The layer of a module of taxmig's packages (None: not in them, or in a package no layer names)."""
    if module == PUBLIC_API:
        return "migrate.cli"
    parts = module.split(".")
    if parts[0] not in PACKAGES:
        return None
    if module in ("migrate", "migrate.errors"):
        return BASE
    if parts[0] == "migrate":
        name = ".".join(parts[:2])
        return name if name in USES else None
    return parts[0]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by dotted name."""
    return {module_name(p, root): p for package in packages for p in sorted((root / package).rglob("*.py"))}


def imports(path: Path, root: Path, modules: dict[str, Path]) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import of taxmig's packages in ``path``, nested ones (inside
    functions) too; ``from package import submodule`` names the submodule, relative imports resolved."""
    found = []
    package = module_name(path, root) if path.name == "__init__.py" else module_name(path, root).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.split(".")[0] not in PACKAGES:
                continue
            names = [a.name for a in node.names]
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules]
            rest = [n for n in names if f"{base}.{n}" not in modules]
            found += [(node.lineno, sub, []) for sub in submodules]
            if rest or not submodules:
                found.append((node.lineno, base, rest))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] in PACKAGES]
    return found


def graph(root: Path, packages=PACKAGES) -> dict[str, dict[str, list[int]]]:
    """module -> {imported module of the packages: the lines}; an import of a name a package's
    ``__init__`` defines is an arrow to that ``__init__``."""
    modules = source_files(root, packages)
    edges: dict[str, dict[str, list[int]]] = {m: {} for m in modules}
    for name, path in modules.items():
        for line, target, names in imports(path, root, modules):
            while target not in modules and "." in target:  # ``import a.b.c`` of a non-module: its package
                target = target.rpartition(".")[0]
            if target == "migrate" and set(names) - {"__version__"}:
                target = PUBLIC_API  # the lazy names of migrate/__init__ reach every layer
            if target != name:
                edges[name].setdefault(target, []).append(line)
    return edges


def cycles(edges: dict[str, dict[str, list[int]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, {})):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def upward(edges: dict[str, dict[str, list[int]]], root: Path, allowed_imports=ALLOWED) -> list[str]:
    """Every import of a layer the importing module's layer may not use, as 'path:line imports module'."""
    paths = source_files(root)
    wrong = []
    for name, targets in sorted(edges.items()):
        layer = layer_of(name)
        for target, lines in sorted(targets.items()):
            if layer is None or layer_of(target) not in allowed_imports.get(layer, set()):
                wrong += [f"{paths[name].relative_to(root)}:{line} ({layer}) imports {target} ({layer_of(target)})"
                          for line in lines]
    return wrong


def unplaced(root: Path, packages=PACKAGES) -> list[str]:
    return [name for name in source_files(root, packages) if layer_of(name) is None]


def test_every_module_has_a_layer():
    assert not unplaced(ROOT), "add the new subpackage to USES"


def test_no_import_points_up_or_sideways():
    """migrate, models and train: a module imports its own layer and the layers below it only."""
    wrong = upward(graph(ROOT), ROOT)
    assert not wrong, "\n".join(wrong)


def test_no_file_cycle():
    """No two modules import each other, directly or round a circle (lazy imports included)."""
    edges = graph(ROOT)
    found = cycles(edges)
    detail = [" -> ".join(c) + ": " + "; ".join(f"{a} imports {b} (line {edges[a][b][0]})" for a in c for b in c
                                                  if b in edges[a]) for c in found]
    assert not found, "\n".join(detail)


@pytest.mark.parametrize("package", sorted(name for name in USES if name.startswith("migrate.") and name != "migrate.cli"))
def test_migrate_subpackages_point_one_way(package):
    """The README's arrows inside migrate/: core <- mapping <- nightly; core <- matching."""
    edges = graph(ROOT)
    wrong = [f"{name} imports {target}" for name, targets in edges.items() if layer_of(name) == package
             for target in targets if layer_of(target) not in ALLOWED[package]]
    assert not wrong, "\n".join(wrong)


def test_the_checks_catch_a_planted_import(tmp_path):
    """The checks above can fail: an upward import and a circle, planted in a copy of the layout."""
    for name, text in {"models/__init__.py": "", "models/registry.py": "import models.runtime\n",
                       "models/runtime.py": "def f():\n    from models.registry import load_encoder\n",
                       "migrate/__init__.py": "from migrate.errors import TaxmigError\n", "migrate/errors.py": "",
                       "migrate/core/__init__.py": "", "migrate/core/encoder.py": "from models import registry\n",
                       "train/__init__.py": "",
                       "train/pairs.py": "from migrate.core import encoder\n",
                       }.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    edges = graph(tmp_path)
    assert edges["migrate.core.encoder"] == {"models.registry": [1]}
    assert cycles(edges) == [["models.registry", "models.runtime"]]
    assert not upward(edges, tmp_path)
    (tmp_path / "models/card.py").write_text("def f():\n    from train.pairs import x\n")
    (tmp_path / "migrate/core/index.py").write_text("from migrate.mapping.scoring import y\n")
    (tmp_path / "migrate/mapping").mkdir()
    (tmp_path / "migrate/mapping/__init__.py").write_text("")
    (tmp_path / "migrate/mapping/scoring.py").write_text("from migrate import run_migration, __version__\n")
    assert upward(graph(tmp_path), tmp_path) == [
        "migrate/core/index.py:1 (migrate.core) imports migrate.mapping.scoring (migrate.mapping)",
        "migrate/mapping/scoring.py:1 (migrate.mapping) imports migrate (public API) (migrate.cli)",
        "models/card.py:2 (models) imports train.pairs (train)"]


def test_every_module_lives_in_a_subpackage():
    flat = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "cli.py", "errors.py"], flat


def test_no_module_imports_another_modules_private_names():
    """What modules share has a public name (issue 16: review used reconcile's ``_publish``)."""
    modules = source_files(ROOT)
    private = []
    for name, path in modules.items():
        for line, module, names in imports(path, ROOT, modules):
            private += [f"{path.relative_to(ROOT)}:{line} {module}.{n}" for n in names
                        if n.startswith("_") and not n.startswith("__")]
    assert not private, "\n".join(private)
