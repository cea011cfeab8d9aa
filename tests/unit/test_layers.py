"""Imports point down the layers only: core ← schemas ← db ← services ← worker ← api.

Routes translate HTTP and call services; services own the domain and call db; nothing below
knows what is above it. Imports only for type checking (`if TYPE_CHECKING:`) do not count:
they vanish at run time. `app/main.py` and `app/cli.py` wire everything and sit on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("core", "schemas", "db", "services", "worker", "api")


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "app" or len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def _runtime_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        mine = _layer(module)
        if mine is None:
            continue
        for line, imported in _runtime_imports(path):
            theirs = _layer(imported)
            if theirs is not None and theirs > mine:
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nfrom app.api.deps import X\n"
        "if TYPE_CHECKING:\n    from app.services.items import Y\n"
    )
    assert _runtime_imports(source) == [(1, "typing"), (2, "app.api.deps")]
    assert _layer("app.api.deps") == LAYERS.index("api")
