"""Signed webhook events: validation of callback URLs, signing, delivery with retries.

Every event is a JSON body POSTed with two headers:

    X-Shipshape-Timestamp: 1732368000
    X-Shipshape-Signature: v1=<hex HMAC-SHA256 of "{timestamp}.{body}" keyed with WEBHOOK_SECRET>

A receiver recomputes the HMAC over the raw body, compares it in constant time, and
rejects timestamps older than a few minutes (replays). `verify_signature` is that recipe.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from app.core.config import Settings

TIMESTAMP_HEADER = "X-Shipshape-Timestamp"
SIGNATURE_HEADER = "X-Shipshape-Signature"
DEFAULT_TOLERANCE_SECONDS = 300


class InvalidCallbackUrl(ValueError):
    pass


def validate_callback_url(url: str, settings: Settings) -> str:
    """An http(s) URL without credentials, on an allowed host when an allow-list is set."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise InvalidCallbackUrl("callback_url must be an http:// or https:// URL")
    if not parts.hostname:
        raise InvalidCallbackUrl("callback_url has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidCallbackUrl("callback_url must not carry credentials")
    allowed = settings.webhook_allowed_host_list
    if allowed and parts.hostname.lower() not in allowed:
        raise InvalidCallbackUrl(f"callback_url host {parts.hostname!r} is not allowed")
    if len(url) > 2048:
        raise InvalidCallbackUrl("callback_url is longer than 2048 characters")
    return url.strip()


def sign(key: bytes, timestamp: int, body: bytes) -> str:
    digest = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify_signature(
    key: bytes,
    body: bytes,
    timestamp_header: str,
    signature_header: str,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """The receiver's check: a fresh timestamp and a matching HMAC over the raw body."""
    try:
        timestamp = int(timestamp_header)
    except ValueError:
        return False
    if abs((now or time.time()) - timestamp) > tolerance:
        return False
    return hmac.compare_digest(sign(key, timestamp, body), signature_header)


@dataclass(frozen=True)
class Delivery:
    ok: bool
    retry: bool  # worth trying again (5xx, timeout, connection error)
    detail: str


def deliver(settings: Settings, url: str, event: dict[str, Any]) -> Delivery:
    """One attempt. 2xx: delivered; 5xx, 429 or no answer: retry; other 4xx: give up."""
    body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Shipshape-Webhook/1",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(settings.webhook_key, timestamp, body),
    }
    import httpx  # here: the web process only needs it when jobs run in-process

    try:
        response = httpx.post(
            url, content=body, headers=headers, timeout=settings.webhook_timeout_seconds
        )
    except httpx.HTTPError as exc:
        return Delivery(ok=False, retry=True, detail=f"{type(exc).__name__}: {exc}"[:300])
    if response.is_success:
        return Delivery(ok=True, retry=False, detail=f"HTTP {response.status_code}")
    retry = response.status_code >= 500 or response.status_code == 429
    return Delivery(ok=False, retry=retry, detail=f"HTTP {response.status_code}")


def backoff_seconds(settings: Settings, attempt: int) -> float:
    """Delay before attempt number `attempt + 1` (attempt counts from 1)."""
    return float(settings.webhook_backoff_seconds * (2 ** (attempt - 1)))
