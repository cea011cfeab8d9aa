"""How a request finds its route, and what the authenticated routes ask FastAPI to solve:
the per-request work every API call pays before its handler runs."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Match

from app.api.deps import CurrentPrincipal, get_current_principal
from app.api.routing import Route

PATHS = [
    "/live",
    "/api/v1/items",
    "/api/v1/items/",
    "/api/v1/items/0b6f3a52-8d7e-4f0a-9c31-5e2d1a7b9f40",
    "/api/v1/items/not-a-uuid",
    "/api/v1/items/import",
    "/api/v1/jobs/0b6f3a52-8d7e-4f0a-9c31-5e2d1a7b9f40/cancel",
    "/api/v1/users/me",
    "/ui/login",
    "/ui/static/app.0123456789ab.js",
    "/prefix/api/v1/items",
    "/nowhere",
    "",
]


def _scope(path: str, method: str, root_path: str = "") -> dict[str, Any]:
    return {"type": "http", "path": path, "root_path": root_path, "method": method}


def test_every_route_of_the_app_rules_out_a_request_cheaply(app: FastAPI) -> None:
    """Routes are tried in order; the ones of our routers first compare the request's path
    with their fixed start (half the routing time of the items listing). The only other
    route is FastAPI's own OpenAPI route."""
    others = [
        getattr(route, "path", route)
        for route in app.router.routes
        if isinstance(route, APIRoute) and not isinstance(route, Route)
    ]
    assert others == []


@pytest.mark.parametrize("root_path", ["", "/prefix"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_route_matches_exactly_what_fastapis_route_matches(
    app: FastAPI, method: str, root_path: str
) -> None:
    """The shortcut only ever answers NONE where APIRoute would: same match, same scope."""
    routes = [route for route in app.router.routes if isinstance(route, Route)]
    compared = 0
    for route in routes:
        for path in PATHS:
            ours = route.matches(_scope(path, method, root_path))
            theirs = APIRoute.matches(route, _scope(path, method, root_path))
            assert ours == theirs, (route.path, path, method, root_path)
            compared += ours[0] != Match.NONE
    assert compared >= 10  # the comparison covered real matches, not only misses


def test_the_principal_asks_fastapi_for_the_token_only(app: FastAPI) -> None:
    """Every sub-dependency is solved again on each request (about 25 µs apiece): the
    principal, on every authenticated request, takes settings, cache and database from
    the app instead of declaring them."""
    listing = next(
        route
        for route in app.router.routes
        if isinstance(route, APIRoute) and route.path == "/api/v1/items"
    )
    principal = next(
        dependency
        for dependency in listing.dependant.dependencies
        if dependency.call is get_current_principal
    )
    assert [dependency.name for dependency in principal.dependencies] == ["token"]
    assert CurrentPrincipal.__metadata__[0].dependency is get_current_principal
