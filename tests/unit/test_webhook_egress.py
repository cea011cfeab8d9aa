"""SSRF: a callback URL must not make the server call what only the server can reach.

The attack that found it: with the default configuration, `callback_url` pointing at
127.0.0.1 in any spelling got the signed POST delivered there, and the recorded error
told open ports from closed ones. Names resolve through the stub in conftest.py.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core import egress
from app.core.config import Settings
from app.core.egress import is_public
from app.services import webhooks
from tests.helpers import http_server, make_settings
from tests.unit.test_jobs import job


class Listener:
    """A local server that counts the requests reaching it."""

    def __init__(self, port: int, hits: list[str]) -> None:
        self.port, self.hits = port, hits


@contextlib.contextmanager
def listening(status: int = 200, location: str | None = None) -> Iterator[Listener]:
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append(self.path)
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with http_server(Handler) as server:
        yield Listener(server.server_address[1], hits)


@pytest.fixture
def listener() -> Iterator[Listener]:
    with listening() as server:
        yield server


# Every spelling of an internal target the attack used.
REFUSED_AT_SUBMISSION = [
    "http://2130706433:{port}/x", "http://localhost:{port}/x", "http://127.1:{port}/x",
    "http://0x7f000001:{port}/x", "http://0.0.0.0:{port}/x", "http://[::1]:{port}/x",
    "http://[::ffff:127.0.0.1]:{port}/x", "http://0177.0.0.1:{port}/x",
    "http://127.0.0.1:{port}/x", "HTTP://127.0.0.1:{port}/x", "http://169.254.169.254/x",
    "http://10.0.0.1/x", "http://192.168.1.1/x", "http://172.16.0.1/x", "http://100.64.0.1/x",
    "http://[fd00::1]/x", "http://[fe80::1]/x", "http://224.0.0.1/x", "http://240.0.0.1/x",
    "http://[2002:7f00:1::1]/x", "http://app.localhost:{port}/x", "http://redis:6379/x",
    " http://127.0.0.1:{port}/x", "http://127.0.0.1:{port}/x\r\nX-Injected: 1",
    "http://public.example/a b", "http://public.example/\x00", "http://public.example:99999/", "http://public.example:0/",
    # IPv6 forms of internal IPv4 targets: IPv4-compatible, SIIT, local-use NAT64; site-local.
    "http://[::127.0.0.1]:{port}/x", "http://[::a9fe:a9fe]/x", "http://[::ffff:0:7f00:1]:{port}/x",
    "http://[64:ff9b:1::a9fe:a9fe]/x", "http://[fec0::1]/x",
]  # fmt: skip


@pytest.mark.parametrize("template", REFUSED_AT_SUBMISSION)
def test_internal_targets_are_refused_at_submission(
    client: TestClient, make_user, listener: Listener, template: str
) -> None:
    url = template.format(port=listener.port)
    alice = make_user("alice")
    export = client.post("/api/v1/items/export", json={"callback_url": url}, headers=alice)
    imported = client.post(
        "/api/v1/items/import",
        files={"file": ("a.csv", b"title\nx\n", "text/csv")},
        data={"callback_url": url},
        headers=alice,
    )
    for response in (export, imported):
        assert response.status_code == 422, (url, response.text)
        assert response.json()["detail"][0]["loc"] == ["body", "callback_url"]
    assert listener.hits == []


@pytest.mark.parametrize(
    "host",
    ["metadata.google.internal", "internal.example", "rebind.example", "v6-loopback.example"],
)
def test_names_that_resolve_to_internal_addresses_are_refused_at_delivery(
    client: TestClient, make_user, listener: Listener, host: str
) -> None:
    """The name passes submission; its addresses are checked when it is connected to."""
    alice = make_user("alice")
    accepted = client.post(
        "/api/v1/items/export",
        json={"callback_url": f"http://{host}:{listener.port}/x"},
        headers=alice,
    )
    assert accepted.status_code == 202, accepted.text
    done = job(client, alice, accepted.json()["id"])
    assert done["webhook"] == {"state": "failed", "attempts": 1, "error": webhooks.REFUSED}
    assert listener.hits == []


def test_a_name_checked_at_submission_is_checked_again_at_delivery(
    client: TestClient, make_user, listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: public when submitted, loopback when delivered."""
    from tests.unit import conftest

    monkeypatch.setitem(conftest.STUB_DNS, "flip.example", ["127.0.0.1"])
    alice = make_user("alice")
    accepted = client.post(
        "/api/v1/items/export",
        json={"callback_url": f"http://flip.example:{listener.port}/x"},
        headers=alice,
    )
    done = job(client, alice, accepted.json()["id"])
    assert done["webhook"]["error"] == webhooks.REFUSED
    assert listener.hits == []


@pytest.fixture
def dev_settings(db_path: Path, tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path, f"sqlite+aiosqlite:///{db_path}", webhook_allow_private_targets=True
    )


def test_private_targets_are_reachable_when_allowed(
    dev_settings: Settings, listener: Listener
) -> None:
    url = f"http://127.0.0.1:{listener.port}/x"
    assert webhooks.validate_callback_url(url, dev_settings) == url
    delivery = webhooks.deliver(dev_settings, url, "msg_1", {"type": "job.succeeded"})
    assert delivery.ok
    assert listener.hits == ["/x"]
    # Non-canonical forms stay refused: other clients read them as other addresses.
    with pytest.raises(webhooks.InvalidCallbackUrl, match="non-canonical"):
        webhooks.validate_callback_url(f"http://0177.0.0.1:{listener.port}/", dev_settings)


def test_the_recorded_error_does_not_tell_closed_ports_from_silent_ones(
    dev_settings: Settings,
) -> None:
    with listening() as closed:
        pass  # nothing listens on its port any more
    delivery = webhooks.deliver(
        dev_settings, f"http://127.0.0.1:{closed.port}/", "msg_1", {"type": "x"}
    )
    assert (delivery.ok, delivery.retry, delivery.detail) == (
        False,
        True,
        "delivery failed: no answer",
    )


def test_redirects_are_not_followed(dev_settings: Settings, listener: Listener) -> None:
    with listening(302, f"http://127.0.0.1:{listener.port}/internal") as redirecting:
        delivery = webhooks.deliver(
            dev_settings, f"http://127.0.0.1:{redirecting.port}/", "msg_1", {"type": "x"}
        )
    assert (delivery.ok, delivery.retry, delivery.detail) == (False, False, "HTTP 302")
    assert listener.hits == []


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://public.example/", "http://unknown.example/", "http://a..b/"]
)
def test_every_delivery_error_ends_in_a_recorded_outcome(dev_settings: Settings, url: str) -> None:
    delivery = webhooks.deliver(dev_settings, url, "msg_1", {"type": "x"})
    assert not delivery.ok
    assert delivery.detail in (webhooks.UNSENDABLE, "delivery failed: no answer")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True), ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
        ("127.0.0.1", False), ("10.1.1.1", False), ("172.31.255.255", False),
        ("192.168.0.1", False), ("169.254.169.254", False), ("100.64.0.1", False),
        ("0.0.0.0", False), ("255.255.255.255", False), ("224.0.1.1", False),  # noqa: S104
        ("240.0.0.1", False), ("::1", False), ("::", False), ("fd00::1", False),
        ("fe80::1", False), ("ff0e::1", False), ("::ffff:127.0.0.1", False),
        ("::ffff:8.8.8.8", False), ("2002:7f00:1::1", False), ("2002:808:808::1", False),
        ("::127.0.0.1", False), ("::a9fe:a9fe", False), ("::ffff:0:7f00:1", False),
        ("64:ff9b:1::a9fe:a9fe", False), ("fec0::1", False), ("4000::1", False), ("64:ff9b::7f00:1", False),
        ("64:ff9b::808:808", True), ("2001:0:4136:e378:8000:63bf:80ff:fffe", False),
    ],
)  # fmt: skip
def test_is_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def _inside(block: str) -> list[str]:
    """The first, a middle and the last address of a block."""
    network = ipaddress.ip_network(block)
    middle = network.network_address + network.num_addresses // 2
    return [str(network.network_address), str(middle), str(network.broadcast_address)]


@pytest.mark.parametrize(
    "block", [*egress.IPV4_NOT_GLOBAL, *egress.IPV6_NOT_GLOBAL], ids=lambda block: block
)
def test_every_special_purpose_block_that_is_not_globally_reachable_is_refused(
    block: str,
) -> None:
    """One case per block of the IANA special-purpose registries not marked globally
    reachable; its neighbours just outside, when globally reachable, stay allowed."""
    assert [a for a in _inside(block) if is_public(ipaddress.ip_address(a))] == []
    with pytest.raises(egress.RefusedAddress):
        egress.checked_addresses(_inside(block)[1], 443, allow_private=False)


def test_the_registry_holds_the_blocks_the_attack_used_and_public_neighbours_pass() -> None:
    assert {"192.0.0.0/24", "64:ff9b:1::/48", "::ffff:0:0/96", "2001::/23"} <= {
        *egress.IPV4_NOT_GLOBAL,
        *egress.IPV6_NOT_GLOBAL,
    }
    for public in ("1.1.1.1", "9.9.9.9", "2606:4700:4700::1111", "2a00:1450:4001::1",
                   "64:ff9b::101:101", "2001:200::1", "192.0.1.1", "198.20.0.1"):  # fmt: skip
        assert is_public(ipaddress.ip_address(public)), public
