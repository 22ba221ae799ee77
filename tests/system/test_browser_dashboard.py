"""The live "my tasks" page in headless Chromium against real services: rows appear and finish without a reload."""

from __future__ import annotations

import pytest

from realtime_async.async_manager import AsyncManager
from realtime_async.contrib.dashboard.recorder import get_recorder
from tests.browser_helpers import assert_clean, events, new_page


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice")


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("sam", is_staff=True)


WAIT_MS = 20_000


@pytest.fixture
def pages(browser, base_url):
    """``open_(user, path, no_websocket=False)``: a page of the dashboard, logged in as ``user``."""
    opened = []

    def open_(user, path="/demo/tasks/", *, no_websocket=False):
        page = new_page(browser, base_url, user=user, no_websocket=no_websocket, timeout_ms=WAIT_MS)
        opened.append(page)
        response = page.goto(path)
        assert response.status == 200, response.status
        page.evaluate("window.__loaded = performance.timeOrigin")
        return page

    yield open_
    for page in opened:
        page.context.close()


def launch(user, steps=6, delay=0.2):
    return AsyncManager.resolve_manager().launch_async_task(
        "tests.testapp.workers.steps", steps, user=user, task_kwargs={"delay": delay}
    )


def row(page, task):
    return page.locator(f'#ra-dashboard-rows tr[data-task="{task}"]')


def wait_row(page, task, state="success"):
    page.wait_for_selector(f'#ra-dashboard-rows tr[data-task="{task}"][data-state="{state}"]')


def assert_not_reloaded(page, loaded):
    assert page.evaluate("window.__loaded") == loaded


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_new_tasks_appear_and_finish_without_reload(pages, alice, bob, staff, celery_worker_proc):
    earlier = launch(alice, steps=10)  # rendered by the server, then followed live
    mine = pages(alice)
    everyone = pages(staff)
    row(mine, earlier).wait_for()
    wait_for_feed(mine)
    wait_for_feed(everyone)
    loaded = mine.evaluate("window.__loaded")

    theirs = launch(bob, steps=3, delay=0.1)
    new = launch(alice)
    wait_row(mine, new)
    wait_row(mine, earlier)
    wait_row(everyone, theirs)
    wait_row(everyone, new)

    assert_not_reloaded(mine, loaded)
    assert mine.locator("#ra-dashboard-rows tr").first.get_attribute("data-task") == new  # added on top
    done = row(mine, new)
    assert done.locator('[data-ra-field="state"]').inner_text() == "Done"
    assert done.locator('[data-ra-field="message"]').inner_text() == "Step 6/6"
    assert done.locator("progress").evaluate("(bar) => bar.value") == 100
    assert row(mine, theirs).count() == 0  # bob's task is not alice's to see
    # A row the feed added links to the task's own page like a rendered one; the page shows the task.
    link = done.locator('a[data-ra-field="title"]')
    page_path = "/tasks/"  # the dashboard's own URLs, wherever the page showing the table is
    assert link.get_attribute("href") == f"{page_path}{new}/"
    assert row(mine, earlier).locator('a[data-ra-field="title"]').get_attribute("href") == f"{page_path}{earlier}/"
    seen = [event for event in events(mine, new) if event["row"]]
    assert {event["transport"] for event in seen} == {"ws"}, seen
    assert [event["name"] for event in seen][-3:] == ["progress", "final", "success"], seen
    seqs = [event["seq"] for event in seen if event["name"] == "progress"]
    assert len(seqs) >= 3 and seqs == sorted(set(seqs)), seqs  # it moved, in order
    assert mine.locator("#ra-dashboard").get_attribute("data-ra-via") == "ws"
    assert len(mine.sockets) == 1
    link.click()
    mine.wait_for_selector(f'[data-ra-task="{new}"][data-ra-state="success"]')
    assert mine.url.endswith(f"{page_path}{new}/")
    assert_clean(mine)
    assert_clean(everyone)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_polling_fallback_without_websockets(pages, alice, celery_worker_proc):
    page = pages(alice, no_websocket=True)
    page.wait_for_function("() => document.querySelector('#ra-dashboard')?.dataset.raVia === 'poll'")
    loaded = page.evaluate("window.__loaded")
    task = launch(alice, steps=8)
    row(page, task).wait_for()
    wait_row(page, task)
    assert_not_reloaded(page, loaded)
    assert row(page, task).locator('[data-ra-field="message"]').inner_text() == "Step 8/8"
    seen = [event for event in events(page, task) if event["row"]]
    assert {event["transport"] for event in seen} == {"poll"}, seen
    assert [event["name"] for event in seen][-2:] == ["final", "success"], seen
    assert page.sockets == []
    get_recorder().flush()
    assert_clean(page)


def wait_for_feed(page):
    """Until the feed is taken (the first refresh after it is done)."""
    page.wait_for_function("() => document.querySelector('#ra-dashboard')?.dataset.raVia === 'ws'")
