"""Who the client is, beyond its credentials: its address, and the device cookie its last
login here set (app/services/login_guard.py)."""

from __future__ import annotations

from fastapi import Request, Response

from app.api import API_PREFIX
from app.core.config import Settings

DEVICE_COOKIE = "shipshape_device"
DEVICE_COOKIE_DAYS = 365


def client_address(request: Request) -> str:
    """The client's address: the connection's peer, or what a trusted proxy
    (FORWARDED_ALLOW_IPS) says it is."""
    return request.client.host if request.client else "unknown"


def device_cookie(request: Request) -> str | None:
    return request.cookies.get(DEVICE_COOKIE)


def set_device_cookie(
    response: Response, settings: Settings, token: str, path: str = f"{API_PREFIX}/auth"
) -> None:
    """Sent back on the next login only (its path), never readable by a script."""
    response.set_cookie(
        DEVICE_COOKIE,
        token,
        max_age=DEVICE_COOKIE_DAYS * 24 * 3600,
        path=path,
        httponly=True,
        samesite="strict",
        secure=settings.is_strict,
    )
