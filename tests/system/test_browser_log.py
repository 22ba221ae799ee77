"""The widget's log in headless Chromium, against real daphne and Redis: history, live lines, text only, polling."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest

from realtime_async._core.naming import new_task_name
from realtime_async._core.store import Lines, WriteMode
from realtime_async._writing.writer import get_writer, log_line
from tests.browser_helpers import assert_clean, new_page, widget

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WAIT_MS = 20_000


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("logger")


def _page(browser, base_url, user, **options):
    return new_page(browser, base_url, user=user, timeout_ms=WAIT_MS, **options)


class Task:
    """A task whose records and log lines this test writes, as a worker would."""

    def __init__(self, user):
        self.name = new_task_name("log")
        self.base = {"task": self.name, "owner": user.pk, "created_at": time.time()}
        get_writer().commit({**self.base, "state": "queued"}, mode=WriteMode.CREATE)

    def write(self, *lines: tuple[str, str], state: str = "running") -> None:
        batch = Lines()
        for level, text in lines:
            batch.add(log_line(text, level), 1000)
        get_writer().commit({**self.base, "state": state}, lines=batch, wait=True)


def open_widget(page, task: Task, **query):
    response = page.goto("/demo/widgets/?" + urlencode({"task": task.name, **query}))
    assert response.status == 200, response.status
    return widget(page, task.name)


def shown(root) -> list[tuple[str, str]]:
    return [
        tuple(line)
        for line in root.locator(".ra-progress__log-lines > li").evaluate_all(
            "items => items.map(item => [item.dataset.raLevel,"
            " item.querySelector('.ra-progress__log-text').textContent])"
        )
    ]


def wait_lines(page, task: Task, count: int) -> None:
    page.wait_for_function(
        "([task, n]) => document.querySelectorAll("
        "`[data-ra-task='${task}'] .ra-progress__log-lines > li`).length === n",
        arg=[task.name, count],
    )


def test_history_then_live_lines_as_text_with_warnings_said_politely(browser, base_url, user):
    page = _page(browser, base_url, user)
    task = Task(user)
    task.write(("info", "Started"), ("info", "Row 1 <img src=x onerror=alert(1)>"))
    root = open_widget(page, task)
    wait_lines(page, task, 2)  # the history, asked for when the widget started
    log = root.locator('[data-ra-field="log"]')
    assert log.evaluate("node => node.tagName") == "DETAILS" and log.is_hidden() is False
    assert log.evaluate("node => node.open") is False  # collapsed: the bar stays the point
    assert shown(root) == [("info", "Started"), ("info", "Row 1 <img src=x onerror=alert(1)>")]
    assert root.locator(".ra-progress__log-lines img").count() == 0  # text, never markup
    assert root.locator(".ra-progress__log-lines").get_attribute("aria-live") is None  # the list is not read out

    task.write(("warning", "Row 31 skipped: no e-mail"))
    wait_lines(page, task, 3)
    status = root.locator('[data-ra-field="log-status"]')
    page.wait_for_function(
        "task => document.querySelector(`[data-ra-task='${task}'] [data-ra-field='log-status']`).textContent !== ''",
        arg=task.name,
    )
    assert status.text_content() == "Warning: Row 31 skipped: no e-mail"
    assert status.get_attribute("role") == "status"
    root.locator(".ra-progress__log > summary").click()
    assert root.locator(".ra-progress__log-count").text_content() == " (3)"

    task.write(("success", "All rows saved"), state="success")
    page.wait_for_selector(f'[data-ra-task="{task.name}"][data-ra-state="success"]')
    wait_lines(page, task, 4)
    assert shown(root)[-1] == ("success", "All rows saved")
    assert_clean(page)
    page.context.close()


def test_a_finished_task_still_shows_its_log_and_a_silent_one_shows_none(browser, base_url, user):
    page = _page(browser, base_url, user)
    done = Task(user)
    done.write(("info", "one"), ("error", "two"), state="failure")
    root = open_widget(page, done)
    wait_lines(page, done, 2)
    assert shown(root) == [("info", "one"), ("error", "two")]
    quiet = Task(user)
    quiet.write(state="success")
    root = open_widget(page, quiet)
    page.wait_for_timeout(500)
    assert root.locator('[data-ra-field="log"]').is_hidden()
    assert_clean(page)
    page.context.close()


def test_the_polling_fallback_brings_the_same_lines_once(browser, base_url, user):
    page = _page(browser, base_url, user, no_websocket=True)
    task = Task(user)
    task.write(("info", "a"), ("info", "b"))
    root = open_widget(page, task)
    wait_lines(page, task, 2)
    task.write(("info", "c"))
    wait_lines(page, task, 3)
    task.write(("info", "d"), state="success")
    wait_lines(page, task, 4)
    page.wait_for_timeout(1500)  # a few more polls: nothing is added twice
    assert [text for _, text in shown(root)] == ["a", "b", "c", "d"]
    assert_clean(page)
    page.context.close()
