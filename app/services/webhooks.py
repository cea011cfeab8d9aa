"""Signed webhook events: validation of callback URLs, signing, delivery with retries.

Events follow Standard Webhooks (standardwebhooks.com): a JSON body POSTed with

    webhook-id: msg_<job id>_<state>     (the same on every retry: receivers deduplicate)
    webhook-timestamp: 1732368000
    webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">

signed by the `standardwebhooks` package. Receivers verify with a Standard Webhooks
library in their language (`standardwebhooks` or `svix` in Python) and the secret
`whsec_` + base64(WEBHOOK_SECRET) — or WEBHOOK_SECRET itself when it is already in the
`whsec_...` form; `receiver_secret()` computes it.

Callback URLs are a user's choice of where the server connects: see app/core/egress.py
for the checks on the addresses actually connected to.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.core.config import Settings
from app.core.egress import RefusedAddress, is_public

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
MAX_URL_LENGTH = 2048

# Only printable ASCII: no whitespace, no CR/LF (header injection), no control characters.
_URL_CHARS = re.compile(r"^[\x21-\x7e]+$")
# WHATWG URL rule: a host whose last label is a number is an IPv4 address in some form
# (2130706433, 127.1, 0x7f000001, 0177.0.0.1 are all 127.0.0.1 to some client).
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
_LOCAL_NAMES = ("localhost", "localhost.")


class InvalidCallbackUrl(ValueError):
    pass


def validate_callback_url(url: str, settings: Settings) -> str:
    """An absolute http(s) URL in canonical form, without credentials, not aimed at a
    non-public address (unless WEBHOOK_ALLOW_PRIVATE_TARGETS) and on an allowed host
    when WEBHOOK_ALLOWED_HOSTS is set. Names are checked again, resolved, at delivery."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidCallbackUrl(f"callback_url is longer than {MAX_URL_LENGTH} characters")
    if not _URL_CHARS.match(url):
        raise InvalidCallbackUrl(
            "callback_url must be printable ASCII without spaces (percent-encode the rest, "
            "and use the xn-- form of international host names)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port that is not a number in range
    except ValueError:
        raise InvalidCallbackUrl("callback_url is not a valid URL") from None
    if port == 0:
        raise InvalidCallbackUrl("callback_url port must be between 1 and 65535")
    if parts.scheme not in ("http", "https"):
        raise InvalidCallbackUrl("callback_url must be an http:// or https:// URL")
    host = parts.hostname
    if not host:
        raise InvalidCallbackUrl("callback_url has no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidCallbackUrl("callback_url must not carry credentials")
    _check_host(host, settings)
    allowed = settings.webhook_allowed_host_list
    if allowed and host not in allowed:
        raise InvalidCallbackUrl(f"callback_url host {host!r} is not allowed")
    return url


def _check_host(host: str, settings: Settings) -> None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if _NUMERIC_LABEL.match(host.rstrip(".").rsplit(".", 1)[-1]):
            raise InvalidCallbackUrl(
                "callback_url host is an IP address in a non-canonical form: write IPv4 "
                "addresses as four decimal numbers"
            ) from None
        ip = None
    if settings.webhook_allow_private_targets:
        return
    if ip is not None:
        if not is_public(ip):
            raise InvalidCallbackUrl(_NOT_PUBLIC)
    elif host in _LOCAL_NAMES or host.endswith(".localhost") or "." not in host.rstrip("."):
        raise InvalidCallbackUrl(_NOT_PUBLIC)


_NOT_PUBLIC = (
    "callback_url must point at a public address (loopback, private, link-local and "
    "reserved ones are refused)"
)


def webhook(settings: Settings) -> Webhook:
    return Webhook(settings.webhook_key)


def receiver_secret(settings: Settings) -> str:
    """The secret a Standard Webhooks receiver verifies our events with."""
    return "whsec_" + base64.b64encode(settings.webhook_key).decode()


def signed_headers(settings: Settings, message_id: str, body: bytes) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "content-type": "application/json",
        "user-agent": "Shipshape-Webhook/1",
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(int(now.timestamp())),
        SIGNATURE_HEADER: webhook(settings).sign(message_id, now, body.decode()),
    }


def verify(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """The receiver's check (what a Standard Webhooks library does): a fresh timestamp
    and a matching signature over the raw body."""
    try:
        Webhook(secret).verify(body, headers, json_parse=False)
    except (WebhookVerificationError, ValueError):
        return False
    return True


REFUSED = "refused: the callback host is not a public address"
UNSENDABLE = "delivery failed: the request could not be made"
_TIMEOUTS = ("connect", "read", "write", "pool")


@dataclass(frozen=True)
class Delivery:
    ok: bool
    retry: bool  # worth trying again (5xx, 429, no answer)
    detail: str  # what the job's owner reads: a class of failure and a status, no more


def deliver(settings: Settings, url: str, message_id: str, event: dict[str, Any]) -> Delivery:
    """One attempt. 2xx: delivered; 5xx, 429 or no answer: retry; other 4xx: give up.

    No redirect is followed, no proxy from the environment is used, and the answer's body
    is never read. Every outcome is a Delivery, never an exception."""
    import httpcore  # here: the web process only needs it when jobs run in-process

    from app.core.egress_backend import EgressBackend

    body = json.dumps(event, separators=(",", ":"), sort_keys=True).encode()
    timeout = settings.webhook_timeout_seconds
    backend = EgressBackend(
        allow_private=settings.webhook_allow_private_targets, total_timeout=timeout
    )
    try:
        with (
            httpcore.ConnectionPool(network_backend=backend, max_connections=1) as pool,
            pool.stream(
                "POST",
                url,
                headers=list(signed_headers(settings, message_id, body).items()),
                content=body,
                extensions={"timeout": dict.fromkeys(_TIMEOUTS, timeout)},
            ) as response,
        ):
            status = response.status
    except RefusedAddress:
        return Delivery(ok=False, retry=False, detail=REFUSED)
    except (httpcore.NetworkError, httpcore.TimeoutException, OSError):
        return Delivery(ok=False, retry=True, detail="delivery failed: no answer")
    except Exception:  # an unusable URL or a broken answer: trying again will not help
        return Delivery(ok=False, retry=False, detail=UNSENDABLE)
    if 200 <= status < 300:
        return Delivery(ok=True, retry=False, detail=f"HTTP {status}")
    return Delivery(ok=False, retry=status >= 500 or status == 429, detail=f"HTTP {status}")


def backoff_seconds(settings: Settings, attempt: int) -> float:
    """Delay before attempt number `attempt + 1` (attempt counts from 1)."""
    return float(settings.webhook_backoff_seconds * (2 ** (attempt - 1)))
