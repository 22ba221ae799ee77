"""Cancelling tasks that a real Celery worker has queued or is running."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import sync_to_async

from realtime_async.async_manager import AsyncManager
from tests.integration.test_cancel_endpoints import cancel_message, cancel_url, csrf_client, post, state_of
from tests.services import wait_for
from tests.testapp.managers import recorded_events
from tests.ws_helpers import connected, fake_user, recv, stop_hub, subscribe

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("owner")


@pytest.fixture
async def hub():
    """This loop's fan-out hub, stopped after the test (see ``ws_helpers.stop_hub``)."""
    yield
    await stop_hub()


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


async def test_cancelling_a_running_task_over_the_websocket_stops_it_at_its_next_update(celery_worker_proc, hub):
    alice = fake_user()
    manager = AsyncManager.resolve_manager()
    name = await sync_to_async(manager.launch_async_task)("tests.testapp.workers.sleep_then_finish", 20, user=alice)
    comm = await connected(user=alice)
    await comm.send_json_to(subscribe(name))
    state = (await recv(comm, 30))["data"]["state"]
    while state != "running":
        state = (await recv(comm, 30))["data"]["state"]
    await comm.send_json_to(cancel_message(name))
    while (msg := await recv(comm, 15))["data"]["state"] == "running":
        pass
    assert (msg["type"], msg["data"]["state"], msg["data"]["error"]) == ("progress", "cancelled", None)
    assert await sync_to_async(state_of)(name) == "cancelled"
    await comm.disconnect()


def test_cancelling_a_running_task_over_http(owner, celery_worker_proc):
    manager = AsyncManager.resolve_manager()
    name = manager.launch_async_task("tests.testapp.workers.sleep_then_finish", 20, user=owner)
    wait_for(lambda: state_of(name) == "running", 30, what="running")
    response = post(csrf_client(owner), cancel_url(name))
    assert response.status_code == 202
    record = wait_for(lambda: (r := manager.get_progress(name))["state"] == "cancelled" and r, 15, what="cancelled")
    assert record["result"] is None and record["error"] is None
