"""Headless Chromium (Debian's) driven by Playwright's sync API, for the browser tests.

Browser test modules get their ``base_url`` and ``browser`` fixtures
(module-scoped, ``tests/system/conftest.py``) from ``run_server()`` (daphne or
uvicorn) and ``run_chromium()``.
"""

from __future__ import annotations

from django.test import Client
from playwright.sync_api import sync_playwright
from pytest import MonkeyPatch

from tests.services import start_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Runs before any page script: records the widget's events and every CSP violation.
RECORDER = """
window.__events = [];
window.__csp = [];
const names = ["progress", "final", "success", "failure", "cancelled", "lost", "error"];
for (const name of [...names, "cancel-requested", "cancel-failed"]) {
  document.addEventListener(`realtime-async:${name}`, (event) => {
    const record = event.detail.record || {};
    window.__events.push({
      name, task: event.detail.task, seq: record.seq, state: record.state,
      percent: record.percent, transport: event.detail.transport, code: event.detail.error?.code,
      row: event.target.tagName === "TR",
    });
  });
}
document.addEventListener("securitypolicyviolation", (event) => {
  window.__csp.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


def session_key(user) -> str:
    """A session of ``user`` that the servers can read: sessions live in the shared cache, users in the database."""
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def session_cookie(user, base_url: str) -> dict[str, str]:
    """The session cookie of ``user``, for a browser context."""
    return {"name": "sessionid", "value": session_key(user), "url": base_url}


# What the Page Visibility API says when the user switches tabs; headless Chromium's page stays visible.
SET_VISIBILITY = """state => {
  Object.defineProperty(document, "visibilityState", {configurable: true, get: () => state});
  Object.defineProperty(document, "hidden", {configurable: true, get: () => state === "hidden"});
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def widget(page, task: str):
    return page.locator(f'[data-ra-task="{task}"]')


def events(page, task: str | None = None) -> list[dict]:
    recorded = page.evaluate("window.__events")
    return [event for event in recorded if task is None or event["task"] == task]


def run_server(server: str = "daphne"):
    """Yields the base URL of a real ``server`` (daphne, uvicorn) serving the test project; stops it after."""
    proc, port = start_server(server)
    yield f"http://127.0.0.1:{port}"
    proc.stop()


def run_daphne():
    """Yields the base URL of a real daphne serving the test project; stops it after."""
    yield from run_server("daphne")


def run_uvicorn():
    """Yields the base URL of a real uvicorn serving the test project (the README's options); stops it after."""
    yield from run_server("uvicorn")


def run_chromium():
    """Yields a headless Chromium; start it after the server and the worker (see below)."""
    # Playwright's sync API keeps its asyncio loop marked as running in this
    # thread, so Django would refuse the tests' ORM calls (and pytest-django's
    # flush) as "async unsafe"; they are not, the loop only waits for Chromium.
    # Set after the server and the worker started, so their checks stay on.
    with MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()


def new_page(browser, base_url, *, user=None, no_websocket=False, timeout_ms=20_000, locale=None):
    """A page in a context of its own (logged in as ``user``), recording events, CSP violations and errors.

    ``locale`` ("de-DE") sets the browser's language, hence its ``Accept-Language``.
    Close it with ``page.context.close()``.
    """
    context = browser.new_context(base_url=base_url, **({"locale": locale} if locale else {}))
    if user is not None:
        context.add_cookies([session_cookie(user, base_url)])
    context.add_init_script(RECORDER)
    if no_websocket:
        context.add_init_script("window.WebSocket = undefined;")
    context.set_default_timeout(timeout_ms)
    # Pages without a CSP make Chromium ask for one, and log the test project's 404 as an error.
    context.route("**/favicon.ico", lambda route: route.fulfill(status=204))
    page = context.new_page()
    page.sockets, page.errors = [], []
    page.on("websocket", lambda socket: page.sockets.append(socket))
    page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    return page


def assert_clean(page, *, allow=()):
    """No CSP violation and no console error (but those matching ``allow``)."""
    assert page.evaluate("window.__csp") == [], "CSP violations"
    errors = [error for error in page.errors if not any(pattern in error for pattern in allow)]
    assert errors == [], errors
