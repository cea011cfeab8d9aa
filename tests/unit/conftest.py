"""Fast-tier fixtures live in tests/conftest.py, shared with the integration tier."""

import ipaddress
import socket

import pytest

# Names the fast tier's webhooks may use, and what they resolve to. Every other name fails
# to resolve: no test sends a DNS query (or anything else) off this machine.
STUB_DNS = {
    "hooks.example.com": ["93.184.215.14"],
    "public.example": ["93.184.215.14"],
    "rebind.example": ["93.184.215.14", "127.0.0.1"],
    "internal.example": ["10.1.2.3"],
    "metadata.google.internal": ["169.254.169.254"],
    "v6-loopback.example": ["::1"],
}


@pytest.fixture(autouse=True)
def _stub_dns(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core import egress

    def resolve(host: str, port: int) -> list[egress.IPAddress]:
        if host in ("localhost", "127.0.0.1"):
            return [ipaddress.ip_address("127.0.0.1")]
        if host not in STUB_DNS:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ipaddress.ip_address(a) for a in STUB_DNS[host]]

    monkeypatch.setattr(egress, "resolve", resolve)


@pytest.fixture(autouse=True)
def _no_traffic_off_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A webhook to a stubbed public address must not leave the machine: connections to
    anything but loopback fail as an unreachable host would."""
    import httpcore

    connect = httpcore.SyncBackend.connect_tcp

    def local_only(self, host: str, port: int, *args, **kwargs):
        if not ipaddress.ip_address(host).is_loopback:
            raise httpcore.ConnectError(f"test: no connection to {host} off this machine")
        return connect(self, host, port, *args, **kwargs)

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", local_only)
