"""The core engine against a real Redis and a real prefork Celery worker."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest

from realtime_async.tasks import GENERIC_ERROR
from tests.services import wait_for
from tests.testapp.managers import recorded_events

pytestmark = pytest.mark.django_db(transaction=True)


def _final(manager, name, timeout=30):
    def done():
        record = manager.get_progress(name)
        return record if record and record["state"] not in ("queued", "running") else None

    return wait_for(done, timeout, what=f"{name} to finish")


def test_progress_grows_then_success_with_result(celery_worker_proc, manager, django_user_model):
    user = django_user_model.objects.create_user("alice")
    name = manager.launch_async_task(
        "tests.testapp.workers.steps",
        8,
        user=user,
        affected_objects=["Project 1"],
        task_kwargs={"delay": 0.25, "extra": "info"},
        conflict_ids={"testapp.Project": {1}},
    )
    assert manager.get_progress(name)["state"] in ("queued", "running")
    seen = []

    def collect():
        record = manager.get_progress(name)
        if not seen or record["seq"] != seen[-1]["seq"]:
            seen.append(record)
        return record["state"] == "success"

    wait_for(collect, 30, 0.02, "success")
    seqs = [record["seq"] for record in seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    running = [record for record in seen if record["state"] == "running" and record["current"]]
    assert len(running) >= 3, seen  # intermediate progress was visible
    assert all(record["total"] == 8 and record["message"].startswith("Step ") for record in running)
    final = seen[-1]
    assert final["result"]["steps"] == 8
    assert final["result"]["kwargs"] == ["extra"]
    assert final["percent"] == 100.0 and final["error"] is None
    assert final["owner"] == user.pk
    assert final["created_at"] <= final["started_at"] <= final["finished_at"]
    assert final["result"]["pid"] != os.getpid()
    assert manager.check_conflict({"testapp.Project": {1}}) == {}
    assert name not in manager.active_tasks()


def test_lifecycle_events_in_order_from_the_worker(celery_worker_proc, manager, django_user_model):
    user = django_user_model.objects.create_user("bob")
    name = manager.launch_async_task(
        "tests.testapp.workers.steps", 3, user=user, affected_objects=["A", "B"], task_kwargs={"delay": 0.2}
    )
    _final(manager, name)
    events = wait_for(lambda: (ev := recorded_events(name)) and ev[-1]["event"] == "complete" and ev, 10)
    # create fires in the launching process after the enqueue, so a fast worker's start
    # may be recorded before it: the launcher's and the worker's events are each in order.
    created = [event for event in events if event["event"] == "create"]
    assert len(created) == 1 and created[0]["pid"] == os.getpid()
    worker_events = [event for event in events if event["event"] != "create"]
    kinds = [event["event"] for event in worker_events]
    assert kinds[0] == "start" and kinds[-1] == "complete"
    assert set(kinds[1:-1]) == {"progress"}
    worker_pids = {event["pid"] for event in worker_events}
    assert len(worker_pids) == 1 and os.getpid() not in worker_pids
    for event in events:
        assert event["payload"]["user"] == {"id": user.pk, "label": "bob"}
        assert event["payload"]["affected_objects"] == ["A", "B"]
        assert event["payload"]["task_kwargs"] == {"delay": 0.2}
    assert events[-1]["payload"]["record"]["result"]["steps"] == 3


def test_failure_is_sanitised(celery_worker_proc, manager):
    name = manager.launch_async_task("tests.testapp.workers.fail_secret")
    final = _final(manager, name)
    assert final["state"] == "failure"
    assert final["error"] == GENERIC_ERROR
    assert "hunter2" not in json.dumps(final)
    events = wait_for(lambda: (ev := recorded_events(name)) and ev[-1]["event"] == "fail" and ev, 10)
    # The traceback goes to the fail payload (and the logs), never to the record.
    assert "hunter2-SECRET" in events[-1]["payload"]["traceback"]
    assert "hunter2" in celery_worker_proc.output()


def test_public_task_error_is_shown(celery_worker_proc, manager):
    name = manager.launch_async_task("tests.testapp.workers.fail_public")
    final = _final(manager, name)
    assert (final["state"], final["error"]) == ("failure", "The CSV file has no header row.")


def test_worker_resolves_an_explicit_manager_class(celery_worker_proc, manager):
    name = manager.launch_async_task(
        "tests.testapp.workers.steps", 1, task_kwargs={"delay": 0}, manager_class="tests.testapp.managers.OtherManager"
    )
    assert _final(manager, name)["result"]["manager"] == "OtherManager"
    # The configured RecordingManager (settings) is what launch sites and workers use by default.
    name = manager.launch_async_task("tests.testapp.workers.steps", 1, task_kwargs={"delay": 0})
    assert _final(manager, name)["result"]["manager"] == "RecordingManager"


def test_a_failing_hook_never_breaks_the_task(celery_worker_proc, manager):
    name = manager.launch_async_task("tests.testapp.workers.steps", 2, task_kwargs={"delay": 0, "explode_hook": True})
    assert _final(manager, name)["state"] == "success"
    assert "hook exploded on purpose" in celery_worker_proc.output()


def test_hot_loop_is_coalesced_and_keeps_the_last_update(celery_worker_proc, manager):
    name = manager.launch_async_task("tests.testapp.workers.hot_loop", 100_000)
    final = _final(manager, name, timeout=60)
    assert final["state"] == "success"
    assert final["current"] == 100_000 and final["message"] == "item 100000"
    # 100,000 calls; a bounded number of writes (PROGRESS_RATE=10/s plus start and end).
    assert final["seq"] < 2 + 10 * (final["result"]["seconds"] + 1) + 5
    assert final["result"]["seconds"] < 30  # generous bound: it is seconds, not minutes


def test_unknown_task_name_reuse_is_refused_while_unfinished(celery_worker_proc, manager):
    name = manager.launch_async_task("tests.testapp.workers.sleep_then_finish", 1.5, task_name="rebuild-42")
    assert name == "rebuild-42"
    with pytest.raises(ValueError, match="has not finished"):
        manager.launch_async_task("tests.testapp.workers.steps", 1, task_name="rebuild-42")
    assert _final(manager, name)["state"] == "success"
    # Once final, the name may be used again.
    manager.launch_async_task("tests.testapp.workers.steps", 1, task_name="rebuild-42", task_kwargs={"delay": 0})
    assert _final(manager, "rebuild-42")["result"]["steps"] == 1


def test_running_task_renews_locks_past_their_ttl(celery_worker_proc, manager, gate):
    # LOCK_TTL is 3 s in the test settings and the heartbeat renews every second. The task runs, its function
    # waiting at the gate, until the test has checked its locks, however slowly on a loaded machine.
    name = manager.launch_async_task(
        "tests.testapp.workers.sleep_then_finish",
        1,
        conflict_ids={"testapp.Thing": {50}},
        task_kwargs={"wait_for": str(gate)},
    )
    wait_for(lambda: manager.get_progress(name)["state"] == "running", 30, what="running")
    time.sleep(5)  # past the 3 s TTL
    assert manager.check_conflict({"testapp.Thing": {50}}) == {"testapp.thing": {"50": name}}
    assert not manager.add_conflict_ids(f"lock-{uuid.uuid4().hex[:10]}", {"testapp.Thing": {50}})
    gate.open()
    wait_for(lambda: manager.get_progress(name)["state"] == "success", 30, what="success")
    assert manager.check_conflict({"testapp.Thing": {50}}) == {}
