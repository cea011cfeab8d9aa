"""Items CRUD, keyset pagination, search, permissions and input validation."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings
from app.db.base import utcnow
from app.services.pagination import CURSOR_LIFETIME, CursorCodec, Direction, Position
from tests.factories import create_items
from tests.helpers import Headers


def create(client: TestClient, headers, title: str = "a title", **extra) -> dict[str, Any]:
    response = client.post("/api/v1/items", json={"title": title, **extra}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_crud_round_trip(client: TestClient, make_user) -> None:
    alice = make_user("alice")
    item = create(client, alice, "First", description="hello")
    assert item["title"] == "First"
    assert item["description"] == "hello"
    assert item["created_at"] == item["updated_at"]
    uuid.UUID(item["id"])

    fetched = client.get(f"/api/v1/items/{item['id']}", headers=alice)
    assert fetched.status_code == 200
    assert fetched.json() == item

    patched = client.patch(
        f"/api/v1/items/{item['id']}", json={"description": "changed"}, headers=alice
    )
    assert patched.status_code == 200
    assert patched.json()["title"] == "First"
    assert patched.json()["description"] == "changed"
    assert patched.json()["updated_at"] > item["updated_at"]

    assert client.delete(f"/api/v1/items/{item['id']}", headers=alice).status_code == 204
    assert client.get(f"/api/v1/items/{item['id']}", headers=alice).status_code == 404
    assert client.delete(f"/api/v1/items/{item['id']}", headers=alice).status_code == 404


def walk(
    client: TestClient, headers: Headers, *, limit: int, direction: str = "next", **params: str
) -> list[list[str]]:
    """Every page's titles, from the first page on, following `next` (or from the last page
    back, following `prev`), and checking that the Link header carries the same cursors."""
    pages: list[list[str]] = []
    query: dict[str, str | int] = {"limit": limit, **params}
    while True:
        response = client.get("/api/v1/items", params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append([i["title"] for i in page["items"]])
        links = {
            rel: dict(parse_qsl(urlsplit(url).query))
            for url, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', response.headers.get("link", ""))
        }
        assert {rel: q["cursor"] for rel, q in links.items()} == {
            rel: page[rel] for rel in ("next", "prev") if page[rel]
        }
        assert all(q["limit"] == str(limit) for q in links.values())
        if not page[direction]:
            return pages
        query = {**query, "cursor": page[direction]}


def test_pages_walk_newest_first_by_cursor_and_back(client: TestClient, make_user) -> None:
    alice = make_user("alice")
    titles = [f"item {n:02d}" for n in range(25)]
    for title in titles:
        create(client, alice, title)
    forward = walk(client, alice, limit=10)
    assert forward == [titles[::-1][:10], titles[::-1][10:20], titles[::-1][20:]]
    first = client.get("/api/v1/items?limit=10", headers=alice).json()
    assert (first["limit"], first["prev"]) == (10, None)
    assert set(first) == {"items", "limit", "next", "prev"}  # no total: see docs/api.md
    # From the last page back to the first: the same pages, the first one full.
    last = client.get("/api/v1/items?limit=10", headers=alice).json()
    while last["next"]:
        last = client.get(f"/api/v1/items?limit=10&cursor={last['next']}", headers=alice).json()
    back = walk(client, alice, limit=10, direction="prev", cursor=last["prev"])
    assert back == [forward[1], forward[0]]


def test_a_walk_sees_every_row_once_while_rows_come_and_go(client: TestClient, make_user) -> None:
    """Rows added during a walk are newer than its cursor (not seen); a row deleted before
    the walk reaches it is not seen; every other row is seen once, in order."""
    alice = make_user("alice")
    items = [create(client, alice, f"row {n:02d}") for n in range(40)]
    expected = [i["title"] for i in reversed(items)]
    seen: list[str] = []
    page = client.get("/api/v1/items?limit=6", headers=alice).json()
    doomed = list(reversed(items[:3]))  # the oldest: deleted before the walk gets there
    while True:
        seen += [i["title"] for i in page["items"]]
        create(client, alice, f"new {len(seen)}")
        if doomed:
            gone = doomed.pop()
            assert client.delete(f"/api/v1/items/{gone['id']}", headers=alice).status_code == 204
            expected.remove(gone["title"])
        if page["items"]:  # the row the cursor points at goes too: the next page follows it
            victim = page["items"][-1]["id"]
            assert client.delete(f"/api/v1/items/{victim}", headers=alice).status_code == 204
        if not page["next"]:
            break
        page = client.get(f"/api/v1/items?limit=6&cursor={page['next']}", headers=alice).json()
    assert seen == expected


def test_rows_created_together_page_by_id(client: TestClient, make_user) -> None:
    """The rows of one import share one created_at: the id orders them, none is lost or
    repeated at a page boundary."""
    alice = make_user("alice")
    content = "title\n" + "".join(f"imported {n:03d}\n" for n in range(30))
    job = client.post(
        "/api/v1/items/import",
        files={"file": ("rows.csv", content.encode(), "text/csv")},
        headers=alice,
    ).json()
    assert client.get(f"/api/v1/jobs/{job['id']}", headers=alice).json()["state"] == "succeeded"
    pages = walk(client, alice, limit=4)
    titles = [t for p in pages for t in p]
    assert sorted(titles) == [f"imported {n:03d}" for n in range(30)]
    assert len(pages) == 8


def test_a_cursor_from_elsewhere_is_refused(
    client: TestClient, make_user, admin_headers: Headers, settings: Settings
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    for n in range(3):
        create(client, alice, f"alice {n}")
        create(client, bob, f"bob {n}")
    mine = client.get("/api/v1/items?limit=1", headers=alice).json()["next"]
    search = client.get("/api/v1/items?limit=1&q=alice", headers=alice).json()["next"]
    for _ in range(2):
        assert client.post("/api/v1/items/export", headers=alice).status_code == 202
    jobs = client.get("/api/v1/jobs?limit=1", headers=alice).json()["next"]
    refused = {
        "bob's": (bob, f"cursor={mine}"),
        "a superuser's": (admin_headers, f"cursor={mine}"),
        "another listing's": (alice, f"cursor={jobs}"),
        "another search": (alice, f"cursor={search}&q=bob"),
        "no search": (alice, f"cursor={search}"),
        "tampered": (alice, f"cursor={mine[:-2]}{'AB' if mine[-2:] != 'AB' else 'CD'}"),
        "truncated": (alice, f"cursor={mine[:20]}"),
        "empty MAC": (alice, f"cursor={mine[:44]}"),
    }
    for name, (headers, query) in refused.items():
        response = client.get(f"/api/v1/items?limit=1&{query}", headers=headers)
        assert response.status_code == 400, name
        assert response.json() == {
            "detail": "invalid cursor: use the `next` or `prev` of a page of this same listing"
        }, name
    me = client.get("/api/v1/users/me", headers=alice).json()
    stale = CursorCodec(
        settings.secret_key,
        "items",
        me["id"],
        clock=lambda: utcnow() - CURSOR_LIFETIME - timedelta(seconds=1),
    ).encode(Direction.NEXT, Position(utcnow(), uuid.uuid4()))
    expired = client.get(f"/api/v1/items?cursor={stale}", headers=alice)
    assert expired.status_code == 400
    assert expired.json() == {"detail": "the cursor has expired: start again from the first page"}
    fresh = CursorCodec(
        settings.secret_key, "items", me["id"], clock=lambda: utcnow() - timedelta(hours=23)
    )
    assert (
        client.get(
            f"/api/v1/items?cursor={fresh.encode(Direction.NEXT, Position(utcnow(), uuid.uuid4()))}",
            headers=alice,
        ).status_code
        == 200
    )


def test_the_page_is_exactly_what_its_schema_serializes(
    client: TestClient, make_user, settings: Settings
) -> None:
    """The listing writes its rows to JSON without a validation pass (they come from the
    database): the bytes must be those ItemPage itself would write for them, for whatever
    text the table holds and times with and without microseconds."""
    from app.schemas.items import ItemPage

    alice = make_user("alice")
    for payload in ({"title": "plain"}, {"title": "ünïcødé ✓", "description": 'a "quote"\n'}):
        assert client.post("/api/v1/items", json=payload, headers=alice).status_code == 201
    owner = uuid.UUID(client.get("/api/v1/users/me", headers=alice).json()["id"])
    odd = ["back\\slash", "tab\tand\x01control", "line\u2028separator", "emoji 😀", "</script>"]
    create_items(settings, owner, odd, at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    for path in ("/api/v1/items", "/api/v1/items?limit=3"):
        page = client.get(path, headers=alice)
        while True:
            body = page.content
            assert body == ItemPage.model_validate_json(body).model_dump_json().encode()
            following = page.json()["next"]
            if following is None:
                break
            page = client.get(f"/api/v1/items?limit=3&cursor={following}", headers=alice)
    whole = client.get("/api/v1/items", headers=alice).content
    assert b'"description":null' in whole
    assert b'"created_at":"2026-01-02T03:04:05Z"' in whole


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("cursor=", "cursor"),
        ("cursor=not%20a%20cursor", "cursor"),
        ("cursor=" + "A" * 129, "cursor"),
        ("q=ab", "q"),
    ],
)
def test_bad_paging_is_422_naming_the_parameter(
    client: TestClient, make_user, query: str, field: str
) -> None:
    response = client.get(f"/api/v1/items?{query}", headers=make_user("alice"))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", field]


def test_max_page_size_follows_the_setting(
    client: TestClient, settings: Settings, make_user
) -> None:
    alice = make_user("alice")
    assert (
        client.get(f"/api/v1/items?limit={settings.items_max_page_size}", headers=alice).status_code
        == 200
    )
    assert (
        client.get(
            f"/api/v1/items?limit={settings.items_max_page_size + 1}", headers=alice
        ).status_code
        == 422
    )


def test_title_search_is_case_insensitive_and_literal(client: TestClient, make_user) -> None:
    alice = make_user("alice")
    for title in ("Blue car", "red CAR", "bicycle", "100% cotton", "under_score", "ÜNÏCODE Straße"):
        create(client, alice, title)

    def search(q: str) -> list[str]:
        response = client.get("/api/v1/items", params={"q": q}, headers=alice)
        assert response.status_code == 200
        return sorted(i["title"] for i in response.json()["items"])

    assert search("car") == ["Blue car", "red CAR"]
    assert search("0% c") == ["100% cotton"]  # wildcards are searched for, not expanded
    assert search("r_s") == ["under_score"]
    assert search("%%%") == []
    assert search("___") == []
    assert search("nothing") == []
    # Beyond ASCII too (SQLite's own lower() folds only ASCII; Postgres folds all).
    assert search("ünï") == ["ÜNÏCODE Straße"]
    assert search("STRAßE") == ["ÜNÏCODE Straße"]


def test_users_see_only_their_own_items(client: TestClient, make_user, admin_headers) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    item = create(client, alice, "alice's")
    create(client, bob, "bob's")

    assert [i["title"] for i in client.get("/api/v1/items", headers=bob).json()["items"]] == [
        "bob's"
    ]
    assert client.get(f"/api/v1/items/{item['id']}", headers=bob).status_code == 403
    assert (
        client.patch(f"/api/v1/items/{item['id']}", json={"title": "mine"}, headers=bob).status_code
        == 403
    )
    assert client.delete(f"/api/v1/items/{item['id']}", headers=bob).status_code == 403

    everything = client.get("/api/v1/items", headers=admin_headers).json()
    assert sorted(i["title"] for i in everything["items"]) == ["alice's", "bob's"]
    assert (
        client.patch(
            f"/api/v1/items/{item['id']}", json={"title": "moderated"}, headers=admin_headers
        ).status_code
        == 200
    )


def test_unknown_and_malformed_ids(client: TestClient, make_user) -> None:
    alice = make_user("alice")
    missing = client.get(f"/api/v1/items/{uuid.uuid4()}", headers=alice)
    assert missing.status_code == 404
    assert missing.json() == {"detail": "item not found"}
    # Only UUID-shaped paths are item routes: anything else is no resource at all, and
    # /items/export is the export route's path (405 for GET, not a bad item id).
    malformed = client.get("/api/v1/items/not-a-uuid", headers=alice)
    assert malformed.status_code == 404
    assert malformed.json() == {"detail": "Not Found"}
    export = client.get("/api/v1/items/export", headers=alice)
    assert export.status_code == 405
    assert export.headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": "   "}, "title"),
        ({"title": "x" * 256}, "title"),
        ({"title": "nul\x00byte"}, "title"),
        ({"title": "ok", "description": "nul\x00"}, "description"),
        ({"title": 5}, "title"),
        ({"title": "ok", "owner_id": str(uuid.uuid4())}, "owner_id"),
    ],
)
def test_invalid_item_payloads_are_422(
    client: TestClient, make_user, payload: dict[str, Any], field: str
) -> None:
    response = client.post("/api/v1/items", json=payload, headers=make_user("alice"))
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"][-1] == field


def test_null_title_on_update_is_refused(client: TestClient, make_user) -> None:
    alice = make_user("alice")
    item = create(client, alice)
    response = client.patch(f"/api/v1/items/{item['id']}", json={"title": None}, headers=alice)
    assert response.status_code == 422
    assert "title cannot be null" in response.text


def test_malformed_json_body_is_422(client: TestClient, make_user) -> None:
    response = client.post(
        "/api/v1/items",
        content=b'{"title": ',
        headers={**make_user("alice"), "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_search_with_control_characters_is_422(client: TestClient, make_user) -> None:
    response = client.get("/api/v1/items", params={"q": "a\x00b"}, headers=make_user("alice"))
    assert response.status_code == 422


def test_a_search_pages_the_same_whether_its_matches_are_near_or_far(
    client: TestClient, make_user, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search reads the newest rows first, then its matches through the index: every
    match is seen once, in order, forward and back, wherever the matches sit."""
    from app.services import items as service

    monkeypatch.setattr(service, "SEARCH_SCAN_ROWS", 3)
    alice = make_user("alice")
    titles = [f"{'red' if n % 4 == 0 or n < 2 else 'blue'} {n:02d}" for n in range(24)]
    for title in titles:
        create(client, alice, title)
    expected = [t for t in reversed(titles) if t.startswith("red")]
    forward = walk(client, alice, limit=2, q="red")
    assert [t for p in forward for t in p] == expected
    last = client.get("/api/v1/items?limit=2&q=red", headers=alice).json()
    while last["next"]:
        last = client.get(
            f"/api/v1/items?limit=2&q=red&cursor={last['next']}", headers=alice
        ).json()
    back = walk(client, alice, limit=2, direction="prev", q="red", cursor=last["prev"])
    assert [t for p in reversed(back) for t in p] == expected[: -len(last["items"])]
