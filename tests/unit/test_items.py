"""Items CRUD, pagination, search, permissions and input validation."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from app.core.config import Settings


def create(client: TestClient, headers, title: str = "a title", **extra) -> dict:
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


def test_pagination_reports_total_and_is_newest_first(client: TestClient, make_user) -> None:
    alice = make_user("alice")
    titles = [f"item {n:02d}" for n in range(25)]
    for title in titles:
        create(client, alice, title)
    page1 = client.get("/api/v1/items?limit=10", headers=alice).json()
    page3 = client.get("/api/v1/items?limit=10&offset=20", headers=alice).json()
    assert page1["total"] == page3["total"] == 25
    assert (page1["limit"], page1["offset"]) == (10, 0)
    assert [i["title"] for i in page1["items"]] == titles[::-1][:10]
    assert [i["title"] for i in page3["items"]] == titles[::-1][20:]
    beyond = client.get("/api/v1/items?offset=1000", headers=alice).json()
    assert beyond["items"] == []
    assert beyond["total"] == 25


def test_the_page_is_exactly_what_its_schema_serializes(client: TestClient, make_user) -> None:
    """The listing writes its rows to JSON without a validation pass (they come from the
    database): the bytes must be those ItemPage itself would write for them."""
    from app.schemas.items import ItemPage

    alice = make_user("alice")
    for payload in ({"title": "plain"}, {"title": "ünïcødé ✓", "description": 'a "quote"\n'}):
        assert client.post("/api/v1/items", json=payload, headers=alice).status_code == 201
    body = client.get("/api/v1/items", headers=alice).content
    assert body == ItemPage.model_validate_json(body).model_dump_json().encode()
    assert b'"description":null' in body


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("offset=-1", "offset"),
        ("offset=99999999999", "offset"),
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
    assert search("%") == ["100% cotton"]  # wildcards are searched for, not expanded
    assert search("_") == ["under_score"]
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
    assert everything["total"] == 2
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
    client: TestClient, make_user, payload: dict, field: str
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
