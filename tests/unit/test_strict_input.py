"""Input the document refuses is refused, and input it allows is taken as it was sent:
no "yes" read as true, no tab silently stripped, no empty URL taken for none."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from fastapi.testclient import TestClient

from app.core.text import SINGLE_LINE_PATTERN
from tests.helpers import Headers


def test_booleans_in_bodies_are_strict(
    client: TestClient, admin_headers: Headers, make_user: Callable[..., Headers]
) -> None:
    for loose in ("yes", "true", 1, "1"):
        made = client.post(
            "/api/v1/users",
            json={"username": "eve", "email": "eve@example.com", "password": "long-enough-pw",
                  "is_superuser": loose},
            headers=admin_headers,
        )  # fmt: skip
        assert made.status_code == 422, loose
    alice = make_user("alice")
    alice_id = client.get("/api/v1/users/me", headers=alice).json()["id"]
    for loose in (0, "false", "no"):
        patched = client.patch(
            f"/api/v1/users/{alice_id}", json={"is_active": loose}, headers=admin_headers
        )
        assert patched.status_code == 422, loose
    assert client.get("/api/v1/items", headers=alice).status_code == 200


def test_control_characters_at_the_ends_are_refused_not_stripped(
    client: TestClient, make_user: Callable[..., Headers]
) -> None:
    alice = make_user("alice")
    for title in ("tab at the end\t", "\ttab first", "line break\n"):
        answer = client.post("/api/v1/items", json={"title": title}, headers=alice)
        assert answer.status_code == 422, title
    spaced = client.post("/api/v1/items", json={"title": "  spaces  "}, headers=alice)
    assert spaced.json()["title"] == "spaces"  # spaces are trimmed, as the document says


def test_an_empty_callback_url_is_not_taken_for_none(
    client: TestClient, make_user: Callable[..., Headers]
) -> None:
    alice = make_user("alice")
    answer = client.post(
        "/api/v1/items/import",
        files={"file": ("a.csv", b"title\nx\n", "text/csv")},
        data={"callback_url": ""},
        headers=alice,
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", "callback_url"]


def test_the_document_says_what_is_refused(client: TestClient) -> None:
    schemas = client.get("/api/v1/openapi.json").json()["components"]["schemas"]
    title = schemas["ItemUpdate"]["properties"]["title"]
    assert "anyOf" not in title
    assert title["type"] == "string"  # null is refused, and the document says so
    for model in ("UserCreate", "PasswordChange", "PasswordSet", "PasswordResetConfirm"):
        field = "password" if model == "UserCreate" else "new_password"
        assert schemas[model]["properties"][field]["pattern"] == SINGLE_LINE_PATTERN, model
    assert schemas["UserCreate"]["properties"]["is_superuser"]["type"] == "boolean"


def test_only_the_download_is_at_the_download_path(
    client: TestClient, make_user: Callable[..., Headers]
) -> None:
    alice = make_user("alice")
    path = f"/api/v1/jobs/{uuid.uuid4()}/download"
    for method in ("POST", "OPTIONS"):
        answer = client.request(method, path, headers=alice)
        assert answer.status_code == 405, method
        assert "POST" not in answer.headers["allow"]
        assert "GET" in answer.headers["allow"]
    assert client.post(f"/api/v1/jobs/{uuid.uuid4()}/retry", headers=alice).status_code == 403
