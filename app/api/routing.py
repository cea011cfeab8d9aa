"""The route class of every router: FastAPI's APIRoute, with a cheap first test, and
authentication before the body is read.

FastAPI reads and parses a request's body before it solves the route's dependencies, so
a route that requires a user would read an anonymous 5 MB upload in full only to answer
401. A dependency registered with `authenticates_first` names a gate (a function of the
request alone) that the route runs before anything else when it has a body; the gate
leaves what it found in the request's state for the dependency to return.

The app matches a request against its routes in order, and FastAPI's `APIRoute.matches`
costs about 2.5 µs per route it tries (scope lookups, then the path's regular expression):
the items listing, 20th in line, spent 48 µs of each request finding its route, 21 µs now.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from fastapi.dependencies.models import Dependant
from fastapi.encoders import jsonable_encoder
from fastapi.routing import APIRoute
from fastapi.security.base import SecurityBase
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

Gate = Callable[[Request], Awaitable[None]]
Shortcut = Callable[[Request], Awaitable[Response | None]]
_gates: dict[Callable[..., Any], Gate] = {}
_shortcuts: dict[Callable[..., Any], Shortcut] = {}
_schemes: dict[Callable[..., Any], SecurityBase] = {}
D = TypeVar("D", bound=Callable[..., Any])
R = TypeVar("R")


def authenticates_first(gate: Gate) -> Callable[[D], D]:
    """Register `gate` as what a route with a body runs, before reading it, when the
    decorated dependency is among its dependencies."""

    def register(dependency: D) -> D:
        _gates[dependency] = gate
        return dependency

    return register


def _gate_of(dependant: Dependant) -> Gate | None:
    return _registered(_gates, dependant)


def shortcut(fast: Shortcut) -> Callable[[D], D]:
    """Register `fast` as what the decorated endpoint's route tries first, in FastAPI's
    place: it reads the parameters of the requests it knows how to answer itself, and
    returns None for every other request, which the route then answers as usual (errors
    included). Raised exceptions go to the app's handlers as any route's do.

    For the hottest reads only: FastAPI validates parameters and solves dependencies anew
    on every request (24 calls per dependency to find what to read, none of it cached), and
    that was 60 % of the cost of an items page served from the cache."""

    def register(endpoint: D) -> D:
        _shortcuts[endpoint] = fast
        return endpoint

    return register


def reads_credentials(scheme: SecurityBase) -> Callable[[D], D]:
    """Register the decorated dependency as one that reads its credentials with `scheme`
    itself, not as a sub-dependency: every dependency FastAPI solves costs each request
    some 25 µs. The API document still shows the scheme on the routes that use it
    (`document_security`)."""

    def register(dependency: D) -> D:
        _schemes[dependency] = scheme
        return dependency

    return register


def document_security(schema: dict[str, Any], routes: list[BaseRoute]) -> None:
    """Add the schemes of `reads_credentials` dependencies to the operations of `routes`
    and to the document's components, as FastAPI does for a scheme it solves."""
    for route in routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        scheme = _registered(_schemes, route.dependant)
        if scheme is None:
            continue
        definition = jsonable_encoder(scheme.model, by_alias=True, exclude_none=True)
        components = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        components[scheme.scheme_name] = definition
        for method in route.methods or ():
            operation = schema["paths"][route.path_format][method.lower()]
            requirements = operation.setdefault("security", [])
            if {scheme.scheme_name: []} not in requirements:
                requirements.append({scheme.scheme_name: []})


def _registered(registry: dict[Callable[..., Any], R], dependant: Dependant) -> R | None:
    """What `registry` holds for the first dependency of `dependant`'s tree it names."""
    for sub in dependant.dependencies:
        found = registry.get(sub.call) if sub.call is not None else None
        if found is None:
            found = _registered(registry, sub)
        if found is not None:
            return found
    return None


class _ChoiceConvertor(Convertor[str]):
    """A path segment that is one of a fixed set of words: any other word does not match the
    route at all (404 or 405 from the routes that do), instead of matching and failing
    validation with 422."""

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


def register_choice(name: str, words: list[str]) -> None:
    """`{param:name}` in a path matches exactly these words."""
    choice = type(f"Choice_{name}", (_ChoiceConvertor,), {"regex": "|".join(words)})
    register_url_convertor(name, choice())


class Route(APIRoute):
    """A route that turns away a request whose path cannot contain its fixed start (the
    template up to its first parameter) before any other work. The answer is the same as
    APIRoute's: a path that matches the template always contains that text."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        self.fixed_start = self.path.split("{", 1)[0]

    shortcut: Shortcut | None = None  # see `shortcut`

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        self.shortcut = _shortcuts.get(self.endpoint)
        if self.shortcut is not None:
            solved = handler

            async def shortcut_first(request: Request) -> Response:
                fast = self.shortcut
                response = await fast(request) if fast is not None else None
                return response if response is not None else await solved(request)

            handler = shortcut_first
        gate = _gate_of(self.dependant) if self.body_field is not None else None
        if gate is None:
            return handler

        async def authenticated_first(request: Request) -> Response:
            await gate(request)
            return await handler(request)

        return authenticated_first

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if self.fixed_start not in scope.get("path", ""):
            return Match.NONE, {}
        return super().matches(scope)
