"""The per-address login limit against password spraying, without locking out everybody
behind that address: a client that signed in before keeps signing in to its own account
(its device token), and nothing else gets through."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.api.client import DEVICE_COOKIE
from tests.helpers import Headers, make_settings

PASSWORD = "correct-horse-battery"


@pytest.fixture
def settings(db_path: Path, tmp_path: Path):
    # Every TestClient has the same address ("testclient"): one office behind one NAT.
    return make_settings(
        tmp_path,
        f"sqlite+aiosqlite:///{db_path}",
        login_failures_per_client="5/minute",
        login_failures_per_account="3/minute",
    )


def _token(client: TestClient, username: str, password: str) -> int:
    return client.post(
        "/api/v1/auth/token", data={"username": username, "password": password}
    ).status_code


def test_one_clients_failures_do_not_lock_out_users_who_signed_in_before(
    app: FastAPI, client: TestClient, make_user: Callable[..., Headers]
) -> None:
    make_user("alice", PASSWORD)
    make_user("bob", PASSWORD)
    with TestClient(app) as alice, TestClient(app) as bob, TestClient(app) as sprayer:
        assert _token(alice, "alice", PASSWORD) == 200  # alice's client gets its device token
        assert DEVICE_COOKIE in alice.cookies
        for n in range(5):  # spraying from the shared address trips its limit
            assert _token(sprayer, f"victim{n}", "guess-guess") == 401
        assert _token(sprayer, "admin", "guess-guess") == 429
        assert _token(bob, "bob", PASSWORD) == 429  # no device token: held back, as before
        assert _token(alice, "alice", PASSWORD) == 200  # signed in here before: let through
        # Alice's device token opens alice's account only.
        assert _token(alice, "bob", PASSWORD) == 429
        # A stolen or forged device token is worth nothing.
        sprayer.cookies.set(DEVICE_COOKIE, alice.cookies[DEVICE_COOKIE] + "x", path="/api/v1/auth")
        assert _token(sprayer, "alice", PASSWORD) == 429


def test_a_device_token_has_a_failure_limit_of_its_own(
    app: FastAPI, client: TestClient, make_user: Callable[..., Headers]
) -> None:
    make_user("alice", PASSWORD)
    with TestClient(app) as alice:
        assert _token(alice, "alice", PASSWORD) == 200
        token = alice.cookies[DEVICE_COOKIE]
        for _ in range(3):
            assert _token(alice, "alice", "wrong-password") == 401
        alice.cookies.set(DEVICE_COOKIE, token, path="/api/v1/auth")
        assert _token(alice, "alice", PASSWORD) == 429  # per account (and per device token)
