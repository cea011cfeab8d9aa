"""Outbound connections to addresses a user chose (webhooks), safe against SSRF.

A callback URL is a user's choice of where the server connects. Without a check it reaches
what only the server can reach: loopback, the private network, a cloud's metadata service.
The check must hold on the address actually connected to, so it runs at connect time, on
every address the name resolves to (a name that resolves to a public address when the URL
is submitted may resolve to 127.0.0.1 when it is used: DNS rebinding), and the connection
goes to the address that was checked, never to a second lookup. This is the egress check
of mature webhook senders (e.g. Svix's smokescreen proxy, GitHub's), as an httpcore network
backend so that TLS still verifies the certificate against the URL's host name.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterable
from typing import Any

import httpcore

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class RefusedAddress(Exception):
    """The target is not a public address, and private targets are not allowed."""


def is_public(ip: IPAddress) -> bool:
    """Globally routable unicast: not loopback, private, link-local, unique-local,
    shared, multicast, reserved or unspecified — also when an IPv4 address hides inside
    an IPv6 one (mapped, 6to4, Teredo, NAT64)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: list[IPAddress] = []
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if embedded and not all(is_public(inner) for inner in embedded):
            return False
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (tests replace this with a stub)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


def checked_addresses(host: str, port: int, allow_private: bool) -> list[IPAddress]:
    """The addresses to connect to; refused when any of them is not public."""
    try:
        addresses = [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        addresses = resolve(host, port)
    if not allow_private and not all(is_public(ip) for ip in addresses):
        raise RefusedAddress(f"{host} is not a public address")
    return list(dict.fromkeys(addresses))


class _DeadlineStream(httpcore.NetworkStream):
    """A stream whose reads and writes all end by one deadline: a peer that trickles its
    answer a byte at a time cannot hold the connection past the attempt's timeout."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float) -> None:
        self._stream = stream
        self._deadline = deadline

    def _left(self, timeout: float | None) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise httpcore.ReadTimeout("the attempt's time is up")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._left(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._stream.start_tls(ssl_context, server_hostname, self._left(timeout))
        return _DeadlineStream(stream, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class EgressBackend(httpcore.SyncBackend):
    """Connects only to checked addresses, within one overall deadline."""

    def __init__(self, *, allow_private: bool, total_timeout: float) -> None:
        self.allow_private = allow_private
        self.deadline = time.monotonic() + total_timeout

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        last_error: Exception | None = None
        for ip in checked_addresses(host, port, self.allow_private):
            try:
                stream = super().connect_tcp(str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
                continue
            return _DeadlineStream(stream, self.deadline)
        raise last_error or httpcore.ConnectError(f"{host} has no address")
