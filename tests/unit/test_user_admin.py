"""Superusers list, deactivate and activate users; everyone lists their own jobs."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.helpers import Headers, every_row
from tests.helpers import login as log_in

PASSWORD = "correct-horse-battery"


def _id(client: TestClient, headers: Headers) -> str:
    user_id: str = client.get("/api/v1/users/me", headers=headers).json()["id"]
    return user_id


def test_superusers_list_users_in_pages(
    client: TestClient, admin_headers: Headers, make_user: Callable[..., Headers]
) -> None:
    for name in ("alice", "bob", "carol"):
        make_user(name, PASSWORD)
    page = client.get("/api/v1/users", params={"limit": 2}, headers=admin_headers)
    assert page.status_code == 200
    body = page.json()
    assert [user["username"] for user in body["items"]] == ["carol", "bob"]  # newest first
    assert "hashed_password" not in body["items"][0]
    following = client.get(
        "/api/v1/users", params={"limit": 2, "cursor": body["next"]}, headers=admin_headers
    )
    assert following.headers["link"].endswith('>; rel="prev"')
    assert [user["username"] for user in following.json()["items"]] == ["alice", "admin"]
    assert following.json()["next"] is None
    assert [u["username"] for u in every_row(client, "/api/v1/users", admin_headers)] == [
        "carol", "bob", "alice", "admin"
    ]  # fmt: skip
    assert (
        client.get("/api/v1/users", params={"limit": 101}, headers=admin_headers).status_code == 422
    )


def test_deactivation_revokes_the_users_tokens_at_once_and_activation_needs_a_new_login(
    client: TestClient, admin_headers: Headers, make_user: Callable[..., Headers]
) -> None:
    alice = make_user("alice", PASSWORD)
    assert client.get("/api/v1/items", headers=alice).status_code == 200
    alice_id = _id(client, alice)
    off = client.patch(
        f"/api/v1/users/{alice_id}", json={"is_active": False}, headers=admin_headers
    )
    assert off.status_code == 200
    assert off.json()["is_active"] is False
    refused = client.get("/api/v1/items", headers=alice)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    # The right password of a deactivated account is answered as a wrong one would be.
    login = {"username": "alice", "password": PASSWORD}
    inactive = client.post("/api/v1/auth/token", data=login)
    wrong = client.post("/api/v1/auth/token", data={**login, "password": "wrong-password"})
    assert (inactive.status_code, inactive.json()) == (wrong.status_code, wrong.json())
    assert inactive.status_code == 401
    on = client.patch(f"/api/v1/users/{alice_id}", json={"is_active": True}, headers=admin_headers)
    assert on.json()["is_active"] is True
    assert client.get("/api/v1/items", headers=alice).status_code == 401  # stays revoked
    assert client.get("/api/v1/items", headers=log_in(client, "alice", PASSWORD)).status_code == 200


def test_only_superusers_change_users_and_never_themselves(
    client: TestClient, admin_headers: Headers, make_user: Callable[..., Headers]
) -> None:
    alice = make_user("alice", PASSWORD)
    admin_id = _id(client, admin_headers)
    assert client.get("/api/v1/users", headers=alice).status_code == 403
    forbidden = client.patch(f"/api/v1/users/{admin_id}", json={"is_active": False}, headers=alice)
    assert forbidden.status_code == 403
    myself = client.patch(
        f"/api/v1/users/{admin_id}", json={"is_active": False}, headers=admin_headers
    )
    assert myself.status_code == 409
    missing = client.patch(
        "/api/v1/users/00000000-0000-0000-0000-000000000000",
        json={"is_active": False},
        headers=admin_headers,
    )
    assert missing.status_code == 404
    extra = client.patch(
        f"/api/v1/users/{admin_id}", json={"is_superuser": False}, headers=admin_headers
    )
    assert extra.status_code == 422


def test_jobs_list_is_the_callers_own_newest_first(
    client: TestClient, admin_headers: Headers, make_user: Callable[..., Headers]
) -> None:
    alice = make_user("alice", PASSWORD)
    bob = make_user("bob", PASSWORD)
    first = client.post("/api/v1/items/export", headers=alice).json()["id"]
    second = client.post("/api/v1/items/export", headers=alice).json()["id"]
    client.post("/api/v1/items/export", headers=bob)
    mine = client.get("/api/v1/jobs", headers=alice).json()
    assert [job["id"] for job in mine["items"]] == [second, first]
    assert len(every_row(client, "/api/v1/jobs", admin_headers)) == 3
    one = client.get("/api/v1/jobs", params={"limit": 1}, headers=alice).json()
    older = client.get("/api/v1/jobs", params={"cursor": one["next"]}, headers=alice).json()
    assert [job["id"] for job in older["items"]] == [first]
    assert (
        client.get("/api/v1/jobs", params={"cursor": one["next"]}, headers=bob).status_code == 400
    )
    assert client.get("/api/v1/jobs", params={"limit": 0}, headers=alice).status_code == 422
