from __future__ import annotations

import time

import pytest

from tests.services import wait_for
from tests.testapp.managers import recorded_events

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("owner")


def test_cancel_a_queued_task_it_never_runs(celery_worker_proc, manager, owner, tmp_path):
    marker = tmp_path / "ran"
    ids = {"testapp.Project": {5}}
    name = manager.launch_async_task(
        "tests.testapp.workers.touch_file", str(marker), user=owner, conflict_ids=ids, countdown=2
    )
    assert manager.get_progress(name)["state"] == "queued"
    assert manager.cancel(name, user=owner)
    record = manager.get_progress(name)
    assert record["state"] == "cancelled" and record["finished_at"]
    assert manager.check_conflict(ids) == {}
    assert name not in manager.active_tasks()
    time.sleep(3.5)  # past the countdown: a worker would have run it by now
    assert not marker.exists()
    assert manager.get_progress(name)["state"] == "cancelled"
    assert [event["event"] for event in recorded_events(name)] == ["create", "cancel"]


def test_cancel_a_running_task_stops_at_its_next_update(celery_worker_proc, manager, owner):
    ids = {"testapp.Project": {6}}
    name = manager.launch_async_task("tests.testapp.workers.sleep_then_finish", 20, user=owner, conflict_ids=ids)
    wait_for(lambda: manager.get_progress(name)["state"] == "running", 30, what="running")
    assert manager.cancel(name, user=owner)
    assert manager.is_cancelled(name)
    record = wait_for(lambda: (r := manager.get_progress(name))["state"] == "cancelled" and r, 10, what="cancelled")
    assert record["result"] is None and record["error"] is None
    assert manager.check_conflict(ids) == {}
    events = wait_for(lambda: (ev := recorded_events(name)) and ev[-1]["event"] == "cancel" and ev, 5)
    created = next(event for event in events if event["event"] == "create")
    assert events[-1]["pid"] != created["pid"]  # fired in the worker that stopped, not here
    assert not manager.cancel(name, user=owner)  # already final


def test_cancel_needs_permission(manager, owner, django_user_model):
    other = django_user_model.objects.create_user("mallory")
    staff = django_user_model.objects.create_user("admin", is_staff=True)
    name = manager.launch_async_task("tests.testapp.workers.touch_file", "/nonexistent/x", user=owner, countdown=30)
    assert not manager.cancel(name, user=other)
    assert not manager.cancel(name, user=None)
    assert manager.get_progress(name)["state"] == "queued"
    assert manager.cancel(name, user=staff)
    assert manager.get_progress(name)["state"] == "cancelled"
    assert not manager.cancel("no-such-task", user=staff)
