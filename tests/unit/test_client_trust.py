"""What `make run` (uvicorn, no proxy in front) trusts of a client: no forwarded address
unless FORWARDED_ALLOW_IPS names the proxy, no body before authentication, and no content
sniffing of its answers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import Server, serve

SPRAY = {"LOGIN_FAILURES_PER_CLIENT": "3/minute", "LOGIN_FAILURES_PER_ACCOUNT": "100/minute"}


def _spray(server: Server) -> list[int]:
    """Four failed logins, each claiming another address."""
    statuses = []
    for n in range(4):
        status, _ = server.request(
            "POST",
            "/api/v1/auth/token",
            b"username=victim&password=guess-guess",
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Forwarded-For": f"203.0.113.{n + 1}",
            },
        )
        statuses.append(status)
    return statuses


def test_a_forwarded_address_is_ignored_unless_its_proxy_is_configured(
    tmp_path: Path,
) -> None:
    with serve(tmp_path / "direct", **SPRAY) as server:
        assert _spray(server) == [401, 401, 401, 429]
    with serve(tmp_path / "proxied", FORWARDED_ALLOW_IPS="127.0.0.1", **SPRAY) as server:
        assert _spray(server) == [401, 401, 401, 401]  # each a client of its own


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("trust")) as running:
        yield running


def _answer_before_the_body(server: Server, head: str, sent_of_body: bytes) -> bytes:
    """Send a request's head and the start of its body, never the rest: what the server
    answers (it must answer without waiting for the body)."""
    port = int(server.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(head.encode() + b"\r\n" + sent_of_body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


MULTIPART = "multipart/form-data; boundary=x"


@pytest.mark.parametrize(
    ("path", "content_type", "length", "expected"),
    [
        ("/api/v1/items/import", MULTIPART, 4_900_000, b"HTTP/1.1 401"),
        ("/api/v1/items", "application/json", 60_000, b"HTTP/1.1 401"),
        ("/api/v1/users/me/password", "application/json", 60_000, b"HTTP/1.1 401"),
        ("/ui/items", "application/x-www-form-urlencoded", 60_000, b"HTTP/1.1 303"),
        ("/ui/import", MULTIPART, 4_900_000, b"HTTP/1.1 303"),
    ],
)
def test_an_anonymous_body_is_refused_before_it_is_read(
    server: Server, path: str, content_type: str, length: int, expected: bytes
) -> None:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n"
    )
    answer = _answer_before_the_body(server, head, b"x" * 1024)
    assert answer.startswith(expected), answer[:200]


def test_an_anonymous_malformed_body_is_401_not_400(server: Server) -> None:
    status, body = server.request(
        "POST", "/api/v1/items", b"[" * 100_000, {"Content-Type": "application/json"}
    )
    assert status == 401, body


def test_answers_forbid_content_sniffing(server: Server) -> None:
    port = int(server.base_url.rsplit(":", 1)[1])
    for path in ("/api/v1/items", "/live", "/nowhere", "/ui/login"):
        with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
            connection.sendall(
                f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert head.count(b"x-content-type-options: nosniff") == 1, (path, head)
