"""The dashboard add-on records tasks from the lifecycle events of real workers."""

from __future__ import annotations

import pytest
from django.db import connection

from realtime_async.contrib.dashboard.models import TaskRecord
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
