"""The web UI through the production stack: HTTPS, nginx serving the static files from the
volume the app fills, the app's strict CSP on the pages, and the whole journey in Chromium
(the browser tier's, tests/browser_journey.py)."""

from __future__ import annotations

import re

import pytest

from tests.browser_journey import browser_page, chromium, run_journey
from tests.stack.conftest import DOMAIN, Stack

UI_CSP = "default-src 'none'; script-src 'self'; style-src 'self'"


def test_nginx_serves_the_static_files_with_immutable_cache_headers(stack: Stack) -> None:
    page = stack.https("GET", "/ui/login")
    assert page.status == 200
    assert page.headers["content-security-policy"].startswith(UI_CSP)
    assert page.headers["cache-control"] == "no-store"
    assert "Secure" in page.headers["set-cookie"]
    assert page.headers["x-frame-options"] == "DENY"
    assets = re.findall(rb'(?:href|src)="(/ui/static/[^"]+)"', page.body)
    assert len(assets) == 2
    for asset in assets:
        reply = stack.https("GET", asset.decode(), headers={"Accept-Encoding": "gzip"})
        assert reply.status == 200
        assert reply.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert reply.headers["content-encoding"] == "gzip"
        assert "x-request-id" not in reply.headers  # from nginx's volume, not the app
    missing = stack.https("GET", "/ui/static/style.0123456789ab.css")
    assert missing.status == 404
    assert "x-request-id" in missing.headers  # not on the volume: the app answered
    logs = stack.compose("logs", "--no-log-prefix", "app").stdout
    assert "web UI static files:" in logs


def test_each_security_header_comes_once(stack: Stack) -> None:
    """nginx adds its headers and lets the app's CSP through: no header twice."""
    for path in ("/ui/login", "/docs", "/live"):
        names = stack.https("GET", path).header_names
        for header in ("content-security-policy", "x-frame-options", "referrer-policy",
                       "x-content-type-options"):  # fmt: skip
            assert names.count(header) == 1, (path, header, names)


def test_docs_render_under_the_production_csp(stack: Stack) -> None:
    reply = stack.https("GET", "/docs")
    assert reply.status == 200
    assert reply.headers["content-security-policy"].startswith(UI_CSP)
    assert b"cdn." not in reply.body


# Chromium drops a page load when the machine's networks change, as they do whenever another
# test starts or stops containers: `make test` runs this test with no other beside it.
@pytest.mark.alone
def test_a_person_uses_every_feature_through_the_production_stack(stack: Stack) -> None:
    chromium()
    base_url = f"https://{DOMAIN}:{stack.https_port}"
    with browser_page(base_url, host_rules=f"MAP {DOMAIN} 127.0.0.1") as (page, watch):
        run_journey(page, watch, "stack", "admin", stack.admin_password)
