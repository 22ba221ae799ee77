"""Quiet hidden tabs in headless Chromium: a hidden page's widget polls ten times less often,
catches up at once when shown again, and never misses the final state (issue 13)."""

from __future__ import annotations

import re
import time
from urllib.parse import urlencode

import pytest

from realtime_async._core.naming import new_task_name
from realtime_async._core.store import WriteMode
from realtime_async._writing.writer import get_writer
from realtime_async.conf import get_settings
from tests.browser_helpers import SET_VISIBILITY, assert_clean, new_page, widget

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VISIBLE_S = 8  # enough visible polls that one poll more or less cannot tip the ratio
HIDDEN_S = 15  # longer than one slowed interval (10 × POLL_INTERVAL), shorter than two


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("hidden")


class Task:
    """A task whose records this test writes, as a worker would."""

    def __init__(self, user):
        self.name = new_task_name("hidden")
        self.base = {"task": self.name, "owner": user.pk, "created_at": time.time()}
        get_writer().commit({**self.base, "state": "queued"}, mode=WriteMode.CREATE)

    def write(self, state: str = "running", percent: float | None = None) -> None:
        get_writer().commit({**self.base, "state": state, "percent": percent}, wait=True)


def polls_during(page, seconds: float) -> int:
    page.polls.clear()
    page.wait_for_timeout(seconds * 1000)
    return len(page.polls)


def test_a_hidden_page_polls_ten_times_less_and_catches_up_at_once_when_shown(browser, base_url, user):
    interval_s = get_settings().poll_interval
    assert 3 * interval_s <= VISIBLE_S and 10 * interval_s < HIDDEN_S < 20 * interval_s
    page = new_page(browser, base_url, user=user, no_websocket=True)
    page.route(re.compile(r"/realtime-async/events/"), lambda route: route.abort())  # no SSE either: polling
    task = Task(user)
    task.write(percent=10)
    page.polls = []
    path = f"/{task.name}/"
    page.on("request", lambda request: path in request.url and "parts=" not in request.url and page.polls.append(1))
    root = widget(page, task.name)
    page.goto("/demo/widgets/?" + urlencode({"task": task.name}))
    page.wait_for_selector(f'[data-ra-task="{task.name}"][data-ra-via="poll"]')

    visible = polls_during(page, VISIBLE_S)
    page.evaluate(SET_VISIBILITY, "hidden")
    hidden = polls_during(page, HIDDEN_S)
    print(f"polls: {visible} in {VISIBLE_S} s visible, {hidden} in {HIDDEN_S} s hidden")
    assert visible >= VISIBLE_S / interval_s - 1, visible
    assert hidden / HIDDEN_S <= 0.1 * visible / VISIBLE_S, (visible, hidden)

    # A change while nobody looks is shown within one round trip of coming back, not after the slow wait.
    task.write(percent=60)
    page.evaluate(SET_VISIBILITY, "visible")
    page.wait_for_function(
        "task => document.querySelector(`[data-ra-task='${task}'] [data-ra-field='percent']`)"
        ".textContent.startsWith('60')",
        arg=task.name,
        timeout=interval_s * 1000 / 2,
    )
    # Then the normal pace: the final state within about one poll.
    task.write("success", 100)
    page.wait_for_selector(f'[data-ra-task="{task.name}"][data-ra-state="success"]', timeout=interval_s * 1000 * 2.5)
    assert root.get_attribute("data-ra-via") == "poll"
    assert_clean(page, allow=("Failed to load resource: net::ERR_FAILED",))  # the event stream, refused
    page.context.close()
