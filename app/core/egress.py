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

# The IANA special-purpose address registries (iana.org/assignments/iana-ipv4-special-registry
# and iana-ipv6-special-registry): every block whose "Globally Reachable" is not True, and
# multicast. A block is refused whole, also where the registry marks a smaller block inside
# it reachable (two anycast addresses in 192.0.0.0/24, AS112 and AMT in 2001::/23): no
# webhook receiver lives there.
IPV4_NOT_GLOBAL: tuple[str, ...] = (
    "0.0.0.0/8",  # this network (RFC 791)
    "10.0.0.0/8",  # private use (RFC 1918)
    "100.64.0.0/10",  # shared address space, carrier-grade NAT (RFC 6598)
    "127.0.0.0/8",  # loopback (RFC 1122)
    "169.254.0.0/16",  # link-local, cloud metadata services (RFC 3927)
    "172.16.0.0/12",  # private use (RFC 1918)
    "192.0.0.0/24",  # IETF protocol assignments: DS-Lite, NAT64 discovery (RFC 6890)
    "192.0.2.0/24",  # documentation, TEST-NET-1 (RFC 5737)
    "192.88.99.0/24",  # 6to4 relay anycast, deprecated (RFC 7526)
    "192.168.0.0/16",  # private use (RFC 1918)
    "198.18.0.0/15",  # benchmarking (RFC 2544)
    "198.51.100.0/24",  # documentation, TEST-NET-2 (RFC 5737)
    "203.0.113.0/24",  # documentation, TEST-NET-3 (RFC 5737)
    "224.0.0.0/4",  # multicast (RFC 5771)
    "240.0.0.0/4",  # reserved (RFC 1112)
    "255.255.255.255/32",  # limited broadcast (RFC 919)
)
IPV6_NOT_GLOBAL: tuple[str, ...] = (
    "::/128",  # unspecified (RFC 4291)
    "::1/128",  # loopback (RFC 4291)
    "::ffff:0:0/96",  # IPv4-mapped (RFC 4291)
    "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation (RFC 8215)
    "100::/64",  # discard-only (RFC 6666)
    "100:0:0:1::/64",  # dummy prefix (RFC 9780)
    "2001::/23",  # IETF protocol assignments: Teredo, benchmarking, ORCHID (RFC 2928)
    "2001:db8::/32",  # documentation (RFC 3849)
    "2002::/16",  # 6to4 (RFC 3056)
    "3fff::/20",  # documentation (RFC 9637)
    "5f00::/16",  # segment routing SIDs (RFC 9602)
    "fc00::/7",  # unique local (RFC 4193)
    "fe80::/10",  # link-local (RFC 4291)
    "ff00::/8",  # multicast (RFC 4291)
)
# IANA's IPv6 address space registry allocates global unicast from 2000::/3 alone: anything
# else is refused too (IPv4-compatible ::/96, SIIT ::ffff:0:0:0/96, site-local fec0::/10,
# the unassigned blocks), except the well-known NAT64 prefix, globally reachable, whose
# embedded IPv4 address is what is reached and is checked as such.
IPV6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4 = [ipaddress.ip_network(block) for block in IPV4_NOT_GLOBAL]
_V6 = [ipaddress.ip_network(block) for block in IPV6_NOT_GLOBAL]


class RefusedAddress(Exception):
    """The target is not a public address, and private targets are not allowed."""


def is_public(ip: IPAddress) -> bool:
    """Globally reachable unicast, by the IANA registries above (and by Python's own list:
    both must agree)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return not any(ip in block for block in _V4) and ip.is_global
    if ip in NAT64:
        return is_public(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip not in IPV6_GLOBAL_UNICAST or any(ip in block for block in _V6):
        return False
    return ip.is_global


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
