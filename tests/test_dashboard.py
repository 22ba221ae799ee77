"""The dashboard add-on records tasks from the lifecycle events of real workers."""

from __future__ import annotations

import pytest
from django.db import connection

from realtime_async.contrib.dashboard.models import TaskRecord
from realtime_async.contrib.dashboard.recorder import get_recorder
from tests.services import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("dora")


def _record(name, state):
    return wait_for(lambda: TaskRecord.objects.filter(task_name=name, state=state).first(), 20, 0.1, f"{name} {state}")


def test_success_is_recorded(celery_worker_proc, manager, owner):
    name = manager.launch_async_task(
        "tests.testapp.workers.steps", 4, user=owner, affected_objects=["P1"], task_kwargs={"delay": 0.1, "extra": "x"}
    )
    row = _record(name, "success")
    assert row.owner == owner and row.owner_label == "dora"
    assert row.affected_objects == ["P1"] and row.task_kwargs == {"delay": 0.1, "extra": "x"}
    assert row.result["steps"] == 4 and row.percent == 100.0 and row.message == "Step 4/4"
    assert row.created_at <= row.started_at <= row.finished_at
    assert row.error == ""


def test_failure_is_recorded_with_the_public_error_only(celery_worker_proc, manager, owner):
    name = manager.launch_async_task("tests.testapp.workers.fail_secret", user=owner)
    row = _record(name, "failure")
    assert row.error == "The task failed."
    assert "hunter2" not in f"{row.message} {row.error} {row.result}"


def test_cancel_is_recorded(manager, owner):
    name = manager.launch_async_task("tests.testapp.workers.touch_file", "/nonexistent", user=owner, countdown=30)
    manager.cancel(name, user=owner)
    assert get_recorder().flush()
    assert TaskRecord.objects.get(task_name=name).state == "cancelled"


def test_a_failing_record_write_never_breaks_the_task(celery_worker_proc, manager, owner):
    table = TaskRecord._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        name = manager.launch_async_task("tests.testapp.workers.steps", 3, user=owner, task_kwargs={"delay": 0.05})
        record = wait_for(lambda: (r := manager.get_progress(name))["state"] == "success" and r, 30, what="success")
        assert record["result"]["steps"] == 3
        logged = f"dashboard record of {name!r} failed; will retry"
        wait_for(lambda: logged in celery_worker_proc.output(), 10, what="the logged failure")
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table}_away RENAME TO {table}")
    # The writer recovers once the database does, and writes what it could not write before.
    later = manager.launch_async_task("tests.testapp.workers.steps", 1, user=owner, task_kwargs={"delay": 0})
    _record(later, "success")
    assert _record(name, "success").percent == 100.0


def _event(name, seq, state, created_at, owner=None):
    record = {"seq": seq, "task": name, "state": state, "created_at": created_at, "percent": None}
    return {"record": record, "user": {"id": owner.pk, "label": owner.username} if owner else None}


def test_an_older_event_never_overwrites_a_newer_state(owner):
    # A launcher's retried `create` can reach the database after the worker's `complete`.
    recorder, name, t0 = get_recorder(), "ooo-task", 1_764_000_000.0
    recorder._write(name, _event(name, 5, "success", t0, owner))
    recorder._write(name, _event(name, 1, "queued", t0, owner))
    row = TaskRecord.objects.get(task_name=name)
    assert (row.state, row.seq, row.owner) == ("success", 5, owner)
    # A relaunch under the same name starts its seq again, and wins; a late event of the old run does not.
    recorder._write(name, _event(name, 1, "queued", t0 + 60, owner))
    recorder._write(name, _event(name, 6, "failure", t0, owner))
    assert (TaskRecord.objects.get(task_name=name).state, TaskRecord.objects.get(task_name=name).seq) == ("queued", 1)


def test_a_deleted_owner_leaves_the_row_unlinked(django_user_model):
    gone = django_user_model.objects.create_user("gone")
    event = _event("orphan-task", 2, "running", 1_764_000_000.0, gone)
    gone.delete()  # between the launch and the write, as a user deleted while their task runs
    get_recorder()._write("orphan-task", event)
    row = TaskRecord.objects.get(task_name="orphan-task")
    assert (row.state, row.owner_id, row.owner_label) == ("running", None, "gone")
