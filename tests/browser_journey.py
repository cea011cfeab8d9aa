"""A person's whole journey through the web UI in headless Chromium (Playwright), shared by
the browser tier (against `python -m app serve`, as `make run` starts it) and the stack tier
(the production stack over HTTPS, nginx serving the static files).

Chromium is the system's own (Debian's `chromium`, or Chrome where that is installed):
Playwright drives it through `executable_path` and downloads no browser. Every page is
checked for console errors, Content-Security-Policy violations and requests to other sites;
a screenshot of each main page and its weight (bytes of HTML, CSS and JavaScript) are saved
under build/browser/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.helpers import skip_or_fail_in_ci

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "build" / "browser"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MAX_PAGE_BYTES = 50 * 1024
# Reports every violation to the console, where the journey collects it. Injected by the
# driver (DevTools), so the page's own policy does not apply to it.
CSP_REPORTER = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI}`);
});
"""
WEIGHT = """() => {
  const entries = [...performance.getEntriesByType("navigation"),
                   ...performance.getEntriesByType("resource")];
  return entries.reduce((sum, entry) => sum + entry.decodedBodySize, 0);
}"""


def chromium() -> str:
    """The system Chromium's path (CHROMIUM_PATH overrides), or a skip (a failure in CI)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        skip_or_fail_in_ci("playwright is not installed (uv sync installs the dev group)")
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        return configured
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    skip_or_fail_in_ci("no Chromium on PATH: install Debian's `chromium` (or set CHROMIUM_PATH)")


@dataclass
class Watch:
    """What the pages did that they must not: console errors, blocked loads, other sites."""

    origin: str
    problems: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        page.on("request", self._request)
        page.on("requestfailed", self._failed)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.problems.append(f"console error on {message.location.get('url')}: {message.text}")

    def _request(self, request: Any) -> None:
        url = urlsplit(request.url)
        if url.scheme in ("http", "https") and f"{url.scheme}://{url.netloc}" != self.origin:
            self.problems.append(f"request to another site: {request.url}")

    def _failed(self, request: Any) -> None:
        if request.failure == NETWORK_CHANGED:
            return  # the machine's doing, not the page's: the load is tried again (visit)
        # A download's navigation is "aborted" by design; anything else is a problem.
        if request.failure != "net::ERR_ABORTED" or "/download" not in request.url:
            self.problems.append(f"request failed: {request.url} ({request.failure})")


# Chromium drops a load in flight when the machine's network interfaces change: Docker
# creating or removing a network for other tests running meanwhile.
NETWORK_CHANGED = "net::ERR_NETWORK_CHANGED"


def retried_on_network_change(goto: Callable[..., Any]) -> Callable[..., Any]:
    """`page.goto` that loads the page once more when the load was dropped for a change of
    the machine's networks; any other failure is raised as it was."""

    def visit(url: str, **options: Any) -> Any:
        try:
            return goto(url, **options)
        except Exception as error:  # playwright's Error: its module is imported lazily
            if NETWORK_CHANGED not in str(error):
                raise
            return goto(url, **options)

    return visit


@contextmanager
def browser_page(base_url: str, host_rules: str | None = None) -> Iterator[tuple[Any, Watch]]:
    from playwright.sync_api import sync_playwright

    executable = chromium()
    arguments = [f"--host-resolver-rules={host_rules}"] if host_rules else []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, args=arguments)
        try:
            context = browser.new_context(
                base_url=base_url, ignore_https_errors=True, accept_downloads=True
            )
            context.add_init_script(CSP_REPORTER)
            context.set_default_timeout(15_000)
            page = context.new_page()
            page.goto = retried_on_network_change(page.goto)  # type: ignore[method-assign]
            split = urlsplit(base_url)
            watch = Watch(f"{split.scheme}://{split.netloc}")
            watch.attach(page)
            yield page, watch
        finally:
            browser.close()


@dataclass
class Journey:
    page: Any
    watch: Watch
    label: str  # "local" or "stack": the artifacts' prefix
    weights: dict[str, int] = field(default_factory=dict)

    def snapshot(self, name: str) -> None:
        """A screenshot of the page and its weight, once it has settled."""
        self.page.wait_for_load_state("load")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{self.label}-{name}.png"), full_page=True)
        self.weights[name] = int(self.page.evaluate(WEIGHT))

    def write_weights(self) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"{self.label}-weights.json").write_text(json.dumps(self.weights, indent=2))


def import_csv(rows: int) -> bytes:
    return b"title,description\n" + b"".join(
        b"Imported %05d,row %05d\n" % (n, n) for n in range(rows)
    )


def run_journey(page: Any, watch: Watch, label: str, username: str, password: str) -> Journey:
    """Sign in, items (create, search, edit, delete), imports (progress to 100 %, a failure
    with its line numbers), export and download, jobs, users, status, API docs, sign out."""
    from playwright.sync_api import expect

    journey = Journey(page, watch, label)

    page.goto("/ui/items")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/items$"))
    journey.snapshot("login")
    # Keyboard order: the first field has the focus, then the fields in reading order.
    expect(page.get_by_label("Username or e-mail")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.get_by_label("Username or e-mail").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/ui/items$"))
    page.keyboard.press("Tab")  # on every other page the skip link comes first
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Search titles")).to_be_focused()

    # Items: create two, search, edit one, delete it.
    for title in ("Blue kettle", "Red teapot"):
        page.get_by_label("Title", exact=True).fill(title)
        page.get_by_role("button", name="Add item").click()
        expect(page.get_by_role("status")).to_have_text("Item created.")
    page.get_by_label("Search titles").fill("kettle")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("link", name="Blue kettle")).to_be_visible()
    expect(page.get_by_role("link", name="Red teapot")).to_have_count(0)
    page.get_by_role("link", name="Blue kettle").click()
    page.get_by_label("Title", exact=True).fill("Green kettle")
    page.get_by_label("Description").fill("Two litres")
    journey.snapshot("item")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Item saved.")
    expect(page.get_by_role("link", name="Green kettle")).to_be_visible()
    journey.snapshot("items")
    page.get_by_role("link", name="Green kettle").click()
    page.get_by_role("button", name="Delete this item").click()
    expect(page.get_by_role("status")).to_have_text("Item deleted.")
    expect(page.get_by_role("link", name="Green kettle")).to_have_count(0)

    # An import whose progress bar moves to 100 %.
    page.get_by_role("link", name="Import", exact=True).click()
    journey.snapshot("import")
    page.get_by_label("CSV file").set_input_files(
        files=[{"name": "items.csv", "mimeType": "text/csv", "buffer": import_csv(5000)}]
    )
    page.get_by_role("button", name="Import").click()
    expect(page).to_have_url(re.compile(r"/ui/jobs/[0-9a-f-]{36}$"))
    expect(page.locator("#job-state")).to_have_text("succeeded", timeout=60_000)
    expect(page.locator("#job-progress")).to_have_attribute("value", "100")
    expect(page.locator("#job-count")).to_have_text("5000 of 5000 rows")
    journey.snapshot("job")

    # An import that fails shows the rejected rows with their line numbers.
    page.goto("/ui/import")
    bad = b"title,description\nfine,\n,no title\nfine too,\n" + b"x" * 300 + b",too long\n"
    page.get_by_label("CSV file").set_input_files(
        files=[{"name": "bad.csv", "mimeType": "text/csv", "buffer": bad}]
    )
    page.get_by_role("button", name="Import").click()
    expect(page.locator("#job-state")).to_have_text("failed", timeout=60_000)
    rejected = page.locator("table.rejected tbody tr td:first-child")
    expect(rejected).to_have_text(["3", "5"])
    journey.snapshot("job-failed")

    # Export, then download the file.
    page.goto("/ui/items")
    page.get_by_role("button", name="Export to CSV").click()
    link = page.get_by_role("link", name="Download the CSV")
    expect(link).to_be_visible(timeout=60_000)
    with page.expect_download() as download:
        link.click()
    content = Path(download.value.path()).read_text(encoding="utf-8")
    assert content.splitlines()[0].startswith("id,title"), content[:200]
    assert "Red teapot" in content
    assert content.count("Imported ") == 5000

    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page.locator("tbody tr").nth(2)).to_be_visible()  # the three jobs above, at least
    journey.snapshot("jobs")

    # Superuser pages.
    page.get_by_role("link", name="Users", exact=True).click()
    expect(page.get_by_role("cell", name=username, exact=True)).to_be_visible()
    journey.snapshot("users")
    page.get_by_role("link", name="Status", exact=True).click()
    expect(page.get_by_role("rowheader", name="database")).to_be_visible()
    journey.snapshot("status")

    # The API docs render from this site's files.
    page.goto("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Shipshape", timeout=30_000)
    expect(page.locator(".opblock").first).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / f"{label}-docs.png"))

    # On a phone's screen nothing is wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto("/ui/items")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    journey.snapshot("items-phone")
    page.set_viewport_size({"width": 1280, "height": 720})

    # Sign out: the session is over.
    page.goto("/ui/items")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("status")).to_have_text("You are signed out.")
    page.goto("/ui/jobs")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/jobs$"))

    journey.write_weights()
    assert watch.problems == [], "\n".join(watch.problems)
    heavy = {name: size for name, size in journey.weights.items() if size > MAX_PAGE_BYTES}
    assert heavy == {}, f"pages over {MAX_PAGE_BYTES} bytes: {heavy}"
    return journey
