"""The web UI in a real browser, against the service as `make run` starts it (one process,
SQLite, jobs run in-process): the whole journey, with no console error, no CSP violation
and no request to another site on any page."""

from __future__ import annotations

from pathlib import Path

from tests.browser_journey import browser_page, chromium, run_journey
from tests.server import serve


def test_a_person_uses_every_feature_from_the_browser(tmp_path: Path) -> None:
    chromium()  # skip (fail under CI) before starting anything when there is no browser
    with serve(tmp_path) as server, browser_page(server.base_url) as (page, watch):
        journey = run_journey(page, watch, "local", "admin", server.admin_password)
    assert set(journey.weights) >= {"login", "items", "item", "import", "job", "jobs", "users"}
