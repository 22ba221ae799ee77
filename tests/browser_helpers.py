"""Headless Chromium (Debian's) driven by Playwright's sync API, for the browser tests."""

from __future__ import annotations

from django.test import Client

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
for (const name of ["progress", "final", "success", "failure", "cancelled", "lost", "error"]) {
  document.addEventListener(`realtime-async:${name}`, (event) => {
    const record = event.detail.record || {};
    window.__events.push({
      name, task: event.detail.task, seq: record.seq, state: record.state,
      percent: record.percent, transport: event.detail.transport,
    });
  });
}
document.addEventListener("securitypolicyviolation", (event) => {
  window.__csp.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


def session_cookie(user, base_url: str) -> dict[str, str]:
    """The session cookie of ``user``, for a browser context (sessions live in the shared cache)."""
    client = Client()
    client.force_login(user)
    return {"name": "sessionid", "value": client.cookies["sessionid"].value, "url": base_url}


def widget(page, task: str):
    return page.locator(f'[data-ra-task="{task}"]')


def events(page, task: str | None = None) -> list[dict]:
    recorded = page.evaluate("window.__events")
    return [event for event in recorded if task is None or event["task"] == task]
