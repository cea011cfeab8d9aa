"""The items listing's shortcut (app/api/routing.py `shortcut`) answers what FastAPI's route
answers, byte for byte, for every request, and answers the plain ones itself."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import Response

from app.api.routing import Route
from tests.helpers import Headers

VARYING = {"date", "x-request-id"}


def _listing(app: FastAPI) -> Route:
    [route] = [
        r
        for r in app.router.routes
        if isinstance(r, Route) and r.path == "/api/v1/items" and "GET" in (r.methods or ())
    ]
    return route


def _position(token: str) -> str:
    """A cursor without its expiry and MAC, which change with the second it was issued in:
    its direction, created_at and id (app/services/pagination.py, `_LAYOUT`)."""
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))[:25].hex()


def _answer(client: TestClient, query: str, headers: dict[str, str]) -> tuple[Any, ...]:
    response = client.get(f"/api/v1/items{query}", headers=headers)
    kept = sorted(
        (k, re.sub(r"cursor=([A-Za-z0-9_-]+)", lambda m: _position(str(m[1])), v))
        for k, v in response.headers.items()
        if k not in VARYING
    )
    body = response.json()
    if isinstance(body, dict):
        body.pop("request_id", None)
        for key in ("next", "prev"):
            if body.get(key):
                body[key] = _position(body[key])
    return response.status_code, kept, body


def test_every_request_gets_the_same_answer_with_and_without_the_shortcut(
    app: FastAPI, client: TestClient, make_user: Callable[..., Headers], admin_headers: Headers
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    for n in range(7):
        client.post("/api/v1/items", json={"title": f"item {n}"}, headers=alice)
    first = client.get("/api/v1/items?limit=3", headers=alice).json()
    following = first["next"]
    back = client.get(f"/api/v1/items?limit=3&cursor={following}", headers=alice).json()["prev"]
    bobs = client.get("/api/v1/items?limit=1", headers=bob).json()["next"]  # None: no items
    admins = client.get("/api/v1/items?limit=2", headers=admin_headers).json()["next"]
    carol = make_user("carol")
    carol_id = client.get("/api/v1/users/me", headers=carol).json()["id"]
    assert client.patch(
        f"/api/v1/users/{carol_id}", json={"is_active": False}, headers=admin_headers
    ).status_code == 200  # fmt: skip
    token = alice["Authorization"].split(" ", 1)[1]
    callers = {
        "alice": alice,
        "admin": admin_headers,
        "lower-case scheme": {"Authorization": f"bearer {token}"},
        "inactive": carol,
        "nobody": {},
        "a bad token": {"Authorization": "Bearer not-a-token"},
        "another scheme": {"Authorization": f"Basic {token}"},
    }
    queries = [
        "", "?limit=3", "?limit=50", "?limit=100", "?limit=101", "?limit=999999", "?limit=0",
        "?limit=03", "?limit=+3", "?limit=%203", "?limit=3.0", "?limit=abc", "?limit=",
        "?limit=3&limit=4", f"?limit=3&cursor={following}", f"?cursor={following}",
        f"?limit=3&cursor={back}", f"?limit=3&cursor={admins}", "?limit=3&cursor=",
        "?limit=3&cursor=AAAA", "?limit=3&cursor=bad!", f"?limit=3&cursor={'A' * 129}",
        f"?limit=3&cursor={following}&cursor={following}", "?q=item", "?limit=3&q=ite",
        "?limit=3&other=1", "?LIMIT=3",
    ]  # fmt: skip
    assert bobs is None
    assert following
    assert back
    assert admins
    route = _listing(app)
    shortcut = route.shortcut
    assert shortcut is not None
    answered: list[str] = []

    async def counted(request: Request) -> Response | None:
        assert shortcut is not None
        response = await shortcut(request)
        if response is not None:
            answered.append(request.url.query)
        return response

    # Plain: nothing but a limit FastAPI reads as the same int and a cursor of its alphabet.
    plain = {"", "?limit=3", "?limit=50", "?limit=100", "?limit=101", "?limit=999999",
             f"?limit=3&cursor={following}", f"?cursor={following}", f"?limit=3&cursor={back}",
             f"?limit=3&cursor={admins}", "?limit=3&cursor=AAAA"}  # fmt: skip
    statuses, by_shortcut = set(), 0
    for caller, headers in callers.items():
        for query in queries:
            route.shortcut = counted
            answered.clear()
            fast = _answer(client, query, headers)
            route.shortcut = None
            solved = _answer(client, query, headers)
            assert fast == solved, (caller, query)
            statuses.add(fast[0])
            # Every plain request that succeeds is the shortcut's; no other request is.
            assert bool(answered) == (fast[0] == 200 and query in plain), (caller, query)
            by_shortcut += bool(answered)
    route.shortcut = shortcut
    assert statuses == {200, 400, 401, 422}  # an inactive user's tokens are revoked: 401
    assert by_shortcut >= 15


@pytest.mark.parametrize("query", ["?limit=2", "?limit=2&cursor=AAAA"])
def test_errors_the_shortcut_meets_reach_the_apps_handlers(
    client: TestClient, make_user: Callable[..., Headers], query: str
) -> None:
    """A cursor that is not this listing's is 400 from the service, an absent user 401 from
    the principal: both raised inside the shortcut, answered by the app's handlers."""
    alice = make_user("alice")
    assert client.get(f"/api/v1/items{query}").status_code == 401
    expected = 200 if "cursor" not in query else 400
    assert client.get(f"/api/v1/items{query}", headers=alice).status_code == expected
