"""The web UI in a real browser, against the service as `make run` starts it (one process,
SQLite, jobs run in-process): the whole journey, with no console error, no CSP violation
and no request to another site on any page."""

from __future__ import annotations

from pathlib import Path

from tests.browser_journey import browser_page, chromium, run_journey
from tests.docker_utils import wait_until
from tests.mailbox import Mailbox, smtp_server
from tests.server import serve


def test_a_person_uses_every_feature_from_the_browser(tmp_path: Path) -> None:
    chromium()  # skip (fail under CI) before starting anything when there is no browser
    with serve(tmp_path) as server, browser_page(server.base_url) as (page, watch):
        journey = run_journey(page, watch, "local", "admin", server.admin_password)
    assert set(journey.weights) >= {"login", "items", "item", "import", "job", "jobs", "users"}


def test_a_person_changes_a_password_and_resets_a_forgotten_one(tmp_path: Path) -> None:
    """Through the pages alone, with the reset e-mail delivered to an SMTP server."""
    import re

    from playwright.sync_api import expect

    chromium()
    box = Mailbox()
    with smtp_server(box) as port:
        relay = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_SECURITY": "none"}
        with serve(tmp_path, **relay) as server, browser_page(server.base_url) as (page, watch):
            server.create_user("dana", "dana-first-password")
            page.goto("/ui/login")
            page.get_by_label("Username or e-mail").fill("dana")
            page.get_by_label("Password").fill("dana-first-password")
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("link", name="dana").click()
            expect(page).to_have_url(re.compile(r"/ui/account/password$"))
            page.get_by_label("Current password").fill("not-her-password")
            page.get_by_label("New password").fill("dana-second-password")
            page.get_by_role("button", name="Change password").click()
            expect(page.get_by_role("alert")).to_have_text("the current password is not correct")
            page.get_by_label("Current password").fill("dana-first-password")
            page.get_by_label("New password").fill("dana-second-password")
            page.get_by_role("button", name="Change password").click()
            expect(page.get_by_role("status")).to_contain_text("Password changed")
            page.get_by_role("button", name="Sign out").click()

            page.get_by_role("link", name="Forgotten your password?").click()
            page.get_by_label("E-mail").fill("dana@example.com")
            page.get_by_role("button", name="Send the link").click()
            expect(page.get_by_role("status")).to_contain_text("an e-mail with a link")
            # Sent after the answer, by this process (no worker under `make run`).
            wait_until(lambda: len(box.messages) == 1, 60, "the reset e-mail")
            assert box.messages[0]["To"] == "dana@example.com"
            page.goto(f"/ui/reset-password?token={box.token()}")
            page.get_by_label("New password").fill("dana-third-password")
            page.get_by_role("button", name="Set the new password").click()
            expect(page.get_by_role("status")).to_have_text(
                "Your password is changed. Sign in with the new one."
            )
            page.get_by_label("Username or e-mail").fill("dana")
            page.get_by_label("Password").fill("dana-third-password")
            page.get_by_role("button", name="Sign in").click()
            expect(page).to_have_url(re.compile(r"/ui/items$"))
            # Chromium reports the refused form's 400 itself; nothing else may show up.
            expected = "account/password: Failed to load resource: the server responded with a status of 400"
            problems = [p for p in watch.problems if expected not in p]
            assert problems == [], "\n".join(problems)
            assert len(watch.problems) == 1
