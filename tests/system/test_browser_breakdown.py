"""A group's breakdown in headless Chromium, against real daphne and Redis: first rendered, then kept current.

The parts are driven from this process as their workers would drive them
(``tests/integration/test_groups.py``); the widget follows the parent over the
WebSocket and re-fetches the parts (``?parts=1``) as the parent changes.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from realtime_async import Part
from tests.browser_helpers import assert_clean, new_page, widget
from tests.integration.test_groups import _parts, _start

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WAIT_MS = 20_000
NOWHERE = {"queue": "realtime-async-tests-nowhere"}
STEPS = "tests.testapp.workers.steps"


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("breaker")


def listed(root) -> list[list[str]]:
    return root.locator(".ra-progress__part").evaluate_all(
        "items => items.map(item => [item.dataset.raPartState,"
        " item.querySelector('.ra-progress__part-title').textContent,"
        " item.querySelector('.ra-progress__part-percent').textContent.trim(),"
        " (item.querySelector('.ra-progress__part-error:not([hidden])') || {textContent: ''}).textContent.trim()])"
    )


def wait_summary(page, task: str, text: str) -> None:
    page.wait_for_function(
        "([task, text]) => document.querySelector("
        "`[data-ra-task='${task}'] [data-ra-field='breakdown-summary']`)?.textContent === text",
        arg=[task, text],
    )


def wait_part(page, task: str, part: str, state: str) -> None:
    page.wait_for_function(
        "([task, part, state]) => document.querySelector("
        "`[data-ra-task='${task}'] [data-ra-part='${part}']`)?.dataset.raPartState === state",
        arg=[task, part, state],
    )


@pytest.mark.parametrize("transport", ["auto", "poll"])
def test_the_breakdown_follows_the_parts_and_lists_a_failed_one_with_its_error(
    browser, base_url, user, manager, transport
):
    parent = manager.launch_async_group(
        [Part(STEPS, (1,), title="Chunk <1>"), Part(STEPS, (1,), title="Chunk 2"), Part(STEPS, (1,), title="Chunk 3")],
        title="Import",
        user=user,
        **NOWHERE,
    )
    first, second, third = _parts(manager, parent)
    page = new_page(browser, base_url, user=user, timeout_ms=WAIT_MS)
    response = page.goto("/demo/widgets/?" + urlencode({"task": parent, "breakdown": "1", "transport": transport}))
    assert response.status == 200
    root = widget(page, parent)
    # First render, by the server.
    assert root.locator('[data-ra-field="breakdown-summary"]').text_content() == "3 parts: 3 queued"
    assert listed(root) == [
        ["queued", "Chunk <1>", "0%", ""],
        ["queued", "Chunk 2", "0%", ""],
        ["queued", "Chunk 3", "0%", ""],
    ]
    assert root.locator(".ra-progress__parts").get_attribute("aria-live") is None  # not a live region

    _start(first)
    manager.update_progress(first, percent=50)
    wait_part(page, parent, first, "running")
    page.wait_for_function(
        "([task, part]) => document.querySelector(`[data-ra-task='${task}'] [data-ra-part='${part}']"
        " .ra-progress__part-percent`)?.textContent.trim() === '50%'",
        arg=[parent, first],
    )
    manager.finish(first, "failure", error="Broken <b>chunk</b>.")
    _start(second)
    manager.finish(second, "success")
    wait_part(page, parent, first, "failure")
    wait_part(page, parent, second, "success")
    wait_summary(page, parent, "3 parts: 1 done, 1 failed, 1 queued")
    assert listed(root)[0] == ["failure", "Chunk <1>", "50%", "Broken <b>chunk</b>."]  # as text, never markup
    assert root.locator(".ra-progress__parts b").count() == 0

    _start(third)
    manager.finish(third, "success")
    page.wait_for_selector(f'[data-ra-task="{parent}"][data-ra-state="failure"]')
    wait_part(page, parent, third, "success")
    wait_summary(page, parent, "3 parts: 2 done, 1 failed")
    assert [row[0] for row in listed(root)] == ["failure", "success", "success"]
    assert_clean(page)
    page.context.close()
