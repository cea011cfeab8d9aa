"""Imports point down the layers only: core ← schemas ← db ← services ← worker ← api ← web.

Routes translate HTTP and call services; services own the domain and call db; nothing below
knows what is above it. Imports only for type checking (`if TYPE_CHECKING:`) do not count:
they vanish at run time. `app/main.py` and `app/cli.py` wire everything and sit on top.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("core", "schemas", "db", "services", "worker", "api", "web")


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


def _calls(dependant: Any) -> set[Any]:
    found = set()
    for sub in dependant.dependencies:
        found.add(sub.call)
        found |= _calls(sub)
    return found


def test_handlers_that_read_take_the_read_session_and_writers_the_other() -> None:
    """The session was chosen by HTTP method, so a GET that wrote would have run in
    AUTOCOMMIT without anyone seeing it in the handler. Now the signature says it."""
    from fastapi.routing import APIRoute

    from app.api.deps import get_read_session, get_session
    from app.api.router import all_routes

    wrong = []
    for route in all_routes():
        if not isinstance(route, APIRoute):
            continue
        calls = _calls(route.dependant)
        methods = route.methods or set()
        reads_only = methods <= {"GET", "HEAD"}
        if reads_only and get_session in calls:
            wrong.append(f"{sorted(methods)} {route.path} takes the read-write session")
        direct = {sub.call for sub in route.dependant.dependencies}
        if not reads_only and get_read_session in direct:
            wrong.append(f"{sorted(methods)} {route.path} writes through the read session")
    assert wrong == []


def test_routes_are_flat_and_every_api_route_is_under_the_one_prefix() -> None:
    """app.router holds the routes themselves (no nested router to match through: see
    app/api/router.py), each with its full path, under API_PREFIX unless it is a probe or the
    root page, or the web UI's (under its path) or the docs page."""
    from fastapi.routing import APIRoute

    from app.api import API_PREFIX
    from app.main import create_app

    app = create_app()
    routes = [route for route in app.router.routes if isinstance(route, APIRoute)]
    assert routes, "the app's own route list holds the API routes"
    outside = {r.path for r in routes if not r.path.startswith((f"{API_PREFIX}/", "/ui/"))}
    assert outside <= {
        "/",
        "/openapi.json",
        "/live",
        "/ready",
        "/health",
        "/metrics",
        "/docs",
        "/ui",
    }


def test_services_take_the_principal_never_the_orm_user() -> None:
    """One name for the caller: services decide who may do what from a `Principal` (what
    the API's auth dependency gives and the cache holds), not from an ORM `User`."""
    wrong = []
    for path in sorted((ROOT / "app" / "services").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for arg in [*node.args.args, *node.args.kwonlyargs]:
                    names = {
                        n.id
                        for n in ast.walk(arg.annotation or ast.Pass())
                        if isinstance(n, ast.Name)
                    }
                    if "User" in names:
                        wrong.append(f"{path.name}:{node.lineno} {node.name}({arg.arg})")
    assert wrong == []


def test_the_apps_state_is_read_through_its_typed_view_only() -> None:
    """create_app writes `app.state`; the routes of both faces read it through
    `app.api.deps.app_state` (and the web UI's files through `app_assets`), typed, never as
    untyped attributes that a typo turns into an AttributeError at run time."""
    readers = {"app/main.py", "app/api/deps.py", "app/web/assets.py"}
    found = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        name = str(path.relative_to(ROOT))
        code = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(code):
            if isinstance(node, ast.Attribute) and ast.unparse(node).endswith("app.state"):
                found.append(name)
    assert set(found) <= readers, set(found) - readers
    assert {"app/api/deps.py", "app/web/assets.py"} <= set(found)


def test_no_module_outside_the_api_imports_a_route_module() -> None:
    """What the API's routes and the web UI's pages share (queueing a job, an export's
    download, the upload's limits) lives beside the routes, not in one of them: a route
    module is imported by the router alone."""
    importers = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        for line, imported in _runtime_imports(path):
            if imported.startswith("app.api.routes") and path.parent.name != "api":
                importers.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert importers == []


# What builds or runs a statement: SQLAlchemy's constructors, and a session's execution.
_STATEMENTS = {"select", "update", "insert", "delete", "text", "func", "and_", "or_", "tuple_"}
_EXECUTES = {"execute", "scalar", "scalars", "stream"}


def _statements_outside_the_repository(package: Path) -> list[str]:
    found = []
    for path in sorted(package.glob("*.py")):
        if path.name == "repository.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                found += [f"{path.name}: {a.name}" for a in node.names if a.name in _STATEMENTS]
            if isinstance(node, ast.Attribute) and node.attr in _EXECUTES:
                found.append(f"{path.name}:{node.lineno} .{node.attr}")
    return found


def test_the_jobs_queries_live_in_their_repository_alone(tmp_path: Path) -> None:
    """One place per feature where its queries live: the modules of the jobs package say
    what a job does, and `repository.py` names every statement it runs."""
    package = ROOT / "app" / "services" / "jobs"
    assert (package / "repository.py").exists()
    assert _statements_outside_the_repository(package) == []
    (tmp_path / "runner.py").write_text(
        "from sqlalchemy import update\nasync def f(s):\n    await s.execute(update(1))\n"
    )
    assert _statements_outside_the_repository(tmp_path) == [
        "runner.py: update",
        "runner.py:3 .execute",
    ]
