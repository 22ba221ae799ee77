"""Admin async actions in headless Chromium: launch, watch live, conflicts, cancel; real daphne, Redis and worker."""

from __future__ import annotations

import re

import pytest

from realtime_async.async_manager import AsyncManager
from tests.browser_helpers import assert_clean, events, new_page, widget
from tests.services import wait_for
from tests.testapp.models import Widget

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("celery_worker_proc"),
]

WAIT_MS = 20_000
CHANGELIST = "/admin/testapp/widget/"
PASSWORD = "correct horse battery staple"
PROGRESS_URL = re.compile(r"/admin/testapp/widget/task/(?P<task>[^/]+)/$")


@pytest.fixture
def admin_user(django_user_model):
    return django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)


@pytest.fixture
def widgets(admin_user):
    return [Widget.objects.create(name=name) for name in ("alpha", "beta", "gamma")]


@pytest.fixture
def admin_page(browser, base_url, admin_user):
    """A page logged into the admin through its login form."""
    page = new_page(browser, base_url, timeout_ms=WAIT_MS)
    page.goto("/admin/login/?next=" + CHANGELIST)
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"**{CHANGELIST}")
    yield page
    page.context.close()


@pytest.fixture
def manager():
    return AsyncManager.resolve_manager()


def run_action(page, objects, action):
    """Open the change list, select ``objects`` and run ``action``."""
    page.goto(CHANGELIST)
    for obj in objects:
        page.locator(f'input[name="_selected_action"][value="{obj.pk}"]').check()
    page.locator('select[name="action"]').select_option(action)
    with page.expect_navigation():
        page.locator('button[name="index"]').click()  # "Go"


def landed_task(page):
    page.wait_for_url(PROGRESS_URL)
    return PROGRESS_URL.search(page.url).group("task")


def wait_state(page, task, state):
    page.wait_for_selector(f'[data-ra-task="{task}"][data-ra-state="{state}"]')


def stop(manager, task, user):
    """Leave the worker free for the next test."""
    manager.cancel(task, user=user)
    wait_for(lambda: manager.get_progress(task)["state"] == "cancelled", 15, 0.1, f"{task} to be cancelled")


def test_admin_action_runs_and_is_watched_live(admin_page, widgets, manager):
    page = admin_page
    run_action(page, widgets, "async_admin_rebuild")
    task = landed_task(page)
    assert page.locator(".messagelist").inner_text().startswith(f"Task {task} launched.")
    wait_state(page, task, "success")
    root = widget(page, task)
    assert root.locator('[data-ra-field="message"]').inner_text() == "Rebuilt 3/3"
    assert root.get_by_role("progressbar").get_attribute("aria-valuenow") == "100"
    assert root.get_by_role("button").count() == 0 or not root.get_by_role("button").is_visible()
    progress = [event for event in events(page, task) if event["name"] == "progress"]
    assert len({event["percent"] for event in progress}) >= 2, progress  # watched it move
    assert {event["transport"] for event in progress} == {"ws"}
    assert [w.rebuilds for w in Widget.objects.order_by("pk")] == [1, 1, 1]
    record = manager.get_progress(task)
    assert record["result"] == {"rebuilt": 3}
    assert manager.check_conflict({"testapp.Widget": [w.pk for w in widgets]}) == {}
    page.get_by_role("link", name="Back to the list").click()
    page.wait_for_url(f"**{CHANGELIST}")
    assert_clean(page)


def test_a_second_run_on_the_same_objects_is_refused(admin_page, admin_user, widgets, manager):
    page = admin_page
    alpha, beta, gamma = widgets
    run_action(page, [alpha, beta], "rebuild_slowly")
    first = landed_task(page)
    wait_state(page, first, "running")
    try:
        run_action(page, [beta, gamma], "async_admin_rebuild")
        assert page.url.endswith(CHANGELIST)  # no progress page: nothing was launched
        error = page.locator(".messagelist .error").inner_text()
        assert error == f"Nothing was launched: task {first} is already working on some of these widgets."
        assert manager.active_tasks() == [first]
        assert manager.check_conflict({"testapp.Widget": [gamma.pk]}) == {}  # gamma was not kept locked
        assert manager.check_conflict({"testapp.Widget": [beta.pk]}) == {"testapp.widget": {str(beta.pk): first}}
    finally:
        stop(manager, first, admin_user)
    assert_clean(page)


def test_cancel_from_the_progress_page(admin_page, widgets, manager):
    page = admin_page
    run_action(page, widgets[:2], "rebuild_slowly")
    task = landed_task(page)
    wait_state(page, task, "running")
    # The widget is named by the task's title: the action's, with the number of objects.
    assert page.locator("#content h1").inner_text() == "Admin rebuild: 2 widgets"
    button = widget(page, task).get_by_role("button", name="Cancel Admin rebuild: 2 widgets")
    button.click()
    wait_state(page, task, "cancelled")
    assert widget(page, task).locator('[data-ra-field="state"]').inner_text() == "Cancelled"
    assert not button.is_visible()
    requested = [event for event in events(page, task) if event["name"] == "cancel-requested"]
    assert [event["transport"] for event in requested] == ["ws"]
    # The worker stopped: it rebuilt nothing more, the state stays cancelled, the locks are free.
    record = manager.get_progress(task)
    assert record["state"] == "cancelled"
    assert manager.check_conflict({"testapp.Widget": [w.pk for w in widgets]}) == {}
    rebuilt = [w.rebuilds for w in Widget.objects.order_by("pk")]
    page.wait_for_timeout(1000)
    assert manager.get_progress(task)["seq"] == record["seq"]
    assert [w.rebuilds for w in Widget.objects.order_by("pk")] == rebuilt == [0, 0, 0]
    assert task not in manager.active_tasks()
    # The objects can be worked on again at once.
    run_action(page, widgets[:1], "async_admin_rebuild")
    wait_state(page, landed_task(page), "success")
    assert_clean(page)


def test_the_split_action_runs_one_group_watched_as_one_bar(admin_page, widgets, manager):
    page = admin_page
    more = [Widget.objects.create(name=name) for name in ("delta", "epsilon")]
    everything = widgets + more
    run_action(page, everything, "rebuild_in_parallel")  # chunks of two: three parts
    task = landed_task(page)
    assert page.locator(".messagelist").inner_text().startswith(f"Task {task} launched.")
    assert page.locator("#content h1").inner_text() == "Rebuild: 5 widgets"
    wait_state(page, task, "success")
    root = widget(page, task)
    assert root.count() == 1  # one live bar, the group's
    assert root.get_by_role("progressbar").count() == 1
    assert root.get_by_role("progressbar").get_attribute("aria-valuenow") == "100"
    # Under it, the breakdown: a row per part, titled by its chunk.
    rows = root.locator("[data-ra-part]")
    assert rows.locator(".ra-progress__part-title").all_inner_texts() == [
        "Rebuild: 2 widgets (1–2)",
        "Rebuild: 2 widgets (3–4)",
        "Rebuild: 1 widget (5)",
    ]
    progress = [event for event in events(page, task) if event["name"] == "progress"]
    assert progress and {event["transport"] for event in progress} == {"ws"}
    # Every object was rebuilt once, by one of the parts; the group held all the locks and released them.
    assert [w.rebuilds for w in Widget.objects.order_by("pk")] == [1] * 5
    record = manager.get_progress(task)
    assert record["group"]["parts"] == 3 and record["group"]["counts"]["success"] == 3
    parts = [manager.get_progress(f"{task}.{index}") for index in range(3)]
    assert [part["result"] for part in parts] == [{"rebuilt": 2}, {"rebuilt": 2}, {"rebuilt": 1}]
    assert manager.check_conflict({"testapp.Widget": [w.pk for w in everything]}) == {}
    assert task not in manager.active_tasks()
    assert_clean(page)
