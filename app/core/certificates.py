"""When a certificate expires, read from its DER form.

The standard library parses a peer certificate only after verifying it (getpeercert() is
empty otherwise), and the served certificate may be a self-signed bootstrap one; the
`cryptography` package would add megabytes to the image for one date. So this reads the
few DER elements on the way to `validity` (RFC 5280, 4.1) and nothing else: each element's
length is checked against what is left, and anything unexpected is a ValueError.
"""

from __future__ import annotations

from datetime import UTC, datetime

_SEQUENCE = 0x30
_VERSION = 0xA0  # [0] EXPLICIT, present from version 2 on
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of the content, end of the content) of the element at `at`."""
    if at + 2 > len(der):
        raise ValueError("truncated certificate")
    tag, length, at = der[at], der[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4 or at + count > len(der):
            raise ValueError("bad length in certificate")
        length, at = int.from_bytes(der[at : at + count], "big"), at + count
    if at + length > len(der):
        raise ValueError("truncated certificate")
    return tag, at, at + length


def _inside(der: bytes, at: int, tag: int) -> tuple[int, int]:
    found, start, end = _element(der, at)
    if found != tag:
        raise ValueError(f"expected tag {tag:#x}, found {found:#x}")
    return start, end


def _time(der: bytes, at: int) -> datetime:
    tag, start, end = _element(der, at)
    text = der[start:end].decode("ascii")
    if tag == _UTC_TIME:  # YYMMDDHHMMSSZ: 1950 to 2049
        parsed = datetime.strptime(text, "%y%m%d%H%M%SZ")
        if parsed.year >= 2050:
            parsed = parsed.replace(year=parsed.year - 100)
    elif tag == _GENERALIZED_TIME:  # YYYYMMDDHHMMSSZ
        parsed = datetime.strptime(text, "%Y%m%d%H%M%SZ")
    else:
        raise ValueError(f"expected a time, found tag {tag:#x}")
    return parsed.replace(tzinfo=UTC)


def not_after(der: bytes) -> datetime:
    """The end of the certificate's validity."""
    certificate, _ = _inside(der, 0, _SEQUENCE)
    at, _ = _inside(der, certificate, _SEQUENCE)  # tbsCertificate
    if der[at : at + 1] == bytes([_VERSION]):  # a slice: past the end it is empty
        at = _element(der, at)[2]
    for _ in range(3):  # serialNumber, signature, issuer
        at = _element(der, at)[2]
    validity, _ = _inside(der, at, _SEQUENCE)
    return _time(der, _element(der, validity)[2])  # after notBefore
