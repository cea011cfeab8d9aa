"""How a request finds its route, and what the authenticated routes ask FastAPI to solve:
the per-request work every API call pays before its handler runs."""

from __future__ import annotations

from typing import Any, cast, get_args

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


def test_the_principal_and_the_listing_ask_fastapi_for_nothing_else(app: FastAPI) -> None:
    """Every dependency is solved again on each request (about 25 µs apiece): the principal,
    on every authenticated request, reads its token itself and takes settings, cache and
    database from the app; the items listing declares nothing but the principal."""
    listing = next(
        route
        for route in app.router.routes
        if isinstance(route, APIRoute)
        and route.path == "/api/v1/items"
        and "GET" in (route.methods or ())
    )
    assert [dependency.call for dependency in listing.dependant.dependencies] == [
        get_current_principal
    ]
    [principal] = listing.dependant.dependencies
    assert principal.dependencies == []
    assert get_args(CurrentPrincipal)[1].dependency is get_current_principal


def test_every_route_that_needs_a_user_documents_the_bearer_token(app: FastAPI) -> None:
    """The principal reads the token itself, so FastAPI no longer sees the scheme: the API
    document gets it from `document_security`, on exactly the routes that need a user."""
    schema = app.openapi()
    assert schema["components"]["securitySchemes"] == {
        "OAuth2PasswordBearer": {
            "type": "oauth2",
            "flows": {"password": {"scopes": {}, "tokenUrl": "/api/v1/auth/token"}},
        }
    }
    documented = {
        (method.upper(), path)
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") == [{"OAuth2PasswordBearer": []}]
    }
    public = {("GET", "/live"), ("GET", "/ready"), ("GET", "/health"), ("GET", "/")}
    public |= {(m, p) for p, ops in schema["paths"].items() for m in ops if "/auth/" in p}
    expected = {
        (method, route.path_format)
        for route in app.router.routes
        if isinstance(route, APIRoute) and route.include_in_schema
        for method in route.methods or ()
        if _needs_a_user(route.dependant)
    }
    assert documented == expected
    assert {("GET", "/api/v1/items"), ("POST", "/api/v1/items/import")} <= documented
    assert not documented & {(m.upper(), p) for m, p in public}


def _needs_a_user(dependant: Any) -> bool:
    from app.api.deps import get_current_user, oauth2_scheme

    return any(
        sub.call in (get_current_principal, get_current_user, oauth2_scheme) or _needs_a_user(sub)
        for sub in dependant.dependencies
    )


@pytest.mark.parametrize("cors", ["", "https://app.example"])
def test_every_request_passes_one_middleware_of_ours(tmp_path: Any, cors: str) -> None:
    """Request id, metrics, access line, body limits and the read's retry are one layer:
    each layer more is a coroutine and a send wrapper on every request. CORS, when it is
    on, sits inside it, so that its answers get their request id and access line too."""
    from app.core.middleware import RequestContextMiddleware
    from app.main import create_app
    from tests.helpers import make_settings

    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    app = create_app(settings.model_copy(update={"cors_origins": cors}))
    layers = [
        cast(type, middleware.cls).__name__ for middleware in app.user_middleware
    ]  # outermost first
    inner = ["CORSMiddleware"] if cors else []
    assert layers == [RequestContextMiddleware.__name__, *inner]
