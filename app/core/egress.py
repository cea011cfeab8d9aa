"""Outbound connections to addresses a user chose (webhooks), safe against SSRF.

A callback URL is a user's choice of where the server connects. Without a check it reaches
what only the server can reach: loopback, the private network, a cloud's metadata service.
The check must hold on the address actually connected to, so it runs at connect time, on
every address the name resolves to (a name that resolves to a public address when the URL
is submitted may resolve to 127.0.0.1 when it is used: DNS rebinding), and the connection
goes to the address that was checked, never to a second lookup. This is the egress check
of mature webhook senders (e.g. Svix's smokescreen proxy, GitHub's), as an httpcore network
backend (app/core/egress_backend.py, loaded only when a webhook is sent) so that TLS still
verifies the certificate against the URL's host name.
"""

from __future__ import annotations

import ipaddress
import socket

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
